"""CLIP vision encoders (ComfyUI's ``clip_vision`` files) on transformers' ``CLIPVisionModelWithProjection``.

Layouts read (each file as a state dict, safetensors only unless pickles are allowed):

- ComfyUI / transformers names: ``vision_model.*`` + ``visual_projection.weight`` (a whole ``CLIPModel`` file too:
  its text half is ignored);
- the original OpenCLIP names: ``visual.*`` (``conv1``, ``transformer.resblocks.N.attn.in_proj_weight``, ``proj``),
  also under a prefix, as in SD2.1-unCLIP checkpoints (``embedder.model.visual.``);
- SigLIP vision towers (ComfyUI's ``sigclip_vision_patch14_384``: ``vision_model.*`` without a class token), built as
  transformers' ``SiglipVisionModel`` without the pooling head; as in ComfyUI their image_embeds are the
  post-normalised hidden states and their images are normalised with mean/std 0.5.

The architecture follows from width and depth: ViT-L/14, ViT-H/14 and ViT-bigG/14 use the shipped configs
(``configs/clip_vision``); other sizes get one derived from the shapes (heads = width / 64, ``gelu``).
Encoding preprocesses as ComfyUI's ``clip_preprocess`` (bicubic antialiased resize of the short side, centre crop or
a plain resize, rounding to 8 bits, CLIP's mean/std) and returns what ComfyUI's CLIP_VISION_OUTPUT holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detect import CONFIGS_DIR, UnknownModelError

CONFIG_DIR = CONFIGS_DIR / "clip_vision"
#: (width, depth) → shipped config.
KNOWN = {(1024, 24): "vit-l-14.json", (1280, 32): "vit-h-14.json", (1664, 48): "vit-bigg-14.json"}
SIGLIP_KNOWN = {(1152, 27): "siglip-so400m-14-384.json"}
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
#: CLIP's image normalisation (OpenAI's statistics; ComfyUI uses them for every CLIP vision model).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
#: Prefixes under which a file may hold an OpenCLIP visual tower (a bare file, an unCLIP checkpoint's embedder).
OPEN_CLIP_PREFIXES = ("visual.", "embedder.model.visual.")
_TOWER = "vision_model."
_RES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj"}
_FIXED = {"class_embedding": "embeddings.class_embedding", "conv1.weight": "embeddings.patch_embedding.weight",
          "positional_embedding": "embeddings.position_embedding.weight", "ln_pre.weight": "pre_layrnorm.weight",
          "ln_pre.bias": "pre_layrnorm.bias", "ln_post.weight": "post_layernorm.weight",
          "ln_post.bias": "post_layernorm.bias"}


@dataclass(frozen=True, eq=False)
class ClipVision:
    """CLIP_VISION: an image encoder with projection, and the square size its images are resized to."""

    model: Any  # transformers CLIPVisionModelWithProjection (or SiglipVisionModel)
    image_size: int
    source: str = ""
    kind: str = "custom"  # the shipped config's name (vit-l-14, vit-h-14, vit-bigg-14, siglip-…) or "custom"
    family: str = "clip"  # "clip" | "siglip"

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The image normalisation of this family (ComfyUI's)."""
        return (SIGLIP_MEAN, SIGLIP_STD) if self.family == "siglip" else (MEAN, STD)

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return sum(int(t.element_size() * t.numel()) for t in (*self.model.parameters(), *self.model.buffers()))


