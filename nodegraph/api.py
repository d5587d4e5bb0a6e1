"""The public API for node authors: everything a node pack needs, and nothing it should not reach past.

The built-in packs in ``nodes/`` import only this module, so anything they do a plugin can do too. Stable names:

Declaring nodes
    ``Node``, ``NodeOutput``, ``Int``/``Float``/``String``/``Boolean``/``Combo``/``Link``, ``Output``, ``hookimpl``;
    ``ModelCombo(folder, names)`` for a model file choice whose refusal says why (e.g. a pickle not allowed).

Values on links (ComfyUI's conventions, so its workflows mean the same thing here)
    ``MODEL`` (``DiffusionModel``: ``.unet``, ``.scheduler_config``, ``.arch``, ``.latent``, ``.loras``),
    ``CLIP`` (``TextEncoder``: ``.tokenizers``, ``.encoders``, ``.stop_at_layer``),
    ``VAE`` (``VAEModel``: ``.vae`` an AutoencoderKL, ``.scaling_factor``, ``.downscale``),
    ``CONDITIONING`` (list of ``(embeddings [B, T, D], extras)``; extras may hold ``pooled_output``, ``strength``
    and whatever a plugin attaches for its own sampler, e.g. a ``hint``),
    ``LATENT`` (``Latent`` TypedDict: unscaled ``samples`` [B, C, h, w] plus optional keys),
    ``IMAGE`` (float32 [B, H, W, C] in 0..1, CPU), ``MASK`` (float32 [B, H, W] in 0..1, 1 = change).
    Nodes never mutate these: return a copy that shares the weights (``derive(value, field=...)``).
    Loaders return light ``ModelHandle``s for MODEL, CLIP, VAE and UPSCALE_MODEL: the engine's model manager keeps
    the weights within its RAM budget and reloads an evicted model when a handle is used. Attributes read through a
    handle (``model.unet``); a node that works with a model gets it with ``ctx.models.get(value)`` or, kept loaded
    for a block, ``with ctx.models.use(model, clip) as (model, clip):`` (plain models pass through both).

What a node sees while it runs (``ExecutionContext``, the ``ctx`` argument of ``execute``)
    ``ctx.models`` (``Models``: get/use/resolve/load_checkpoint/load_vae/load_file/load_lora/apply_lora/
    encode_text),
    ``ctx.devices`` (``.device``, ``.dtype``, ``with ctx.devices.use(module): ...``), ``ctx.files`` (``Files``: input,
    output and temp paths, never outside their folder), ``ctx.progress(step, total)``, ``ctx.check_interrupt()``,
    ``ctx.preview(image)``, ``ctx.samplers`` (the engine's sampler table), ``ctx.config``, ``ctx.services``.

Samplers and schedules
    Declare ``NODEGRAPH_SAMPLERS = [SamplerDef(name, fn)]`` / ``NODEGRAPH_SCHEDULERS = [ScheduleDef(name, fn)]``
    in a plugin module; KSampler lists them and ``sample`` runs them (see ``SamplerFn`` and ``Denoiser``).

Helpers
    procedural shapes (``render_shape``: the renderer the embedded model was trained on),
    images ↔ Pillow (``pil_to_image``, ``pil_to_mask``, ``image_to_pils``, ``save_pngs``), resizing NCHW tensors
    (``resample``, ``center_crop``, ``target_size``), model combos for ``Combo(...)`` (``checkpoint_names``, …),
    ``model_path``/``file_fingerprint`` for a node's ``fingerprint``/``model_files`` class methods, ``safe_join``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TypeAlias, TypedDict

from typing_extensions import Required

from .config import EngineConfig, UnsafePathError, safe_join
from .context import ExecutionContext, Files, Interrupted, Models
from .diffusion.custom import Denoiser, SamplerDef, SamplerFn, SamplerRegistry, ScheduleDef, StepCallback, samplers_of
from .diffusion.loading import (checkpoint_names, file_fingerprint, lora_names, resolve_model, upscale_model_names,
                                vae_names)
from .diffusion.types import Checkpoint, DiffusionModel, LatentFormat, LoraPatch, TextEncoder, VAEModel
from .hookspecs import hookimpl
from .imaging import center_crop, image_to_pils, pil_to_image, pil_to_mask, resample, save_pngs, target_size
from .inputs import Boolean, Combo, Float, Int, Link, Output, String
from .models.handles import ModelHandle, derive
from .models.inputs import ModelCombo
from .node import Node, NodeOutput
from .training import shapes as _shapes
from .training.shapes import COLOR_NAMES, COLORS, SHAPES, ShapeSpec
from .training.shapes import render as render_shape

if TYPE_CHECKING:
    from torch import Tensor
else:
    Tensor = Any

__all__ = [
    "Boolean", "center_crop", "Checkpoint", "checkpoint_names", "CLIP", "COLOR_NAMES", "COLORS", "Combo",
    "CONDITIONING", "ConditioningEntry", "Denoiser", "derive", "DiffusionModel", "EngineConfig", "ExecutionContext",
    "file_fingerprint", "Files", "Float", "hookimpl", "IMAGE", "image_to_pils", "Int", "Interrupted", "LATENT",
    "Latent", "LatentFormat", "Link", "list_models", "lora_names", "LoraPatch", "MASK", "MODEL", "model_path",
    "ModelCombo", "ModelHandle", "Models", "Node", "NodeOutput", "Output", "pil_to_image", "pil_to_mask", "position_word",
    "render_shape", "resample", "safe_join", "sample", "sampler_names", "SamplerDef", "SamplerFn", "SamplerRegistry",
    "save_pngs", "ScheduleDef", "scheduler_names", "SHAPES", "ShapeSpec", "StepCallback", "String", "target_size",
    "Tensor", "TextEncoder", "UnsafePathError", "unsupported_pair", "upscale_model_names", "VAE", "vae_names",
    "VAEModel",
]

# ---- values on links ------------------------------------------------------------------------------------------------

#: What loaders return is a ``ModelHandle`` (attributes read through to the model); plugins may pass plain models.
MODEL: TypeAlias = "DiffusionModel | ModelHandle"
CLIP: TypeAlias = "TextEncoder | ModelHandle"
VAE: TypeAlias = "VAEModel | ModelHandle"
IMAGE: TypeAlias = "Tensor"
MASK: TypeAlias = "Tensor"
#: One conditioning entry: text embeddings [B, T, D] and extras ("pooled_output", "strength", plugin hints, …).
ConditioningEntry: TypeAlias = "tuple[Tensor, dict[str, Any]]"
CONDITIONING: TypeAlias = "list[ConditioningEntry]"


class Latent(TypedDict, total=False):
    """LATENT: unscaled VAE latents and what travels with them."""

    samples: Required["Tensor"]  # [B, C, h, w] as the VAE produced it, before the scaling factor
    noise_mask: "Tensor"  # [B, 1, h|H, w|W], 1 = let sampling change this area
    batch_index: list[int]  # which noise draws of the seed each item uses
    downscale: int  # pixels per latent cell, when known
    pixel_size: tuple[int, int]  # (H, W) of an untouched EmptyLatentImage; KSampler may re-shape it


LATENT: TypeAlias = Latent


# ---- model files, for combos and class methods (which receive the config, not a context) ----------------------------

def model_path(config: EngineConfig, folder: str, name: str) -> Path:
    """The path of model ``name`` in the models sub-folder ``folder`` (never outside it)."""
    return resolve_model(config, folder, name)


def list_models(config: EngineConfig | None, folder: str) -> list[str]:
    """Loadable model names in the models sub-folder ``folder`` (files and diffusers folders), for a node's combo."""
    from .models import folders

    return folders.list_models(config, folder) if config is not None else []


