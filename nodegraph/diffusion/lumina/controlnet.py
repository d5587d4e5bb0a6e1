"""Z-Image Fun ControlNet model patches (ComfyUI's ModelPatchLoader + ZImageFunControlnet) on diffusers'
``ZImageControlNetModel``.

Alibaba's Z-Image-Turbo-Fun-Controlnet-Union files (what ComfyUI reads from ``models/model_patches``) already use
diffusers' parameter names (``control_layers.N.attention.to_q`` …), so loading is: detect the kind from tensor
names, read the config from shapes, drop what the config does not use, load strictly. ComfyUI's rule places the
n control layers' hints after transformer layers ``i * round(30 / n)``; version 2 files (15 layers, 33 input
channels) also steer the controlnet's two noise-refiner layers. The control image's scaled latent (Flux's
``process_in``) is the control context; version 2 appends ComfyUI's mask channel and inpaint-image latent.

The hints are computed as diffusers' ``ZImageControlNetModel`` does (the numerics oracle): its control stream
attends over image and caption tokens, and v2's refiner hints steer only the controlnet's copy of the refined image
tokens. ComfyUI v0.8.0's ZImageControlPatch differs there (image tokens only; refiner hints added to the main
transformer), so images from ComfyUI and from here differ slightly for the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..patches import ModelPatch

#: ComfyUI places the hints as if the transformer had Z-Image's 30 layers.
COMFY_LAYERS = 30
Z_IMAGE_FUN = "control_all_x_embedder.2-1.weight"
OTHER_KINDS = {"controlnet_blocks.0.y_rms.weight": "a Qwen-Image DiffSynth ControlNet (QwenImageDiffsynthControlnet)",
               "feature_embedder.mid_layer_norm.bias": "a USO style projector (USOStyleReference)"}


def patch_kind(keys: Any, name: str = "the file") -> str:
    """``"z_image_fun"`` for a Z-Image Fun ControlNet file; a clear error for the kinds not supported here."""
    keys = set(keys)
    if Z_IMAGE_FUN in keys:
        return "z_image_fun"
    for key, what in OTHER_KINDS.items():
        if key in keys:
            raise ValueError(f"ModelPatchLoader: {name} is {what}, which nodegraph does not run yet; only Z-Image "
                             "Fun ControlNet patches (ZImageFunControlnet) load here")
    raise ValueError(f"ModelPatchLoader: {name} is not a model patch nodegraph knows (no {Z_IMAGE_FUN!r} tensor); "
                     "put Z-Image Fun ControlNet .safetensors files in models/model_patches")


def controlnet_config(shapes: dict[str, tuple[int, ...]], state: dict[str, Any] | None = None) -> dict[str, Any]:
    """``ZImageControlNetModel``'s config read from a file's tensor shapes (and, for v2, its refiner weights)."""
    embed = shapes[Z_IMAGE_FUN]
    dim = int(embed[0])
    n = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("control_layers."))
    head_dim = int(shapes["control_layers.0.attention.norm_q.weight"][0])
    div = round(COMFY_LAYERS / n)
    config: dict[str, Any] = {"control_layers_places": [i * div for i in range(n)],
                              "control_in_dim": int(embed[1]) // 4, "dim": dim, "n_heads": dim // head_dim,
                              "n_kv_heads": dim // head_dim, "n_refiner_layers": 2, "add_control_noise_refiner": None}
    if any(k.startswith("control_noise_refiner.") and k.endswith("after_proj.weight") for k in shapes):
        weight = (state or {}).get("control_noise_refiner.0.after_proj.weight")
        broken = weight is not None and int((weight != 0).sum()) == 0  # ComfyUI's "broken" v2.0 file
        config.update(add_control_noise_refiner="control_layers" if broken else "control_noise_refiner",
                      control_refiner_layers_places=[0, 1])
    return config


def load_model_patch(path: Any, allow_pickle: bool = False, name: str = "the file") -> Any:
    """A model patch file (safetensors only) → a ``ZImageControlNetModel`` with its weights, in float32."""
    import torch
    from diffusers import ZImageControlNetModel
    from safetensors.torch import load_file

    if not str(path).endswith(".safetensors"):
        raise ValueError(f"ModelPatchLoader: {name} is not a .safetensors file; model patches load from "
                         "safetensors only (convert it with safetensors' tools)")
    state = load_file(str(path))
    patch_kind(state, name)
    config = controlnet_config({k: tuple(v.shape) for k, v in state.items()}, state)
    with torch.device("meta"):
        model = ZImageControlNetModel(**config)
    wanted = set(model.state_dict())
    state = {k: v.float() for k, v in state.items() if k in wanted}  # e.g. v2.0's unused control_noise_refiner.*
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"ModelPatchLoader: {name} lacks {len(missing)} Z-Image Fun ControlNet tensors "
                         f"(e.g. {min(missing)}); the file is incomplete or of another kind")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@dataclass(frozen=True, eq=False)
class ZImageFunControl(ModelPatch):
    """ZImageFunControlnet on a MODEL: the controlnet (a model-manager handle), the hints' strength, and what makes
    the control context: the control ``image``, ``inpaint_image``, ``mask`` (1 = keep, ComfyUI's flipped mask), the
    ``vae`` handle and latent format. ``context`` is the one encoded at the images' size (None when they differ);
    another sampled size is served as ComfyUI does: the images scaled ("area", centre crop) to it and encoded again
    (kept in ``sized``)."""

    controlnet: Any
    context: Any
    strength: float = 1.0
    image: Any = None
    vae: Any = None
    fmt: Any = None
    inpaint_image: Any = None
    mask: Any = None
    channels: int = 16
    sized: dict = field(default_factory=dict, repr=False)

    def context_for(self, height: int, width: int) -> Any:
        """The control context for a latent of height × width (re-encoded from the images when it differs)."""
        if self.context is not None and tuple(self.context.shape[-2:]) == (height, width):
            return self.context
        if self.vae is None:
            raise ValueError(f"ZImageFunControlnet: the control latent is not {width}x{height}; scale the control "
                             "image to the output size (ImageScale) first")
        if (height, width) not in self.sized:
            vae = self.vae.get()
            down = int(vae.downscale)
            self.sized[(height, width)] = control_context(
                _vae_encoder(vae.vae), self.fmt, self.channels, self.image, self.inpaint_image, self.mask,
                (height * down, width * down))
        return self.sized[(height, width)]


def _vae_encoder(module: Any) -> Any:
    def encode(pixels: Any) -> Any:
        import torch

        param = next(module.parameters())
        with torch.no_grad():
            x = pixels.movedim(-1, 1).to(param.device, param.dtype) * 2.0 - 1.0
            return module.encode(x).latent_dist.mean.float().cpu()

    return encode


def _fit(pixels: Any, size: Any, method: str = "area") -> Any:
    """IMAGE [B, H, W, C] scaled to ``size`` (H, W) pixels as ComfyUI's common_upscale (centre crop); None stays."""
    from ...imaging import resample

    if pixels is None or size is None:
        return pixels
    return resample(pixels.movedim(-1, 1).float(), size[1], size[0], method, "center").movedim(1, -1)


def control_context(encode: Any, fmt: Any, channels: int, image: Any = None, inpaint_image: Any = None,
                    mask: Any = None, size: Any = None) -> Any:
    """The controlnet's input [B, channels, h, w] (ComfyUI's ZImageControlPatch): the control image's scaled
    latent; for inpainting (v2, 2·16+1 channels) followed by the mask channel (0 without a mask) and the scaled
    latent of the inpaint image (mid-grey when absent, greyed where ``mask`` is 0). ``encode(IMAGE)`` gives
    unscaled latents; ``size`` (H, W) scales the images first."""
    import torch
    import torch.nn.functional as F

    def scaled(pixels: Any) -> Any:
        return (encode(pixels).float() - fmt.shift_factor) * fmt.scaling_factor

    image, inpaint = _fit(image, size), _fit(inpaint_image, size)
    latent = None if image is None else scaled(image)
    if latent is not None and channels == latent.shape[1]:
        return latent
    if latent is None and inpaint is None:
        raise ValueError("ZImageFunControlnet: connect a control image (image) or an inpaint_image")
    if inpaint is None:
        inpaint = torch.full_like(image, 0.5)
    if mask is not None:
        keep = mask.float().reshape(mask.shape[0], -1, *mask.shape[-2:]).mean(dim=1, keepdim=True)
        inpaint = (inpaint - 0.5) * _fit(keep.movedim(1, -1), inpaint.shape[1:3], "bilinear").round() + 0.5
    inpaint_latent = scaled(inpaint)
    if latent is None:
        latent = scaled(torch.full_like(inpaint, 0.5))
    c = latent.shape[1]
    if channels != 2 * c + 1:
        raise ValueError(f"ZImageFunControlnet: the patch takes {channels} input channels; nodegraph builds {c} "
                         f"(v1) or {2 * c + 1} (v2) from this VAE's latent")
    if mask is None:
        mask_ = torch.zeros_like(inpaint_latent[:, :1])
    else:
        mask_ = _fit(keep.movedim(1, -1), inpaint_latent.shape[-2:], "nearest").movedim(-1, 1)
    b = max(latent.shape[0], mask_.shape[0], inpaint_latent.shape[0])
    h, w = inpaint_latent.shape[-2:]
    if latent.shape[-2:] != (h, w):  # the control and inpaint images differ in size: ComfyUI fails; we fit
        latent = F.interpolate(latent, size=(h, w), mode="area")
    return torch.cat([t.expand(b, -1, -1, -1) if t.shape[0] == 1 else t for t in (latent, mask_, inpaint_latent)],
                     dim=1)


def control_samples(control: ZImageFunControl, module: Any, transformer: Any, latents: list, t: Any,
                    states: list, height: int, width: int) -> dict[int, Any]:
    """The controlnet's hints for one transformer call (diffusers' ``controlnet_block_samples``)."""
    ctx = control.context_for(height, width)
    if module.t_embedder is not transformer.t_embedder:
        type(module).from_transformer(module, transformer)
    param = next(module.control_layers.parameters())
    contexts = [ctx[min(i, ctx.shape[0] - 1)].to(param.device, latents[0].dtype).unsqueeze(1)
                for i in range(len(latents))]
    return module(latents, t, states, contexts, conditioning_scale=float(control.strength))


__all__ = ["ZImageFunControl", "control_context", "control_samples", "controlnet_config", "load_model_patch",
           "patch_kind"]
