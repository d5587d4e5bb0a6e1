"""CheckpointSave: a MODEL + CLIP + VAE (patches such as merges and LoRAs applied) as one ``.safetensors`` file in
the original (CompVis/LDM) key layout that ComfyUI writes and every single-file loader reads.

Layout (as ComfyUI's ``save_checkpoint``): ``model.diffusion_model.*``, ``first_stage_model.*``, and the text
encoders as ``cond_stage_model.transformer.*`` (SD1), ``cond_stage_model.model.*`` (SD2, OpenCLIP) or
``conditioner.embedders.0.transformer.*`` + ``conditioner.embedders.1.model.*`` (SDXL, with CLIP-L's
``position_ids``). A v-prediction model gets ComfyUI's empty ``v_pred`` marker tensor (and ``ztsnr`` with zero
terminal SNR). Metadata as ComfyUI writes it: ``prompt`` (the API prompt as JSON) and one entry per
``extra_pnginfo`` key (``workflow``), ``modelspec.predict_key``, and for SDXL the ``modelspec`` architecture, title
and implementation. A model whose configs are not a standard family's (the tiny test models, custom sizes) also
carries its diffusers configs and tokenizer under ``detect.METADATA_KEY`` so that it loads again offline.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from .ldm import open_clip_to_ldm, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from .types import DiffusionModel, TextEncoder, VAEModel


def _cpu_copy(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _clip_state(clip: TextEncoder) -> dict[str, Any]:
    import torch

    encoders = [_cpu_copy(e.state_dict()) for e in clip.encoders]
    encoders = [{k: v for k, v in sd.items() if not k.endswith((".position_ids", "logit_scale"))} for sd in encoders]
    if len(encoders) == 2:
        first = {k: v for k, v in encoders[0].items() if not k.endswith("text_projection.weight")}
        out = text_encoder_to_ldm(first, "conditioner.embedders.0.transformer.")
        out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = \
            torch.arange(77).expand((1, -1)).contiguous()
        out.update(open_clip_to_ldm(encoders[1], "conditioner.embedders.1.model."))
        return out
    if clip.arch == "sd2":
        return open_clip_to_ldm(encoders[0], "cond_stage_model.model.")
    if clip.arch == "sdxl_refiner":
        return open_clip_to_ldm(encoders[0], "conditioner.embedders.0.model.")
    sd = {k: v for k, v in encoders[0].items() if not k.endswith("text_projection.weight")}
    return text_encoder_to_ldm(sd)


def checkpoint_state(model: DiffusionModel, clip: TextEncoder, vae: VAEModel, library: Any = None) -> dict[str, Any]:
    """The weights of ``model``, ``clip`` and ``vae`` with their patches applied, in LDM key layout (CPU copies)."""
    import torch

    from . import lora

    state: dict[str, Any] = {}
    with torch.no_grad():
        with lora.applied(model, library):
            unet = model.unet
            state.update(unet_to_ldm(_cpu_copy(unet.state_dict()), int(unet.config.layers_per_block)))
        with lora.applied(clip, library):
            state.update(_clip_state(clip))
        state.update(vae_to_ldm(_cpu_copy(vae.vae.state_dict()), len(vae.vae.config.block_out_channels)))
    sched = model.scheduler_config
    if model.prediction_type == "v_prediction":
        state["v_pred"] = torch.tensor([])
        if sched.get("rescale_betas_zero_snr"):
            state["ztsnr"] = torch.tensor([])
    return state


def _json(config: Any) -> str:
    if hasattr(config, "to_json_string"):
        return config.to_json_string()
    return json.dumps(dict(config), indent=2, sort_keys=True, default=list)


def stored_configs(model: DiffusionModel, clip: TextEncoder, vae: VAEModel) -> str:
    """The diffusers configs and tokenizer files of the three, as the JSON ``detect.METADATA_KEY`` entry."""
    from .detect import STORED_FILES

    files = {"unet/config.json": _json(model.unet.config), "vae/config.json": _json(vae.vae.config),
             "scheduler/scheduler_config.json": _json(model.scheduler_config)}
    for i, (tokenizer, encoder) in enumerate(zip(clip.tokenizers, clip.encoders)):
        suffix = "" if i == 0 else "_2"
        files[f"text_encoder{suffix}/config.json"] = encoder.config.to_json_string()
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            for path in sorted(Path(tmp).iterdir()):
                rel = f"tokenizer{suffix}/{path.name}"
                if rel in STORED_FILES and path.is_file():
                    files[rel] = path.read_text(encoding="utf-8")
    return json.dumps({"format": 1, "files": files})


#: UNet settings that, equal to a shipped family's, let a loader rebuild the model from the weights alone.
_SHAPE_KEYS = ("block_out_channels", "cross_attention_dim", "layers_per_block", "transformer_layers_per_block",
               "attention_head_dim", "down_block_types", "up_block_types", "addition_embed_type",
               "projection_class_embeddings_input_dim")


def is_standard(model: DiffusionModel, clip: TextEncoder) -> bool:
    """Whether the UNet is shaped as a standard SD1/SD2/SDXL one (whose configs ship with every loader)."""
    from .detect import CONFIGS_DIR, arch_of

    ours = json.loads(_json(model.unet.config))
    arch = arch_of(ours, len(clip.encoders) > 1)
    shipped = CONFIGS_DIR / arch / "unet" / "config.json"
    if arch == "custom" or not shipped.is_file():
        return False
    reference = json.loads(shipped.read_text(encoding="utf-8"))
    return all(json.dumps(ours.get(k)) == json.dumps(reference[k]) for k in _SHAPE_KEYS if k in reference)


def comfy_metadata(model: DiffusionModel, clip: TextEncoder, title: str, prompt: Any,
                   extra_pnginfo: dict[str, Any]) -> dict[str, str]:
    """The safetensors metadata ComfyUI's CheckpointSave writes (``title``: file stem and counter, "ComfyUI 1")."""
    metadata: dict[str, str] = {}
    if model.unet.config.get("addition_embed_type") == "text_time":
        metadata["modelspec.architecture"] = ("stable-diffusion-xl-v1-base" if len(clip.encoders) > 1
                                              else "stable-diffusion-xl-v1-refiner")
        metadata["modelspec.sai_model_spec"] = "1.0.0"
        metadata["modelspec.implementation"] = "sgm"
        metadata["modelspec.title"] = title
    if model.prediction_type == "epsilon":
        metadata["modelspec.predict_key"] = "epsilon"
    elif model.prediction_type == "v_prediction":
        metadata["modelspec.predict_key"] = "v"
    metadata["prompt"] = "" if prompt is None else json.dumps(prompt)
    for key, value in extra_pnginfo.items():
        metadata[str(key)] = json.dumps(value)
    return metadata


