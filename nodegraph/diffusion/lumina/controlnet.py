"""Z-Image Fun ControlNet model patches (ComfyUI's ModelPatchLoader + ZImageFunControlnet) on diffusers'
``ZImageControlNetModel``.

Alibaba's Z-Image-Turbo-Fun-Controlnet-Union files (what ComfyUI reads from ``models/model_patches``) already use
diffusers' parameter names (``control_layers.N.attention.to_q`` …), so loading is: detect the kind from tensor
names, read the config from shapes, drop what the config does not use, load strictly. ComfyUI's rule places the
n control layers' hints after transformer layers ``i * round(30 / n)``; version 2 files (15 layers, 33 input
channels) also steer the two noise-refiner layers. The control image's scaled latent (Flux's ``process_in``) is
the control context; version 2 appends ComfyUI's zero mask channel and the latent of a mid-grey inpaint image.
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
    """ZImageFunControlnet on a MODEL: the controlnet (a model-manager handle), the scaled control context
    [B, C, h, w] and the hints' strength; with the control ``image`` and ``vae`` handle, a sampled size that differs
    is served as ComfyUI does: the image scaled ("area", centre crop) to it and encoded again (kept in ``sized``)."""

    controlnet: Any
    context: Any
    strength: float = 1.0
    image: Any = None
    vae: Any = None
    fmt: Any = None
    sized: dict = field(default_factory=dict, repr=False)

    def context_for(self, height: int, width: int) -> Any:
        """The control context for a latent of height × width (re-encoded from the image when it differs)."""
        if tuple(self.context.shape[-2:]) == (height, width):
            return self.context
        if self.image is None or self.vae is None:
            raise ValueError(f"ZImageFunControlnet: the control image's latent is {self.context.shape[-1]}x"
                             f"{self.context.shape[-2]} but the sampled latent is {width}x{height}; scale the "
                             "control image to the output size (ImageScale) first")
        if (height, width) not in self.sized:
            self.sized[(height, width)] = _encode_at(self, height, width)
        return self.sized[(height, width)]


def _encode_at(control: ZImageFunControl, height: int, width: int) -> Any:
    import torch

    from ...imaging import resample

    vae = control.vae.get()
    down = int(vae.downscale)
    module = vae.vae
    param = next(module.parameters())

    def encode(pixels: Any) -> Any:
        with torch.no_grad():
            x = pixels.movedim(-1, 1).to(param.device, param.dtype) * 2.0 - 1.0
            return module.encode(x).latent_dist.mean.float().cpu()

    pixels = resample(control.image.movedim(-1, 1).float(), width * down, height * down, "area", "center")
    latent = encode(pixels.movedim(1, -1))
    channels = int(control.context.shape[1])
    grey = encode(torch.full_like(pixels[:1].movedim(1, -1), 0.5)) if channels > latent.shape[1] else None
    return control_context(latent, control.fmt, channels, grey)


def control_context(latent: Any, fmt: Any, channels: int, grey: Any = None) -> Any:
    """The controlnet's input: the control image's scaled latent, for v2 files followed by ComfyUI's zero mask
    channel and the scaled latent of a mid-grey inpaint image (``grey``, unscaled)."""
    import torch

    scaled = (latent.float() - fmt.shift_factor) * fmt.scaling_factor
    if channels == scaled.shape[1]:
        return scaled
    if grey is None or channels != 2 * scaled.shape[1] + 1:
        raise ValueError(f"ZImageFunControlnet: the patch takes {channels} input channels; nodegraph builds "
                         f"{scaled.shape[1]} (v1) or {2 * scaled.shape[1] + 1} (v2) from a Flux-VAE latent")
    grey = (grey.float() - fmt.shift_factor) * fmt.scaling_factor
    return torch.cat([scaled, torch.zeros_like(scaled[:, :1]), grey.expand_as(scaled)], dim=1)


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