def position_word(cx: float, cy: float, size: int = _shapes.IMAGE_SIZE) -> str:
    """The caption word for a shape centred at (cx, cy) in a ``size`` image ("top left", "", "bottom", …)."""
    return _shapes.position_word(cx, cy, size)


# ---- samplers -------------------------------------------------------------------------------------------------------

def sampler_names(config: Any) -> list[str]:
    """The sampler_name options of the engine owning ``config`` (built-in and plugin samplers), for ``Combo``."""
    return samplers_of(config).sampler_names()


def scheduler_names(config: Any) -> list[str]:
    """The scheduler options of the engine owning ``config`` (built-in and plugin schedules), for ``Combo``."""
    return samplers_of(config).scheduler_names()


def unsupported_pair(config: Any, sampler: str, scheduler: str) -> str | None:
    """Why (sampler, scheduler) cannot run on that engine, naming what works instead; None when it can."""
    return samplers_of(config).unsupported_pair(sampler, scheduler)


def sample(ctx: ExecutionContext, model: MODEL, positive: Sequence[Any],
           negative: Sequence[Any], latent: Latent, *, sampler_name: str, scheduler: str, steps: int, cfg: float,
           seed: int, denoise: float = 1.0, add_noise: bool = True, start_at_step: int = 0, end_at_step: int = 10000,
           return_with_leftover_noise: bool = False) -> Latent:
    """Denoise ``latent`` with KSampler's semantics (any built-in or plugin sampler); reports progress + previews."""
    from .diffusion.sampling import SamplingOptions
    from .diffusion.sampling import sample as run

    opts = SamplingOptions(sampler_name=sampler_name, scheduler=scheduler, steps=steps, cfg=cfg, seed=seed,
                           denoise=denoise, add_noise=add_noise, start_at_step=start_at_step,
                           end_at_step=end_at_step, return_with_leftover_noise=return_with_leftover_noise)

    def progress(step: int, total: int, preview: Any) -> None:
        ctx.progress(step, total, preview)

    with ctx.models.use(model) as (loaded,):  # a handle's model stays loaded while it samples
        out = run(loaded, list(positive), list(negative), dict(latent), opts, ctx.devices, callback=progress,
                  lora_library=ctx.models.lora_library() if loaded.loras else None, samplers=ctx.samplers)
    return out  # type: ignore[return-value]



