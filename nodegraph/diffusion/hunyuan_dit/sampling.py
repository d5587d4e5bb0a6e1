"""HunyuanDiT under KSampler's UNet path: a discrete v-prediction model, sampled like an SD UNet.

HunyuanDiT is trained as a DDPM-family model (1000 steps, scaled-linear betas, v-prediction: ComfyUI's
ModelSamplingDiscrete), so nothing about its sampling differs from SD's: the diffusers schedulers and the
k-diffusion samplers of ``sampling``/``custom`` run it unchanged once the transformer answers the UNet's call
``unet(x, t, encoder_hidden_states=…)``. ``DiTAsUNet`` is that answer: the MODEL's ``scheduler_config`` carries the
betas and prediction type, and each CONDITIONING entry is packed (``pack``) into one tensor that holds, token by
token, the BERT states (``text_len`` rows), the mT5 states (``text_len_t5`` rows), their attention masks and
ComfyUI's ``image_meta_size`` (height, width, target height, target width, 0, 0; 768 unless the entry says).
The wrapper unpacks them, adds the 2-D rotary positions and style 0 (as HunyuanDiTPipeline and ComfyUI do) and
returns the first 4 of the 8 learned-sigma output channels.

``sample``/``sample_custom`` (``families.SAMPLERS``/``CUSTOM_SAMPLERS`` entries) pack the conditionings and hand a
UNet view of the MODEL to ``sampling.sample``/``guiders.sample_custom``: no sampling loop of its own.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import torch

FAMILY = "hunyuan_dit"
DEFAULT_SIZE = 768  # ComfyUI's image_meta_size when the conditioning has no width/height
_META = 6


class DiTAsUNet(torch.nn.Module):
    """Calls a ``HunyuanDiT2DModel`` with a UNet's signature: ``unet(x, t, encoder_hidden_states=packed).sample``."""

    def __init__(self, transformer: Any) -> None:
        super().__init__()
        self.transformer = transformer
        self.config = transformer.config
        self._rope: dict[tuple, Any] = {}

    @property
    def dtype(self) -> Any:
        """The transformer's dtype."""
        return self.transformer.dtype

    def forward(self, x: Any, t: Any, encoder_hidden_states: Any = None, **extra: Any) -> Any:
        """The v prediction of the packed entries ``encoder_hidden_states``; UNet-only inputs (ControlNet
        residuals, GLIGEN boxes, unCLIP labels, SDXL extras) are refused rather than ignored."""
        given = sorted(k for k, v in extra.items() if v is not None)
        if given:
            raise ValueError(f"HunyuanDiT takes no {', '.join(given)} here: ControlNet, GLIGEN, unCLIP and SDXL "
                             "conditioning nodes do not apply to it yet; remove them from the graph")
        return SimpleNamespace(sample=call(self, x, t, encoder_hidden_states))


