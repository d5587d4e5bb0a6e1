"""Loader nodes: checkpoints (MODEL, CLIP, VAE), VAEs, LoRAs and upscale models from the models folder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodegraph import Combo, Float, Link, Node, Output, hookimpl
from nodegraph.diffusion.loading import (checkpoint_names, file_fingerprint, lora_names, resolve_model,
                                         upscale_model_names, vae_names)

SPANDREL_HINT = ("UpscaleModelLoader needs the optional package 'spandrel' (with torchvision): install it with "
                 "pip install 'nodegraph[upscale]'")


class _ModelFileNode(Node):
    """A node that reads one model file chosen by a combo: ``MODEL_INPUT = (input name, models sub-folder)``.

    The file's (path, size, mtime) goes into the cache key, so replacing it on disk reloads it, and its path is
    reported for provenance (its SHA-256 lands in every output's manifest).
    """

    MODEL_INPUT: tuple[str, str] = ("", "")

    @classmethod
    def _path(cls, config: Any, constants: dict[str, Any]) -> Any:
        return cls.model_path(config, str(constants.get(cls.MODEL_INPUT[0])))

    @classmethod
    def model_path(cls, config: Any, name: str) -> Any:
        """The path of model ``name`` in this node's models sub-folder (never outside it)."""
        return resolve_model(config, cls.MODEL_INPUT[1], name)

    @classmethod
    def fingerprint(cls, config, **constants):
        try:
            return file_fingerprint(cls._path(config, constants))
        except (OSError, ValueError):
            return ("missing", cls.MODEL_INPUT, constants.get(cls.MODEL_INPUT[0]))

    @classmethod
    def model_files(cls, config, **constants):
        try:
            return [str(cls._path(config, constants))]
        except (OSError, ValueError):
            return []


class CheckpointLoaderSimple(_ModelFileNode):
    """Load a diffusion model checkpoint: the denoising MODEL, the CLIP text encoder and the VAE."""

    DISPLAY_NAME = "Load Checkpoint"
    CATEGORY = "loaders"
    MODEL_INPUT = ("ckpt_name", "checkpoints")
    INPUTS = {"ckpt_name": Combo(checkpoint_names, tooltip="a checkpoint in models/checkpoints (a .safetensors "
                                 "file or a diffusers folder); nodegraph-shapes-v1 is the small built-in model")}
    OUTPUTS = (Output("MODEL", tooltip="the model used to denoise latents"),
               Output("CLIP", tooltip="the model used to encode text prompts"),
               Output("VAE", tooltip="the model used to encode images to latents and decode them back"))

    def execute(self, ctx, ckpt_name: str):
        from nodegraph.diffusion.devices import DeviceManager
        from nodegraph.diffusion.loading import load_checkpoint

        devices = ctx.services.get(DeviceManager, lambda: DeviceManager.from_config(ctx.config))
        dtype = devices.dtype if devices.device.type != "cpu" else None  # half the host memory for GPU runs
        ckpt = load_checkpoint(self.model_path(ctx.config, ckpt_name), ctx.config, name=ckpt_name,
                               dtype=dtype)
        return (ckpt.model, ckpt.clip, ckpt.vae)


class VAELoader(_ModelFileNode):
    """Load a VAE (to use instead of a checkpoint's own)."""

    DISPLAY_NAME = "Load VAE"
    CATEGORY = "loaders"
    MODEL_INPUT = ("vae_name", "vae")
    INPUTS = {"vae_name": Combo(vae_names, tooltip="a VAE in models/vae (.safetensors or a diffusers folder)")}
    OUTPUTS = (Output("VAE"),)

    def execute(self, ctx, vae_name: str):
        from nodegraph.diffusion.loading import load_vae

        return (load_vae(self.model_path(ctx.config, vae_name), ctx.config, name=vae_name),)


def _with_lora(ctx: Any, lora_name: str, model: Any, clip: Any, strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:
    """Copies of model/clip recording the LoRA (weights shared; applied while sampling/encoding)."""
    from nodegraph.diffusion import lora
    from nodegraph.diffusion.types import LoraPatch

    path = LoraLoader.model_path(ctx.config, lora_name)
    allow = bool(ctx.config.allow_unsafe_pickle)
    weights = ctx.services.get(lora.LoraLibrary).get(path, allow)
    hits = 0
    if model is not None and strength_model != 0:
        hits += len(lora.match(weights, lora.unet_targets(model.unet), "unet").updates)
    if clip is not None and strength_clip != 0:
        hits += len(lora.match(weights, lora.text_targets(tuple(clip.encoders)), "text").updates)
    wanted = (model is not None and strength_model != 0) or (clip is not None and strength_clip != 0)
    if wanted and hits == 0:
        arch = getattr(model, "arch", None) or getattr(clip, "arch", "?")
        raise ValueError(f"LoRA {lora_name!r} matches no layer of this {arch} model ({len(weights.pairs)} updates, "
                         f"e.g. {next(iter(weights.pairs), '-')}); it was probably made for another model family")
    if model is not None and strength_model != 0:
        model = model.with_lora(LoraPatch(lora_name, str(path), float(strength_model), allow))
    if clip is not None and strength_clip != 0:
        clip = replace(clip, loras=tuple(clip.loras) + (LoraPatch(lora_name, str(path), float(strength_clip), allow),))
    return model, clip


_STRENGTH = dict(min=-100.0, max=100.0, step=0.01)


class LoraLoader(_ModelFileNode):
    """Apply a LoRA to a MODEL and its CLIP with separate strengths (0 leaves that one unchanged)."""

    DISPLAY_NAME = "Load LoRA"
    CATEGORY = "loaders"
    MODEL_INPUT = ("lora_name", "loras")
    INPUTS = {"model": Link("MODEL", tooltip="the diffusion model the LoRA is applied to"),
              "clip": Link("CLIP", tooltip="the text encoder the LoRA is applied to"),
              "lora_name": Combo(lora_names, tooltip="a LoRA in models/loras"),
              "strength_model": Float(1.0, **_STRENGTH, tooltip="how strongly to change the diffusion model; "
                                      "negative values invert the effect"),
              "strength_clip": Float(1.0, **_STRENGTH, tooltip="how strongly to change the text encoder")}
    OUTPUTS = (Output("MODEL", tooltip="the model with the LoRA"), Output("CLIP", tooltip="the CLIP with the LoRA"))

    def execute(self, ctx, model, clip, lora_name: str, strength_model: float, strength_clip: float):
        return _with_lora(ctx, lora_name, model, clip, strength_model, strength_clip)


class LoraLoaderModelOnly(_ModelFileNode):
    """Apply a LoRA to a MODEL only."""

    DISPLAY_NAME = "LoraLoaderModelOnly"
    CATEGORY = "loaders"
    MODEL_INPUT = ("lora_name", "loras")
    INPUTS = {"model": Link("MODEL"), "lora_name": Combo(lora_names, tooltip="a LoRA in models/loras"),
              "strength_model": Float(1.0, **_STRENGTH)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, lora_name: str, strength_model: float):
        return (_with_lora(ctx, lora_name, model, None, strength_model, 0.0)[0],)


class UpscaleModelLoader(_ModelFileNode):
    """Load an image upscale model (ESRGAN and friends, through spandrel; .safetensors)."""

    DISPLAY_NAME = "Load Upscale Model"
    CATEGORY = "loaders"
    MODEL_INPUT = ("model_name", "upscale_models")
    INPUTS = {"model_name": Combo(upscale_model_names, tooltip="a model in models/upscale_models")}
    OUTPUTS = (Output("UPSCALE_MODEL"),)

    def execute(self, ctx, model_name: str):
        from nodegraph.diffusion.loading import check_loadable

        path = self.model_path(ctx.config, model_name)
        check_loadable(path, bool(ctx.config.allow_unsafe_pickle))
        try:
            import spandrel
        except ImportError:
            raise ModuleNotFoundError(SPANDREL_HINT) from None
        descriptor = spandrel.ModelLoader().load_from_file(str(path))
        if not isinstance(descriptor, spandrel.ImageModelDescriptor):
            raise ValueError(f"{model_name} is not a single-image model (spandrel found "
                             f"{type(descriptor).__name__}); choose an image upscale model")
        descriptor.eval()
        return (descriptor,)


@hookimpl
def nodegraph_nodes():
    """The loader nodes."""
    return [CheckpointLoaderSimple, VAELoader, LoraLoader, LoraLoaderModelOnly, UpscaleModelLoader]