# ---- additions of this wave: each block belongs to one pack; add imports and ``__all__ += [...]`` in your block ----
# [custom sampling]
from .diffusion import sigmas as sigma_schedules  # noqa: E402
from .diffusion.custom_run import (add_noise, model_sigmas, run_custom, sampler_by_name,  # noqa: E402
                                    sampler_problem)
from .diffusion.custom_run import model_percent_sigma, sampler_with_options  # noqa: E402
from .diffusion.guiders import (BasicGuider, CFGGuider, DualCFGGuider, EmptyNoise, Guider, RandomNoise,  # noqa: E402
                                sample_custom)
from .diffusion.guiders import Sampler as CustomSampler  # noqa: E402

__all__ += ["add_noise", "BasicGuider", "CFGGuider", "CustomSampler", "DualCFGGuider", "EmptyNoise", "Guider",
            "model_sigmas", "RandomNoise", "run_custom", "sample_custom", "sampler_by_name", "sampler_problem",
            "sigma_schedules"]
__all__ += ["model_percent_sigma", "sampler_with_options"]
# [controlnet]
from .diffusion.controlnet import UNION_TYPES, ControlNet  # noqa: E402
from .diffusion.controlnet_files import ControlModel, controlnet_names, load_control_model  # noqa: E402
from .diffusion.preprocess import canny_edges  # noqa: E402

__all__ += ["canny_edges", "ControlModel", "ControlNet", "controlnet_names", "load_control_model", "UNION_TYPES"]
# [prompt text and model merging]
from .diffusion.checkpoint_save import save_checkpoint  # noqa: E402
from .diffusion.merging import MergePatch, merge_models  # noqa: E402
from .diffusion.text import encode_prompt  # noqa: E402

__all__ += ["encode_prompt", "merge_models", "MergePatch", "save_checkpoint"]
# [flow families]
from .diffusion.flow.loading import WEIGHT_DTYPES as FLOW_WEIGHT_DTYPES  # noqa: E402
from .diffusion.flow.public import (diffusion_model_names, encode_flux_text, load_diffusion_model,  # noqa: E402
                                    load_split_clip, text_encoder_names)
from .diffusion.flow.schedule import FlowSettings, flux_shift  # noqa: E402

__all__ += ["diffusion_model_names", "encode_flux_text", "FLOW_WEIGHT_DTYPES", "FlowSettings", "flux_shift",
            "load_diffusion_model", "load_split_clip", "text_encoder_names"]
# [video]
from .media import (AUDIO_FORMATS, MediaError, OutputFile, Video, VideoComponents, VideoFromComponents,  # noqa: E402
                    VideoFromFile, check_audio, encode_video, input_audio, input_videos, load_audio,
                    run_metadata, save_animated_png, save_animated_webp, save_audio, upload_combo)

__all__ += ["AUDIO_FORMATS", "check_audio", "encode_video", "input_audio", "input_videos", "load_audio", "MediaError",
            "OutputFile", "run_metadata", "save_animated_png", "save_animated_webp", "save_audio", "upload_combo",
            "Video", "VideoComponents", "VideoFromComponents", "VideoFromFile"]
