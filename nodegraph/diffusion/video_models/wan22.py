"""Wan 2.2 TI2V-5B sampling rules: per-token timesteps and the start frame kept by the latent's noise mask.

ComfyUI's ``WAN22`` model and diffusers' ``WanPipeline(expand_timesteps=True)`` /
``WanImageToVideoPipeline(expand_timesteps=True)`` agree on them:
- the transformer takes one timestep per token: each latent frame's ``sigma · 1000`` times the mean of its denoise
  mask (1 = generate, 0 = keep), so the start frame that ``Wan22ImageToVideoLatent`` encodes is seen at timestep 0;
- the kept frames are given to the model clean at every step and come out unchanged (ComfyUI's
  ``scale_latent_inpaint`` of ``WAN22`` returns the latent itself; the pipeline mixes ``condition`` back in).
Other Wan models take one timestep per video and refuse a noise mask (see ``wan_sampling``).
"""

from __future__ import annotations

from typing import Any

#: The Wan variant sampled with these rules (``wan_files.variant``).
ARCH = "wan2.2-ti2v-5b"


def expands_timesteps(model: Any) -> bool:
    """Whether ``model`` takes per-token timesteps and a latent noise mask (Wan 2.2 TI2V-5B)."""
    return getattr(model, "arch", None) == ARCH


def denoise_mask(model: Any, latent: dict[str, Any], samples: Any) -> Any:
    """The latent's noise mask as ``[B, 1, T, h, w]`` float32 in 0..1 (1 = generate), or None without one."""
    import torch
    import torch.nn.functional as F

    mask = latent.get("noise_mask")
    if mask is None:
        return None
    if not expands_timesteps(model):
        raise ValueError(f"a noise mask on a video latent is not supported for {model.arch} yet; remove "
                         "SetLatentNoiseMask (Wan 2.2 TI2V-5B takes the mask of Wan22ImageToVideoLatent)")
    b, _, t, h, w = samples.shape
    mask = mask.float()
    if mask.dim() == 5:
        if tuple(mask.shape[2:]) != (t, h, w):
            raise ValueError(f"the latent's noise mask is {tuple(mask.shape)} but the latent is "
                             f"{tuple(samples.shape)}; make both with the same Wan22ImageToVideoLatent")
        mask = mask.mean(dim=1, keepdim=True)
    else:  # an image mask [B, H, W] or [B, 1, H, W]: the same on every frame
        flat = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        mask = F.interpolate(flat, size=(h, w), mode="bilinear").unsqueeze(2).expand(-1, -1, t, -1, -1)
    if mask.shape[0] != b:
        mask = mask.repeat((b + mask.shape[0] - 1) // mask.shape[0], 1, 1, 1, 1)[:b]
    return torch.as_tensor(mask).clamp(0.0, 1.0).contiguous()


def token_timesteps(timestep: float, x: Any, mask: Any, patch: tuple[int, int, int]) -> Any:
    """Timesteps ``[B, tokens]``: each latent frame's ``timestep`` times its mean denoise mask (1 without a mask)."""
    import torch

    b, _, t, h, w = x.shape
    pt, ph, pw = patch
    if mask is None:
        frames = torch.ones(b, t // pt, device=x.device, dtype=torch.float32)
    else:
        frames = mask.to(x.device, torch.float32).mean(dim=(1, 3, 4))[:, ::pt]
    per_frame = (h // ph) * (w // pw)
    return (frames * float(timestep)).repeat_interleave(per_frame, dim=1)


def keep_frames(x: Any, clean: Any, mask: Any) -> Any:
    """``x`` where the mask generates, ``clean`` where it keeps (no-op without a mask)."""
    if mask is None:
        return x
    m = mask.to(x.device, x.dtype)
    return x * m + clean.to(x.device, x.dtype) * (1.0 - m)


__all__ = ["ARCH", "denoise_mask", "expands_timesteps", "keep_frames", "token_timesteps"]
