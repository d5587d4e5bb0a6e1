"""Loader nodes: checkpoints (MODEL, CLIP, VAE), VAEs, LoRAs and upscale models from the models folder."""

from __future__ import annotations

from typing import Any

from nodegraph.api import (TAESD_NAMES, Float, Hypernetwork, Link, ModelCombo, Node, Output, checkpoint_names, derive,
                           file_fingerprint, hookimpl, list_models, load_hypernetwork, load_taesd, lora_names,
                           model_path, taesd_names, taesd_paths, upscale_model_names, vae_names, with_patch)

SPANDREL_HINT = ("UpscaleModelLoader needs the optional package 'spandrel' (with torchvision): install it with "
                 "pip install 'nodegraph[upscale]'")


class ModelFileNode(Node):
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
        return model_path(config, cls.MODEL_INPUT[1], name)

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


class CheckpointLoaderSimple(ModelFileNode):
    """Load a diffusion model checkpoint: the denoising MODEL, the CLIP text encoder and the VAE."""

    DISPLAY_NAME = "Load Checkpoint"
    CATEGORY = "loaders"
    MODEL_INPUT = ("ckpt_name", "checkpoints")
    INPUTS = {"ckpt_name": ModelCombo("checkpoints", checkpoint_names,
                                      tooltip="a checkpoint in models/checkpoints (a .safetensors file or a diffusers "
                                              "folder); nodegraph-shapes-v1 is the small built-in model")}
    OUTPUTS = (Output("MODEL", tooltip="the model used to denoise latents"),
               Output("CLIP", tooltip="the model used to encode text prompts"),
               Output("VAE", tooltip="the model used to encode images to latents and decode them back"))

    def execute(self, ctx, ckpt_name: str):
        ckpt = ctx.models.load_checkpoint(ckpt_name, self.MODEL_INPUT[1])
        return (ckpt.model, ckpt.clip, ckpt.vae)


#: LDM configs' ``parameterization`` → diffusers' ``prediction_type``.
PARAMETERIZATION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def config_names(config: Any) -> list[str]:
    """Model configs (YAML) under models/configs, for CheckpointLoader."""
    return list_models(config, "configs") if config else []


def diffusers_names(config: Any) -> list[str]:
    """Diffusers pipeline folders (with model_index.json) under models/diffusers, for DiffusersLoader."""
    return list_models(config, "diffusers") if config else []


def read_ldm_config(path: Any) -> dict[str, Any]:
    """An original (LDM) model config: YAML read safely (data only), refused with the fix when malformed."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"CheckpointLoader: cannot read {path.name} as YAML ({exc}); give an LDM config such as "
                         "v1-inference.yaml") from None
    if not isinstance(data, dict):
        raise ValueError(f"CheckpointLoader: {path.name} is not an LDM config (a YAML mapping with model.params)")
    return data


def prediction_of(ldm_config: dict[str, Any]) -> str | None:
    """The prediction type an LDM config states (``model.params.parameterization``), or None when it states none."""
    params = (ldm_config.get("model") or {}).get("params") or {}
    value = params.get("parameterization") if isinstance(params, dict) else None
    if value is None:
        return None
    if value not in PARAMETERIZATION:
        raise ValueError(f"CheckpointLoader: parameterization {value!r} is not one of {', '.join(PARAMETERIZATION)}")
    return PARAMETERIZATION[value]


class CheckpointLoader(ModelFileNode):
    """Load a checkpoint with an original (LDM) config file: the config's parameterization (eps, v) decides how
    the model's output is read; the architecture is detected from the weights, as CheckpointLoaderSimple does."""

    DISPLAY_NAME = "Load Checkpoint With Config (DEPRECATED)"
    CATEGORY = "advanced/loaders"
    MODEL_INPUT = ("ckpt_name", "checkpoints")
    INPUTS = {"config_name": ModelCombo("configs", config_names, tooltip="an LDM config in models/configs"),
              "ckpt_name": ModelCombo("checkpoints", checkpoint_names)}
    OUTPUTS = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    def execute(self, ctx, config_name: str, ckpt_name: str):
        prediction = prediction_of(read_ldm_config(model_path(ctx.config, "configs", config_name)))
        ckpt = ctx.models.load_checkpoint(ckpt_name, self.MODEL_INPUT[1])
        model = ckpt.model
        if prediction is not None and prediction != model.scheduler_config.get("prediction_type", "epsilon"):
            model = derive(model, scheduler_config={**dict(model.scheduler_config), "prediction_type": prediction})
        return (model, ckpt.clip, ckpt.vae)