def _rotary(wrapper: Any, h: int, w: int, device: Any) -> Any:
    """HunyuanDiTPipeline's 2-D rotary embedding for a latent of h×w cells (cached per size and device)."""
    from diffusers.models.embeddings import get_2d_rotary_pos_embed
    from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import (
        get_resize_crop_region_for_grid,
    )

    cfg = wrapper.config
    key = (h, w, str(device))
    if key not in wrapper._rope:
        p = int(cfg.patch_size)
        grid = (h // p, w // p)
        crops = get_resize_crop_region_for_grid(grid, 512 // 8 // p)
        wrapper._rope[key] = get_2d_rotary_pos_embed(int(cfg.attention_head_dim), crops, grid, device=device,
                                                     output_type="pt")
    return wrapper._rope[key]


def call(wrapper: Any, x: Any, t: Any, packed: Any) -> Any:
    """The transformer's v prediction (first ``in_channels`` output channels) for a batch of packed entries."""
    cfg = wrapper.config
    n1, n2 = int(cfg.text_len), int(cfg.text_len_t5)
    d1, d2 = int(cfg.cross_attention_dim), int(cfg.cross_attention_dim_t5)
    if packed is None or packed.dim() != 3 or packed.shape[1] != n1 + n2:
        raise ValueError("HunyuanDiT needs its own conditioning: encode the prompt with this checkpoint's CLIP "
                         "(CLIPTextEncodeHunyuanDiT or CLIPTextEncode)")
    b = x.shape[0]
    mask_col = packed.shape[-1] - _META - 1
    bert, mt5 = packed[:, :n1, :d1].contiguous(), packed[:, n1:, :d2].contiguous()
    masks = packed[:, :, mask_col] > 0.5
    meta = packed[:, 0, mask_col + 1:].float().contiguous()
    timestep = torch.as_tensor(t, device=x.device).float().reshape(-1).expand(b).to(x.dtype)
    out = wrapper.transformer(
        x, timestep, encoder_hidden_states=bert, text_embedding_mask=masks[:, :n1].long(),
        encoder_hidden_states_t5=mt5, text_embedding_mask_t5=masks[:, n1:].long(),
        image_meta_size=meta.to(x.dtype), style=torch.zeros(b, dtype=torch.long, device=x.device),
        image_rotary_emb=_rotary(wrapper, x.shape[-2], x.shape[-1], x.device), return_dict=False)[0]
    return out[:, :x.shape[1]]


def pack(conditioning: list, config: Any, what: str = "conditioning") -> list:
    """CONDITIONING entries with the BERT/mT5 states, masks and image_meta_size packed into one tensor each."""
    n1, n2 = int(config.text_len), int(config.text_len_t5)
    d1, d2 = int(config.cross_attention_dim), int(config.cross_attention_dim_t5)
    out = []
    for emb, extras in conditioning:
        mt5 = extras.get("conditioning_mt5xl")
        if mt5 is None or emb.dim() != 3 or emb.shape[-1] != d1 or mt5.shape[-1] != d2:
            raise ValueError(f"{what}: HunyuanDiT takes BERT [1, T, {d1}] and mT5 [1, T, {d2}] states; encode the "
                             "prompt with this checkpoint's CLIP (CLIPTextEncodeHunyuanDiT or CLIPTextEncode)")
        b = emb.shape[0]
        box = torch.zeros(b, n1 + n2, max(d1, d2) + 1 + _META, dtype=torch.float32)
        m1 = extras.get("attention_mask")
        m2 = extras.get("attention_mask_mt5xl")
        m1 = torch.ones(b, emb.shape[1]) if m1 is None else m1.float()
        m2 = torch.ones(b, mt5.shape[1]) if m2 is None else m2.float()
        k1, k2 = min(n1, emb.shape[1]), min(n2, mt5.shape[1])  # ComfyUI pads to 77/256; longer is cut
        box[:, :k1, :d1] = emb[:, :k1].float()
        box[:, n1:n1 + k2, :d2] = mt5[:, :k2].float()
        col = max(d1, d2)
        box[:, :k1, col] = m1[:, :k1]
        box[:, n1:n1 + k2, col] = m2[:, :k2]
        w = float(extras.get("width", DEFAULT_SIZE))
        h = float(extras.get("height", DEFAULT_SIZE))
        meta = [h, w, float(extras.get("target_height", h)), float(extras.get("target_width", w)), 0.0, 0.0]
        box[:, :, col + 1:] = torch.tensor(meta)
        kept = {k: v for k, v in extras.items()
                if k not in ("conditioning_mt5xl", "attention_mask", "attention_mask_mt5xl")}
        out.append((box, kept))
    return out


@dataclasses.dataclass(frozen=True)
class DiscreteSigmas:
    """BasicScheduler's and percent_to_sigma's view of a discrete MODEL outside the "unet" family: its training
    sigmas (``model_sampling.sigma_table`` of the scheduler config) with ComfyUI's log-sigma interpolation."""

    config: tuple = ()

    def table(self) -> Any:
        """The ascending training sigmas (float64 numpy)."""
        from ..model_sampling import sigma_table

        return sigma_table(dict(self.config))

    def timestep(self, sigma: Any) -> Any:
        """The (fractional) training timestep of ``sigma``: log-sigma interpolation, as ComfyUI's."""
        import numpy as np

        logs = np.log(self.table())
        return np.interp(np.log(np.asarray(sigma, dtype=np.float64)), logs, np.arange(len(logs), dtype=np.float64))

    def sigma(self, t: Any) -> Any:
        """The sigma at (fractional) training timestep ``t``."""
        import numpy as np

        logs = np.log(self.table())
        return np.exp(np.interp(np.asarray(t, dtype=np.float64), np.arange(len(logs), dtype=np.float64), logs))

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's ModelSamplingDiscrete.percent_to_sigma."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma((1.0 - percent) * 999.0))


def discrete_sigmas(scheduler_config: dict[str, Any]) -> DiscreteSigmas:
    """The ``DiscreteSigmas`` of a MODEL's scheduler config (its ``flow`` field)."""
    return DiscreteSigmas(tuple(sorted((k, v) for k, v in scheduler_config.items() if not isinstance(v, list))))


def unet_view(model: Any) -> Any:
    """The MODEL as KSampler's UNet path sees it: the transformer behind ``DiTAsUNet``, family "unet"."""
    return dataclasses.replace(model, unet=DiTAsUNet(model.unet), family="unet", flow=None)


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """``families.SAMPLERS`` entry: KSampler(Advanced) on HunyuanDiT through ``sampling.sample``."""
    from ..sampling import sample as unet_sample

    cfg = model.unet.config
    return unet_sample(unet_view(model), pack(positive, cfg, "positive"), pack(negative, cfg, "negative"), latent,
                       opts, devices, callback, preview_every, lora_library, samplers)


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """``families.CUSTOM_SAMPLERS`` entry: SamplerCustomAdvanced on HunyuanDiT through ``guiders.sample_custom``."""
    from ..guiders import sample_custom as unet_sample_custom

    model = model if model is not None else guider.model
    cfg = model.unet.config
    changes = {}
    for f in dataclasses.fields(guider):
        value = getattr(guider, f.name)
        if isinstance(value, list) and value and all(isinstance(e, tuple) and len(e) == 2 for e in value):
            changes[f.name] = pack(value, cfg, f.name)
    view = unet_view(model)
    if any(f.name == "model" for f in dataclasses.fields(guider)):
        changes["model"] = view
    return unet_sample_custom(dataclasses.replace(guider, **changes), sampler, sigmas, noise, latent, devices,
                              callback, model=view, lora_library=lora_library, preview_every=preview_every)


__all__ = ["DEFAULT_SIZE", "FAMILY", "DiTAsUNet", "DiscreteSigmas", "call", "discrete_sigmas", "pack", "sample", "sample_custom", "unet_view"]
