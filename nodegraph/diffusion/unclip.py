"""unCLIP (SD2.1-unCLIP): image embeddings with noise augmentation as the UNet's ``class_labels``.

``unCLIPConditioning`` records ``{"clip_vision_output", "strength", "noise_augmentation"}`` in an entry's
``unclip_conditioning`` extra (a list, as ComfyUI). While sampling, ``class_labels`` turns them into the vector the
UNet's class embedding (``class_embed_type="projection"``) takes, as ComfyUI's ``unclip_adm`` and diffusers'
``StableUnCLIPImg2ImgPipeline.noise_image_embeddings`` do:

- each image embedding e (one per image of each output) is noised at level ``round(999 * noise_augmentation)``
  with the squared-cosine DDPM schedule (normalised by the noise augmentor's statistics, which are mean 0 / std 1
  in the released checkpoints: they are not stored in the files), then ``cat(noised e, timestep embedding of the
  level) * strength``;
- several embeddings are summed and that sum is noised again at level ``round(999 * 0.05)`` (ComfyUI's merge);
- an entry without image embeddings (the negative prompt, a plain text prompt) gets zeros.

The augmentation noise comes from a CPU generator seeded with ``NOISE_SEED``: ComfyUI seeds it with the sampler's
seed − 10, which the conditioning entries do not see here; it only matters for noise_augmentation > 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detect import UnknownModelError

NOISE_SEED = 0
MERGE_AUGMENTATION = 0.05
MAX_NOISE_LEVEL = 1000


def _alphas_cumprod() -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=MAX_NOISE_LEVEL, beta_schedule="squaredcos_cap_v2").alphas_cumprod


def noise_level(augmentation: float) -> int:
    """The noise level (0..999) of a noise_augmentation in 0..1, as ComfyUI rounds it."""
    return round((MAX_NOISE_LEVEL - 1) * float(augmentation))


def augment(embeds: Any, level: int, noise: Any = None) -> Any:
    """``cat(embeds noised at level, timestep embedding of level)`` for embeds [N, D] (float32, CPU)."""
    import torch
    from diffusers.models.embeddings import get_timestep_embedding

    embeds = embeds.float().reshape(-1, embeds.shape[-1])
    if noise is None:
        noise = torch.randn(embeds.shape, generator=torch.Generator("cpu").manual_seed(NOISE_SEED))
    a = _alphas_cumprod()[level].float()
    noised = a.sqrt() * embeds + (1.0 - a).sqrt() * noise
    steps = torch.tensor([level] * embeds.shape[0])
    emb = get_timestep_embedding(steps, embeds.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat((noised, emb.float()), dim=1)


def image_vector(unclip: list[dict[str, Any]]) -> Any:
    """The [1, 2D] class-label vector of an entry's ``unclip_conditioning`` list (ComfyUI's ``unclip_adm``)."""
    import torch

    parts, count = [], 0
    for item in unclip:
        embeds = item["clip_vision_output"].image_embeds
        for row in embeds.reshape(-1, embeds.shape[-1]):
            parts.append(augment(row[None], noise_level(item.get("noise_augmentation", 0.0)))
                         * float(item.get("strength", 1.0)))
            count += 1
    if count == 1:
        return parts[0]
    total = torch.stack(parts).sum(0)
    width = total.shape[1] // 2
    return augment(total[:, :width], noise_level(MERGE_AUGMENTATION))


def class_labels(model: Any, extras: dict[str, Any], batch: int, device: Any, dtype: Any, what: str = "") -> Any:
    """The UNet's ``class_labels`` [batch, dim] for one conditioning entry, or None for UNets without an image input."""
    import torch

    config = model.unet.config
    if getattr(config, "class_embed_type", None) != "projection":
        return None
    width = int(config.projection_class_embeddings_input_dim)
    unclip = extras.get("unclip_conditioning") or []
    if not unclip:
        return torch.zeros(batch, width, device=device, dtype=dtype)
    vector = image_vector(unclip)
    if vector.shape[1] != width:
        raise ValueError(f"{what}: unCLIPConditioning got {vector.shape[1] // 2}-wide image embeddings but this unCLIP "
                         f"model takes {width // 2}; encode the image with the CLIP vision model of the same "
                         "checkpoint (unCLIPCheckpointLoader's CLIP_VISION output)")
    return vector.expand(batch, -1).to(device, dtype)


def is_unclip(model: Any) -> bool:
    """Whether a MODEL's UNet takes an image embedding (an unCLIP model)."""
    return getattr(model.unet.config, "class_embed_type", None) == "projection"


@dataclass(frozen=True, eq=False)
class UnclipCheckpoint:
    """What unCLIPCheckpointLoader reads: MODEL, CLIP, VAE and the checkpoint's CLIP vision encoder."""

    model: Any
    clip: Any
    vae: Any
    clip_vision: Any

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return sum(int(getattr(p, "nbytes", 0)) for p in (self.model, self.clip, self.vae, self.clip_vision))


def _embedder_tensors(path: Path, allow_pickle: bool) -> dict[str, Any]:
    from .loading import load_state_dict
    from .vision import OPEN_CLIP_PREFIXES

    if path.suffix.lower() != ".safetensors":
        return load_state_dict(path, allow_pickle)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = [k for k in f.keys() if k.startswith(OPEN_CLIP_PREFIXES)]  # noqa: SIM118 - not a dict
        return {k: f.get_tensor(k) for k in keys}


def load_unclip_checkpoint(path: Path, config: Any = None, *, name: str | None = None,
                           dtype: Any = None) -> UnclipCheckpoint:
    """Load an unCLIP checkpoint (single file with an ``embedder.model.visual`` tower, or a diffusers
    StableUnCLIP folder with ``image_encoder/``): MODEL, CLIP, VAE and CLIP_VISION."""
    from .loading import load_checkpoint
    from .vision import build, load_clip_vision

    path = Path(path)
    name = name or path.name
    allow = bool(config is not None and config.allow_unsafe_pickle)
    ckpt = load_checkpoint(path, config, name=name, dtype=dtype)
    if not is_unclip(ckpt.model):
        raise UnknownModelError(f"{name} is not an unCLIP checkpoint (its UNet takes no image embedding); load it "
                                "with CheckpointLoaderSimple, and use an SD2.1-unCLIP checkpoint here")
    if path.is_dir():
        encoder = path / "image_encoder"
        if not (encoder / "config.json").exists():
            raise UnknownModelError(f"{name}: the diffusers folder has no image_encoder/ (the CLIP vision model of "
                                    "an unCLIP pipeline)")
        vision = load_clip_vision(encoder, allow, name=name)
    else:
        tensors = _embedder_tensors(path, allow)
        if not tensors:
            raise UnknownModelError(f"{name} has an unCLIP UNet but no CLIP vision tower (embedder.model.visual.*); "
                                    "load it with CheckpointLoaderSimple and the vision model with CLIPVisionLoader")
        vision = build(tensors, name)
    return UnclipCheckpoint(model=ckpt.model, clip=ckpt.clip, vae=ckpt.vae, clip_vision=vision)


def parts(handle: Any) -> tuple[Any, Any, Any, Any]:
    """(MODEL, CLIP, VAE, CLIP_VISION) handles onto one loaded ``UnclipCheckpoint`` handle."""
    return tuple(dataclasses.replace(handle, part=p) for p in ("model", "clip", "vae", "clip_vision"))  # type: ignore


__all__ = [
    "UnclipCheckpoint",
    "augment",
    "class_labels",
    "image_vector",
    "is_unclip",
    "load_unclip_checkpoint",
    "noise_level",
    "parts",
]