class DiffusersLoader(ModelFileNode):
    """Load a diffusers pipeline folder from models/diffusers (MODEL, CLIP, VAE)."""

    CATEGORY = "advanced/loaders/deprecated"
    MODEL_INPUT = ("model_path", "diffusers")
    INPUTS = {"model_path": ModelCombo("diffusers", diffusers_names,
                                       tooltip="a folder with model_index.json in models/diffusers")}
    OUTPUTS = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    def execute(self, ctx, model_path: str):
        ckpt = ctx.models.load_checkpoint(model_path, self.MODEL_INPUT[1])
        return (ckpt.model, ckpt.clip, ckpt.vae)


def vae_choices(config: Any) -> list[str]:
    """VAELoader's options: VAEs in models/vae, then the TAESDs whose two files are in models/vae_approx."""
    return vae_names(config) + [name for name in taesd_names(config) if name not in vae_names(config)]


class VAELoader(ModelFileNode):
    """Load a VAE (to use instead of a checkpoint's own), or a TAESD tiny autoencoder (taesd, taesdxl, taesd3,
    taef1: its encoder and decoder files in models/vae_approx)."""

    DISPLAY_NAME = "Load VAE"
    CATEGORY = "loaders"
    MODEL_INPUT = ("vae_name", "vae")
    INPUTS = {"vae_name": ModelCombo("vae", vae_choices,
                                     tooltip="a VAE in models/vae (.safetensors or a diffusers folder), or a TAESD "
                                             "(taesd_encoder/taesd_decoder.safetensors … in models/vae_approx)")}
    OUTPUTS = (Output("VAE"),)

    @classmethod
    def _taesd(cls, config: Any, name: Any) -> bool:
        return name in TAESD_NAMES and name not in vae_names(config)

    @classmethod
    def fingerprint(cls, config, **constants):
        name = constants.get("vae_name")
        if cls._taesd(config, name):
            paths = taesd_paths(config, str(name))
            return tuple(file_fingerprint(paths[part]) if part in paths else ("missing", part)
                         for part in ("encoder", "decoder"))
        return super().fingerprint(config, **constants)

    @classmethod
    def model_files(cls, config, **constants):
        name = constants.get("vae_name")
        if cls._taesd(config, name):
            return [str(p) for p in taesd_paths(config, str(name)).values()]
        return super().model_files(config, **constants)

    def execute(self, ctx, vae_name: str):
        if self._taesd(ctx.config, vae_name):
            paths = taesd_paths(ctx.config, vae_name)
            if "decoder" not in paths:
                return (load_taesd(ctx.config, vae_name),)  # raises: names the missing files
            return (ctx.models.load_file("vae_approx", paths["decoder"].name,
                                         lambda: load_taesd(ctx.config, vae_name)),)
        return (ctx.models.load_vae(vae_name, self.MODEL_INPUT[1]),)