# [training]
from .diffusion.lora import applied as loras_applied  # noqa: E402
from .provenance import HashCache  # noqa: E402
from .training.concepts import CONCEPTS, concept_dataset  # noqa: E402
from .training.explain import (denoise_trajectory, forward_noise, parse_timesteps, sampling_sigmas,  # noqa: E402
                               schedule_curves)
from .training.lora_train import (LOSSES, OPTIMIZERS, TARGETS, LoraFactors, LoraTrainer, TrainData,  # noqa: E402
                                  TrainSettings)
from .training.lora_files import TrainedLora, read_training_record, save_lora_file  # noqa: E402
from .training.plots import grid as image_grid  # noqa: E402
from .training.plots import line_plot  # noqa: E402

__all__ += ["CONCEPTS", "concept_dataset", "denoise_trajectory", "forward_noise", "HashCache", "image_grid",
            "line_plot", "LoraFactors", "loras_applied", "LoraTrainer", "LOSSES", "OPTIMIZERS", "parse_timesteps",
            "read_training_record", "sampling_sigmas", "save_lora_file", "schedule_curves", "TARGETS", "TrainData",
            "TrainedLora", "TrainSettings"]
# [model patches]
from .diffusion import patches as model_patches  # noqa: E402
from .diffusion.guiders import PerpNegGuider  # noqa: E402
from .diffusion.model_sampling import SAMPLINGS as DISCRETE_SAMPLINGS  # noqa: E402
from .diffusion.model_sampling import CONTINUOUS_SAMPLINGS, continuous_config, discrete_config  # noqa: E402
from .diffusion.patches import patches_of, with_patch  # noqa: E402

__all__ += ["CONTINUOUS_SAMPLINGS", "continuous_config", "discrete_config", "DISCRETE_SAMPLINGS", "model_patches",
            "patches_of", "PerpNegGuider", "with_patch"]
# [vision]
from .diffusion.style_models import StyleModel, apply_style, load_style_model  # noqa: E402
from .diffusion.unclip import UnclipCheckpoint, load_unclip_checkpoint  # noqa: E402
from .diffusion.unclip import parts as unclip_parts  # noqa: E402
from .diffusion.vision import ClipVision, ClipVisionOutput, load_clip_vision  # noqa: E402
from .diffusion.vision import encode as encode_clip_vision  # noqa: E402

__all__ += ["apply_style", "ClipVision", "ClipVisionOutput", "encode_clip_vision", "load_clip_vision",
            "load_style_model", "load_unclip_checkpoint", "StyleModel", "UnclipCheckpoint", "unclip_parts"]
# [sd3]
from .diffusion.flow.public import encode_sd3_text  # noqa: E402

__all__ += ["encode_sd3_text"]
# [qwen]
from .diffusion.qwen.edit import encode_qwen_edit  # noqa: E402

__all__ += ["encode_qwen_edit"]
# [ltx]
from .diffusion.ltx import guides as ltx_guides  # noqa: E402
from .diffusion.ltx.preprocess import ltx_preprocess  # noqa: E402
from .diffusion.ltx.sampling import ltx_sigmas  # noqa: E402

__all__ += ["ltx_guides", "ltx_preprocess", "ltx_sigmas"]
# [taesd gligen]
from .diffusion.taesd import TAES as TAESD_NAMES  # noqa: E402
from .diffusion.taesd import load_taesd, taesd_names, taesd_paths  # noqa: E402

from .diffusion.gligen import Box as GligenBox  # noqa: E402
from .diffusion.gligen import Gligen, load_gligen_file, phrase_embedding  # noqa: E402

from .diffusion.hypernetwork import Hypernetwork, load_hypernetwork  # noqa: E402

__all__ += ["Gligen", "GligenBox", "Hypernetwork", "load_gligen_file", "load_hypernetwork", "load_taesd",
            "phrase_embedding", "TAESD_NAMES", "taesd_names", "taesd_paths"]
# [flow gaps]
from .diffusion.flow.public import with_t5_options  # noqa: E402

__all__ += ["with_t5_options"]
# [flux2]
from .diffusion.flux2.sampling import flux2_sigmas  # noqa: E402
__all__ += ["flux2_sigmas"]
# [lumina]
from .diffusion.lumina.sampling import RenormCFG as RenormCFGPatch  # noqa: E402
from .diffusion.lumina.text import SYSTEM_PROMPTS as LUMINA2_SYSTEM_PROMPTS  # noqa: E402
from .diffusion.lumina.text import lumina2_prompt  # noqa: E402