@dataclass(frozen=True)
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT (ComfyUI's fields): float32 CPU tensors for a batch of images."""

    last_hidden_state: Any  # [B, tokens, width] the last layer's output (before the post layer norm)
    image_embeds: Any  # [B, projection] the projected pooled output
    penultimate_hidden_states: Any  # [B, tokens, width] the output of the layer before the last

    def __getitem__(self, key: str) -> Any:
        """``output["image_embeds"]`` as in ComfyUI."""
        return getattr(self, key)


def open_clip_prefix(keys: Any) -> str | None:
    """The prefix of an OpenCLIP visual tower among ``keys`` (``visual.``, …), or None."""
    keys = set(keys)
    for prefix in OPEN_CLIP_PREFIXES:
        if f"{prefix}transformer.resblocks.0.attn.in_proj_weight" in keys:
            return prefix
    return None


def from_open_clip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """transformers names for an OpenCLIP visual tower under ``prefix`` (attention in-projections split in q/k/v)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest in _FIXED:
            out[_TOWER + _FIXED[rest]] = value
        elif rest == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif rest.startswith("transformer.resblocks."):
            index, tail = rest[len("transformer.resblocks."):].split(".", 1)
            layer = f"{_TOWER}encoder.layers.{index}."
            if tail.startswith("attn.in_proj_"):
                kind = tail.rsplit("_", 1)[1]  # weight | bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{layer}self_attn.{name}.{kind}"] = part.contiguous()
                continue
            module, param = tail.rsplit(".", 1)
            if module not in _RES:
                raise UnknownModelError(f"unexpected OpenCLIP vision tensor {key!r}; the file is not a CLIP vision "
                                        "model this engine knows")
            out[f"{layer}{_RES[module]}.{param}"] = value
    return out


def vision_state(state: dict[str, Any], name: str = "file") -> dict[str, Any]:
    """The transformers-named vision tensors of a state dict in any supported layout; raises UnknownModelError."""
    prefix = open_clip_prefix(state)
    if prefix is not None:
        return from_open_clip(state, prefix)
    out = {k: v for k, v in state.items() if k.startswith(_TOWER) or k == "visual_projection.weight"}
    if f"{_TOWER}embeddings.patch_embedding.weight" not in out:
        heads = sorted({k.split(".", 1)[0] for k in state})[:6]
        raise UnknownModelError(f"{name} is not a CLIP vision model: no vision_model.* or visual.* tensors (found "
                                f"{heads}); put CLIP vision files (clip_vision_g, CLIP-ViT-H-14, …) in "
                                "models/clip_vision")
    return out


def _depth(state: dict[str, Any]) -> int:
    layers = {int(k.split(".")[3]) for k in state if k.startswith(f"{_TOWER}encoder.layers.")}
    return max(layers) + 1 if layers else 0


def _sized(config: dict[str, Any], grid: int) -> dict[str, Any]:
    """A shipped config at the resolution of a ``grid``×``grid`` position table (384 px SigLIP: 27 patches of 14)."""
    if config["image_size"] // config["patch_size"] == grid:
        return config
    return dict(config, image_size=grid * config["patch_size"])


def is_siglip(state: dict[str, Any]) -> bool:
    """Whether transformers-named vision tensors are a SigLIP tower (no class token, a patch-embedding bias)."""
    return f"{_TOWER}embeddings.class_embedding" not in state and \
        f"{_TOWER}embeddings.patch_embedding.bias" in state


def _siglip_config(state: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    patch = state[f"{_TOWER}embeddings.patch_embedding.weight"]
    width, depth = int(patch.shape[0]), _depth(state)
    positions = int(state[f"{_TOWER}embeddings.position_embedding.weight"].shape[0])
    grid = round(positions ** 0.5)
    if grid * grid != positions:
        raise UnknownModelError(f"{name}: {positions} position embeddings is not a square grid; not a SigLIP tower")
    shipped = SIGLIP_KNOWN.get((width, depth))
    if shipped is not None:
        config = json.loads((CONFIG_DIR / shipped).read_text(encoding="utf-8"))
        return _sized(config, grid), shipped.removesuffix(".json")
    return {"model_type": "siglip_vision_model", "hidden_size": width, "num_hidden_layers": depth,
            "intermediate_size": int(state[f"{_TOWER}encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "num_attention_heads": max(1, width // 64), "patch_size": int(patch.shape[-1]),
            "image_size": grid * int(patch.shape[-1]), "num_channels": int(patch.shape[1]),
            "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "vision_use_head": False}, "custom"


def config_for(state: dict[str, Any], name: str = "file") -> tuple[dict[str, Any], str]:
    """(CLIPVisionConfig or SiglipVisionConfig dict, kind) for transformers-named vision tensors: a shipped config
    when width and depth match one (the image size read from the position table), else one derived from shapes."""
    if is_siglip(state):
        return _siglip_config(state, name)
    patch = state[f"{_TOWER}embeddings.patch_embedding.weight"]
    width, depth = int(patch.shape[0]), _depth(state)
    if "visual_projection.weight" not in state:
        raise UnknownModelError(f"{name}: its CLIP vision model has no projection (visual_projection / proj); "
                                "image embeddings need it — use the file with projection")
    projection = int(state["visual_projection.weight"].shape[0])
    positions = int(state[f"{_TOWER}embeddings.position_embedding.weight"].shape[0])
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise UnknownModelError(f"{name}: {positions} position embeddings is not a square grid plus one; not a "
                                "CLIP ViT")
    shipped = KNOWN.get((width, depth))
    if shipped is not None:
        config = json.loads((CONFIG_DIR / shipped).read_text(encoding="utf-8"))
        if config["projection_dim"] == projection and config["patch_size"] == int(patch.shape[-1]):
            return _sized(config, grid), shipped.removesuffix(".json")
    config = {"model_type": "clip_vision_model", "hidden_size": width, "num_hidden_layers": depth,
              "intermediate_size": int(state[f"{_TOWER}encoder.layers.0.mlp.fc1.weight"].shape[0]),
              "num_attention_heads": max(1, width // 64), "patch_size": int(patch.shape[-1]),
              "image_size": grid * int(patch.shape[-1]), "num_channels": int(patch.shape[1]),
              "projection_dim": projection, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
    return config, "custom"


def build(state: dict[str, Any], name: str = "file", dtype: Any = None) -> ClipVision:
    """A ClipVision from a state dict in any supported layout (weights placed without a random init)."""
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from .single_file import materialise

    tensors = vision_state(state, name)
    config, kind = config_for(tensors, name)
    settings = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    if config["model_type"] == "siglip_vision_model":
        cfg: Any = SiglipVisionConfig(**settings)
        factory: Any = SiglipVisionModel
        with _empty():
            keys = set(SiglipVisionModel(cfg).state_dict())
        flat = not any(k.startswith(_TOWER) for k in keys)  # transformers 5 drops the vision_model. prefix
        renamed = {(k.removeprefix(_TOWER) if flat else k): v for k, v in tensors.items()}
        tensors = {k: v for k, v in renamed.items() if k in keys}  # the pooling head (unused) is left out
        family = "siglip"
    else:
        cfg = CLIPVisionConfig(**settings)
        factory = CLIPVisionModelWithProjection
        family = "clip"
    model = materialise(lambda c: factory(c), cfg, tensors, dtype, f"{name}: its CLIP vision")
    return ClipVision(model=model, image_size=int(cfg.image_size), source=name, kind=kind, family=family)


def _empty() -> Any:
    from accelerate import init_empty_weights

    return init_empty_weights()


def load_clip_vision(path: Path, allow_pickle: bool = False, name: str | None = None) -> ClipVision:
    """Load a CLIP vision file (models/clip_vision) or a diffusers/transformers folder with config.json."""
    from .loading import load_state_dict, quiet_libraries

    path = Path(path)
    name = name or path.name
    with quiet_libraries():
        if path.is_dir():
            from transformers import CLIPVisionModelWithProjection

            safe = {} if allow_pickle else {"use_safetensors": True}
            model = CLIPVisionModelWithProjection.from_pretrained(str(path), **safe).eval()
            return ClipVision(model=model, image_size=int(model.config.image_size), source=name, kind="folder")
        return build(load_state_dict(path, allow_pickle), name)


def preprocess(image: Any, size: int, crop: bool = True, mean: tuple[float, ...] = MEAN,
               std: tuple[float, ...] = STD) -> Any:
    """ComfyUI's ``clip_preprocess``: IMAGE [B, H, W, C] → normalised pixels [B, 3, size, size] (float32)."""
    import torch
    import torch.nn.functional as F

    image = image[..., :3].float().movedim(-1, 1)
    if image.shape[2] != size or image.shape[3] != size:
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            target = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            target = (size, size)
        image = F.interpolate(image, size=target, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top:top + size, left:left + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    return (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def encode(vision: ClipVision, image: Any, device: Any = None, dtype: Any = None, crop: bool = True) \
        -> ClipVisionOutput:
    """CLIP_VISION_OUTPUT of an IMAGE batch (the model must already be on ``device``)."""
    import torch

    if image.dim() != 4 or image.shape[-1] < 3:
        raise ValueError(f"image must be an IMAGE [B, H, W, 3], got shape {tuple(image.shape)}; connect a LoadImage "
                         "or VAEDecode output")
    pixels = preprocess(image, vision.image_size, crop, *vision.mean_std)
    model = vision.model
    dtype = dtype or next(model.parameters()).dtype
    with torch.no_grad():
        out = model(pixel_values=pixels.to(device or pixels.device, dtype), output_hidden_states=True)
    last = out.last_hidden_state.float().cpu()
    embeds = last if vision.family == "siglip" else out.image_embeds.float().cpu()  # SigLIP: no projection
    return ClipVisionOutput(last_hidden_state=last, image_embeds=embeds,
                            penultimate_hidden_states=out.hidden_states[-2].float().cpu())


__all__ = ["ClipVision", "ClipVisionOutput", "build", "config_for", "encode", "from_open_clip", "load_clip_vision",
           "open_clip_prefix", "preprocess", "vision_state"]