def _with_lora(ctx: Any, lora_name: str, model: Any, clip: Any, strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:
    """Copies of model/clip recording the LoRA (weights shared; applied while sampling/encoding)."""
    return ctx.models.apply_lora(lora_name, model, clip, strength_model, strength_clip)


_STRENGTH = dict(min=-100.0, max=100.0, step=0.01)


class LoraLoader(ModelFileNode):
    """Apply a LoRA to a MODEL and its CLIP with separate strengths (0 leaves that one unchanged)."""

    DISPLAY_NAME = "Load LoRA"
    CATEGORY = "loaders"
    MODEL_INPUT = ("lora_name", "loras")
    INPUTS = {"model": Link("MODEL", tooltip="the diffusion model the LoRA is applied to"),
              "clip": Link("CLIP", tooltip="the text encoder the LoRA is applied to"),
              "lora_name": ModelCombo("loras", lora_names, tooltip="a LoRA in models/loras"),
              "strength_model": Float(1.0, **_STRENGTH, tooltip="how strongly to change the diffusion model; "
                                      "negative values invert the effect"),
              "strength_clip": Float(1.0, **_STRENGTH, tooltip="how strongly to change the text encoder")}
    OUTPUTS = (Output("MODEL", tooltip="the model with the LoRA"), Output("CLIP", tooltip="the CLIP with the LoRA"))

    def execute(self, ctx, model, clip, lora_name: str, strength_model: float, strength_clip: float):
        return _with_lora(ctx, lora_name, model, clip, strength_model, strength_clip)


class LoraLoaderModelOnly(ModelFileNode):
    """Apply a LoRA to a MODEL only."""

    DISPLAY_NAME = "LoraLoaderModelOnly"
    CATEGORY = "loaders"
    MODEL_INPUT = ("lora_name", "loras")
    INPUTS = {"model": Link("MODEL"), "lora_name": ModelCombo("loras", lora_names, tooltip="a LoRA in models/loras"),
              "strength_model": Float(1.0, **_STRENGTH)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, lora_name: str, strength_model: float):
        return (_with_lora(ctx, lora_name, model, None, strength_model, 0.0)[0],)


class UpscaleModelLoader(ModelFileNode):
    """Load an image upscale model (ESRGAN and friends, through spandrel; .safetensors)."""

    DISPLAY_NAME = "Load Upscale Model"
    CATEGORY = "loaders"
    MODEL_INPUT = ("model_name", "upscale_models")
    INPUTS = {"model_name": ModelCombo("upscale_models", upscale_model_names,
                                       tooltip="a model in models/upscale_models")}
    OUTPUTS = (Output("UPSCALE_MODEL"),)

    def execute(self, ctx, model_name: str):
        path = self.model_path(ctx.config, model_name)
        ctx.models.check_loadable(path)
        try:
            import spandrel
        except ImportError:
            raise ModuleNotFoundError(SPANDREL_HINT) from None

        def load() -> Any:
            descriptor = spandrel.ModelLoader().load_from_file(str(path))
            if not isinstance(descriptor, spandrel.ImageModelDescriptor):
                raise ValueError(f"{model_name} is not a single-image model (spandrel found "
                                 f"{type(descriptor).__name__}); choose an image upscale model")
            descriptor.eval()
            return descriptor

        return (ctx.models.load_file(self.MODEL_INPUT[1], model_name, load),)


def hypernetwork_names(config: Any) -> list[str]:
    """Hypernetwork files under models/hypernetworks, for HypernetworkLoader."""
    return list_models(config, "hypernetworks") if config else []


class HypernetworkLoader(ModelFileNode):
    """Apply an A1111 hypernetwork to a MODEL: per-width MLPs on the key and value inputs of its attentions."""

    CATEGORY = "loaders"
    MODEL_INPUT = ("hypernetwork_name", "hypernetworks")
    INPUTS = {"model": Link("MODEL"),
              "hypernetwork_name": ModelCombo("hypernetworks", hypernetwork_names,
                                              tooltip="a hypernetwork in models/hypernetworks (.safetensors)"),
              "strength": Float(1.0, min=-10.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, hypernetwork_name: str, strength: float):
        if getattr(model, "family", "unet") != "unet":
            raise ValueError(f"HypernetworkLoader: hypernetworks patch SD1.x/SD2.x/SDXL UNets, not this "
                             f"{model.family} model; connect a UNet checkpoint's MODEL")
        path = self.model_path(ctx.config, hypernetwork_name)
        allow = bool(ctx.config.allow_unsafe_pickle)
        nets = ctx.models.load_file(self.MODEL_INPUT[1], hypernetwork_name, lambda: load_hypernetwork(path, allow))
        with ctx.models.use(nets) as (loaded,):
            return (with_patch(model, Hypernetwork(hypernetwork_name, loaded, float(strength))),)


@hookimpl
def nodegraph_nodes():
    """The loader nodes."""
    return [CheckpointLoaderSimple, CheckpointLoader, DiffusersLoader, VAELoader, LoraLoader, LoraLoaderModelOnly,
            UpscaleModelLoader, HypernetworkLoader]