def title_of(filename: str) -> str:
    """ComfyUI's ``modelspec.title`` for a file it named ``{stem}_{counter:05}_.safetensors``: "stem counter"."""
    found = re.fullmatch(r"(.*)_(\d+)_\.safetensors", filename)
    return f"{found.group(1)} {int(found.group(2))}" if found else filename


def save_checkpoint(ctx: Any, model: Any, clip: Any, vae: Any, filename_prefix: str) -> dict[str, str]:
    """Write the checkpoint into the output folder as ``{prefix}_{counter:05}_.safetensors`` (``prefix`` may name a
    subfolder, never one outside the output folder); returns its ``{"filename", "subfolder", "type"}`` entry."""
    from safetensors.torch import save_file

    from .detect import METADATA_KEY

    with ctx.models.use(model, clip, vae) as (m, c, v):
        library = ctx.models.lora_library() if (m.loras or c.loras) else None
        state = checkpoint_state(m, c, v, library)
        handle, entry = ctx.files.create(filename_prefix, ".safetensors", "output")
        handle.close()
        metadata = comfy_metadata(m, c, title_of(entry["filename"]), ctx.prompt, ctx.extra_pnginfo)
        if not is_standard(m, c):
            metadata[METADATA_KEY] = stored_configs(m, c, v)
    path = ctx.files.path("output", "/".join(p for p in (entry["subfolder"], entry["filename"]) if p))
    save_file(state, str(path), metadata=metadata)
    return entry
