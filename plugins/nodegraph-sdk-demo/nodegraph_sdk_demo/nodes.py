"""The demo's nodes: a model loader and a ControlNet-style hint node."""

from __future__ import annotations

from typing import Any

from nodegraph import api

#: The extras key the hint travels under in each CONDITIONING entry (read by ``sampler.hinted_euler``).
HINT_KEY = "region_hint"
SAME_VAE = "(checkpoint's own)"


def _vae_choices(config: Any) -> list[str]:
    return [SAME_VAE, *api.vae_names(config)]


class CheckpointWithVAE(api.Node):
    """Load a checkpoint, and optionally replace its VAE with a separate VAE file."""

    DISPLAY_NAME = "Load Checkpoint (with VAE)"
    CATEGORY = "sdk demo/loaders"
    INPUTS = {
        "ckpt_name": api.Combo(api.checkpoint_names, tooltip="a checkpoint in models/checkpoints"),
        "vae_name": api.Combo(_vae_choices, tooltip="a VAE in models/vae, or the checkpoint's own"),
    }
    OUTPUTS = (api.Output("MODEL"), api.Output("CLIP"), api.Output("VAE"))

    @classmethod
    def _paths(cls, config: Any, constants: dict[str, Any]) -> list[Any]:
        paths = [api.model_path(config, "checkpoints", str(constants.get("ckpt_name")))]
        if constants.get("vae_name") not in (None, SAME_VAE):
            paths.append(api.model_path(config, "vae", str(constants["vae_name"])))
        return paths

    @classmethod
    def fingerprint(cls, config: Any, **constants: Any) -> Any:
        try:
            return [api.file_fingerprint(p) for p in cls._paths(config, constants)]
        except (OSError, ValueError):
            return ("missing", constants.get("ckpt_name"), constants.get("vae_name"))

    @classmethod
    def model_files(cls, config: Any, **constants: Any) -> list[str]:
        try:
            return [str(p) for p in cls._paths(config, constants)]
        except (OSError, ValueError):
            return []

    def execute(self, ctx: api.ExecutionContext, ckpt_name: str,
                vae_name: str = SAME_VAE) -> tuple[api.MODEL, api.CLIP, api.VAE]:
        ckpt = ctx.models.load_checkpoint(ckpt_name)
        vae = ckpt.vae if vae_name == SAME_VAE else ctx.models.load_vae(vae_name)
        return (ckpt.model, ckpt.clip, vae)


class RegionHint(api.Node):
    """Attach an image to a conditioning as a guidance map: hinted_euler guides harder where it is bright."""

    DISPLAY_NAME = "Region Hint"
    CATEGORY = "sdk demo/conditioning"
    INPUTS = {
        "conditioning": api.Link("CONDITIONING"),
        "image": api.Link("IMAGE", tooltip="white = full guidance, black = weaker"),
        "strength": api.Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="how much the hint changes the guidance"),
    }
    OUTPUTS = (api.Output("CONDITIONING"),)

    def execute(self, ctx: api.ExecutionContext, conditioning: api.CONDITIONING, image: api.IMAGE,
                strength: float) -> tuple[api.CONDITIONING]:
        if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"image has shape {tuple(image.shape)}; connect an IMAGE output [B, H, W, C]")
        luminance = image[..., :3].mean(dim=-1, keepdim=True).movedim(-1, 1)  # [B, 1, H, W]
        hint = {"map": luminance.float(), "strength": float(strength)}
        return ([(emb, replace_extras(extras, hint)) for emb, extras in conditioning],)


def replace_extras(extras: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """A copy of a conditioning entry's extras with the hint (the input is never mutated)."""
    return {**extras, HINT_KEY: dict(hint)}