__all__ += ["LUMINA2_SYSTEM_PROMPTS", "lumina2_prompt", "RenormCFGPatch"]
# [hidream]
from .diffusion.hidream.text import encode_hidream_text  # noqa: E402

__all__ += ["encode_hidream_text"]
# [cosmos auraflow]
# [hunyuan video]
# [ltx2]
from .diffusion.ltx2 import public as ltx2_public  # noqa: E402

__all__ += ["ltx2_public"]
# [flow loras]
from .diffusion.fp8 import is_scaled_fp8, unscale_fp8  # noqa: E402
from .diffusion.transformer_lora import LORA_FORMATS  # noqa: E402

__all__ += ["LORA_FORMATS", "is_scaled_fp8", "unscale_fp8"]
# [wan22]
from .diffusion.video_models.video_tiling import decode_tiled as decode_video_tiled  # noqa: E402
from .diffusion.video_models.video_tiling import encode_tiled as encode_video_tiled  # noqa: E402
from .diffusion.video_models.video_tiling import temporal_compression  # noqa: E402
__all__ += ["decode_video_tiled", "encode_video_tiled", "temporal_compression"]
# [svd]
from .diffusion.svd.files import SVDCheckpoint, load_svd_checkpoint  # noqa: E402
from .diffusion.svd.files import parts as svd_parts  # noqa: E402
from .diffusion.svd.guidance import with_video_cfg  # noqa: E402
from .diffusion.svd.save import save_svd_checkpoint  # noqa: E402

__all__ += ["load_svd_checkpoint", "save_svd_checkpoint", "SVDCheckpoint", "svd_parts", "with_video_cfg"]
# [stable cascade]
# [mochi]
from .diffusion.mochi.files import empty_latent as empty_mochi_latent  # noqa: E402

__all__ += ["empty_mochi_latent"]
# [hunyuan dit]
from .diffusion.hunyuan_dit.text import encode_hunyuan_dit_text  # noqa: E402

__all__ += ["encode_hunyuan_dit_text"]
# [dynamic inputs]
from .dynamic_inputs import MATCH_TYPE, Autogrow, DynamicCombo, FreeComboInput, MatchType  # noqa: E402

__all__ += ["MATCH_TYPE", "Autogrow", "DynamicCombo", "FreeComboInput", "MatchType"]
# [template utils]
from .expressions import ExpressionError, ExpressionLimits  # noqa: E402
from .expressions import evaluate as evaluate_expression  # noqa: E402
from .input_options import advanced, with_options  # noqa: E402

from .input_options import DisplayWidget  # noqa: E402
from .still_formats import STILL_FORMATS, encode_with_metadata  # noqa: E402

__all__ += ["advanced", "DisplayWidget", "encode_with_metadata", "evaluate_expression", "ExpressionError",
            "ExpressionLimits", "STILL_FORMATS", "with_options"]
# [ltx upsampler]
from .diffusion.ltx.upsampler import LatentUpscaleModel, load_latent_upscale_model  # noqa: E402
from .diffusion.ltx.upsampler import upsample_latent as ltx_upsample_latent  # noqa: E402
from .diffusion.ltx.upsampler import upscale_dtype as latent_upscale_dtype  # noqa: E402

__all__ += ["LatentUpscaleModel", "latent_upscale_dtype", "load_latent_upscale_model", "ltx_upsample_latent"]
# [core gaps]
from .diffusion.model_sampling import COMPUTE_DTYPES, CONTINUOUS_V_SAMPLINGS, with_compute_dtype  # noqa: E402

__all__ += ["COMPUTE_DTYPES", "CONTINUOUS_V_SAMPLINGS", "with_compute_dtype"]
# [zimage controlnet]
from .diffusion.lumina.controlnet import ZImageFunControl, control_context, load_model_patch  # noqa: E402

__all__ += ["ZImageFunControl", "control_context", "load_model_patch"]
# [slg dit]
from .diffusion.block_skip import SkipLayerGuidanceDiT as SkipLayerGuidanceDiTPatch  # noqa: E402
from .diffusion.block_skip import SkipLayerGuidanceDiTSimple as SkipLayerGuidanceDiTSimplePatch  # noqa: E402
from .diffusion.block_skip import parse_layers as parse_block_numbers  # noqa: E402
from .diffusion.block_skip import check_model as check_block_skip  # noqa: E402

__all__ += ["check_block_skip", "parse_block_numbers", "SkipLayerGuidanceDiTPatch", "SkipLayerGuidanceDiTSimplePatch"]
