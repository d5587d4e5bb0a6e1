"""Where each model family plugs into loading, text encoding and sampling: one table per plug point.

A family (Flux.1, SD3, Qwen-Image, Wan, LTX-Video, …) lives in its own modules; the generic code (UNETLoader,
CLIPLoader, VAELoader, CheckpointLoaderSimple, CLIPTextEncode, KSampler, SamplerCustomAdvanced) asks these tables
which module handles a file, a ``clip_type``, a text-encoder ``arch`` or a ``model.family``, instead of a chain of
``if`` statements in each place. Entries are ``"module:attribute"`` strings relative to ``nodegraph.diffusion``,
imported only when used, so a family costs nothing until one of its files is loaded.

Signatures each entry's attribute has:

- ``TRANSFORMER_FILES``: ``(is_fn(header) -> bool, load_fn(path, name, weight_dtype, dtype) -> DiffusionModel)``,
  asked in order for a diffusion-model file (UNETLoader); the Flux/SD3/Chroma detector runs after all of them.
- ``CHECKPOINT_FILES``: ``fn(path, name, dtype) -> Checkpoint | None`` for an all-in-one ``.safetensors``
  checkpoint (CheckpointLoaderSimple), asked in order before the SD detector.
- ``VAE_FILES``: ``(is_fn(keys) -> bool, from_state_fn(state, name) -> VAE)``, asked in order for a VAE file.
- ``CLIP_LOADERS``: ``clip_type -> fn(paths, names, dtype) -> TextEncoder`` (CLIPLoader/Dual/Triple/Quadruple).
- ``CLIP_FILES``: ``(is_fn(shapes) -> bool, load_fn(path, name, dtype) -> TextEncoder)``, asked in order for one
  file loaded with CLIPLoader's default type ``stable_diffusion`` (ComfyUI picks such encoders by their content).
- ``TEXT_ENCODERS``: ``TextEncoder.arch -> fn(clip, text, device, max_chunks) -> CONDITIONING``.
- ``DENOISERS``: ``model.family -> FlowDenoiser subclass`` for a transformer sampled by the shared flow loop
  (``flow.sampling.sample``/``flow.custom.sample_custom``).
- ``SAMPLERS``: ``model.family -> fn`` with ``flow.sampling.sample``'s signature, for a family with its own loop.
- ``CUSTOM_SAMPLERS``: ``model.family -> fn`` with ``flow.custom.sample_custom``'s signature, likewise.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

#: (detector, loader) of diffusion-model files, asked in order (before the Flux/SD3/Chroma detector).
TRANSFORMER_FILES: tuple[tuple[str, str], ...] = (
    ("split_unet:is_sd_unet", "split_unet:load_sd_unet"),  # [sd unet]
    ("qwen.loading:is_qwen_transformer", "qwen.loading:load_qwen_transformer"),  # [qwen]
    ("video_models.wan_files:is_wan_transformer", "video_models.wan_files:load_wan_transformer"),  # [wan]
    ("ltx.files:is_ltx_transformer", "ltx.files:load_ltx_transformer"),  # [ltx]
    ("hidream.loading:is_hidream_transformer", "hidream.loading:load_hidream_transformer"),  # [hidream]
    ("hunyuan_video.files:is_hunyuan_video_transformer",
     "hunyuan_video.files:load_hunyuan_video_transformer"),  # [hunyuan video]
    ("auraflow.loading:is_auraflow_transformer", "auraflow.loading:load_auraflow_transformer"),  # [auraflow]
    ("cosmos.loading:is_cosmos_transformer", "cosmos.loading:load_cosmos_transformer"),  # [cosmos]
    ("flux2.loading:is_flux2_transformer", "flux2.loading:load_flux2_transformer"),  # [flux2]
    ("lumina.loading:is_lumina_transformer", "lumina.loading:load_lumina_transformer"),  # [lumina] Z-Image, Lumina 2
    ("ltx2.files:is_ltx2_transformer", "ltx2.files:load_ltx2_transformer"),  # [ltx2]
    ("stable_cascade.files:is_cascade_unet", "stable_cascade.files:load_cascade_unet"),  # [stable cascade]
    ("mochi.files:is_mochi_transformer", "mochi.files:load_mochi_transformer"),  # [mochi]
    # [transformer files: add new families above this line]
)

#: All-in-one checkpoint readers, asked in order (each returns None for a file that is not its family's).
CHECKPOINT_FILES: tuple[str, ...] = (
    "flow.checkpoint:flow_checkpoint",  # [flux sd3]
    "ltx.checkpoint:ltx_checkpoint",  # [ltx]
    "auraflow.checkpoint:auraflow_checkpoint",  # [auraflow]
    "ltx2.checkpoint:ltx2_checkpoint",  # [ltx2]
    "lumina.checkpoint:lumina_checkpoint",  # [lumina] lumina_2.safetensors-style all-in-one files
    "stable_cascade.files:cascade_checkpoint",  # [stable cascade] stage C/B all-in-one files
    "svd.files:svd_checkpoint",  # [svd] MODEL + VAE, no text encoder (ImageOnlyCheckpointLoader adds CLIP_VISION)
    "mochi.checkpoint:mochi_checkpoint",  # [mochi] transformer + T5-XXL + VAE
    "hunyuan_dit.checkpoint:hunyuan_dit_checkpoint",  # [hunyuan dit] DiT + BERT + mT5-XL + VAE
    # [checkpoint files: add new families above this line]
)

#: (detector, reader) of VAE files that are not SD's 4-channel / Flux's 16-channel AutoencoderKL.
VAE_FILES: tuple[tuple[str, str], ...] = (
    ("video_models.wan_vae:is_wan_vae", "video_models.wan_vae:wan_vae_from_state"),  # [wan] (also Qwen-Image's)
    ("ltx.vae:is_ltx_vae", "ltx.vae:ltx_vae_from_state"),  # [ltx]
    ("hunyuan_video.vae:is_hunyuan_video_vae", "hunyuan_video.vae:hunyuan_video_vae_from_state"),  # [hunyuan video]
    ("flux2.vae:is_flux2_vae", "flux2.vae:flux2_vae_from_state"),  # [flux2]
    ("stable_cascade.files:is_stage_a", "stable_cascade.files:stage_a_from_state"),  # [stable cascade] stage A
    ("mochi.vae:is_mochi_vae", "mochi.vae:mochi_vae_from_state"),  # [mochi]
    # [vae files: add new families above this line]
)

#: CLIPLoader ``type`` -> loader of its text encoder files (types not here: flow.loading's CLIP-L/G/T5 path).
CLIP_LOADERS: dict[str, str] = {
    "sdxl": "sdxl_clip:load_sdxl_clip",
    "wan": "video_models.wan_text:load_wan_clip",
    "ltxv": "ltx.text:load_ltxv_clip",
    "qwen_image": "qwen.loading:load_qwen_clips",
    "hidream": "hidream.loading:load_hidream_clips",
    "hunyuan_video": "hunyuan_video.text:load_hunyuan_clip",
    "cosmos": "cosmos.loading:load_cosmos_clip",  # [cosmos] (also AuraFlow's Pile-T5-XL, as ComfyUI)
    "flux2": "flux2.loading:load_flux2_clips",
    "lumina2": "lumina.loading:load_lumina_clips",
    "stable_cascade": "stable_cascade.files:load_cascade_clips",  # [stable cascade] CLIP-G
    "mochi": "mochi.text:load_mochi_clip",  # [mochi] T5-XXL
    # [clip loaders: add new types above this line]
}

#: (detector, loader) of single text-encoder files that CLIPLoader type stable_diffusion loads by content.
CLIP_FILES: tuple[tuple[str, str], ...] = (
    ("auraflow.loading:is_pile_t5", "auraflow.loading:load_pile_t5_clip"),  # [auraflow] Pile-T5-XL
    # [clip files: add new families above this line]
)

#: TextEncoder.arch -> its prompt encoder (archs not here: SD's CLIP path in text.py).
TEXT_ENCODERS: dict[str, str] = {
    "flux": "flow.text:encode_flow",
    "sd3": "flow.text:encode_flow",
    "chroma": "flow.text:encode_flow",
    "wan": "video_models.wan_text:encode_wan",
    "ltxv": "ltx.text:encode_ltxv",
    "qwen_image": "qwen.text:encode_qwen_prompt",
    "hidream": "hidream.text:encode_hidream_prompt",
    "hunyuan_video": "hunyuan_video.text:encode_hunyuan_video",
    "auraflow": "auraflow.text:encode_auraflow",
    "cosmos": "cosmos.text:encode_cosmos",
    "flux2": "flux2.text:encode_flux2",
    "z_image": "lumina.text:encode_z_image",
    "lumina2": "lumina.text:encode_lumina2",
    "ltx2": "ltx2.text:encode_ltx2",
    "stable_cascade": "stable_cascade.text:encode_cascade",  # [stable cascade]
    "mochi": "mochi.text:encode_mochi",  # [mochi]
    "hunyuan_dit": "hunyuan_dit.text:encode_hunyuan_dit",  # [hunyuan dit]
    # [text encoders: add new archs above this line]
}

#: model.family -> its FlowDenoiser subclass (families not here: FlowDenoiser itself, Flux/SD3/Chroma).
DENOISERS: dict[str, str] = {
    "qwen_image": "qwen.sampling:QwenDenoiser",
    "hidream": "hidream.sampling:HiDreamDenoiser",
    "hunyuan_video": "hunyuan_video.sampling:HunyuanVideoDenoiser",
    "auraflow": "auraflow.sampling:AuraDenoiser",
    "cosmos_rf": "cosmos.sampling:CosmosDenoiser",  # [cosmos] the rectified-flow view the loop samples
    "flux2": "flux2.sampling:Flux2Denoiser",
    "z_image": "lumina.sampling:ZImageDenoiser",
    "lumina2": "lumina.sampling:Lumina2Denoiser",
    "mochi": "mochi.sampling:MochiDenoiser",  # [mochi]
    # [denoisers: add new families above this line]
}

#: model.family -> its own KSampler loop (families not here: flow.sampling.sample's shared loop).
SAMPLERS: dict[str, str] = {
    "wan": "video_models.wan_sampling:sample",
    "ltxv": "ltx.sampling:sample",
    "cosmos": "cosmos.sampling:sample",  # [cosmos] EDM sigmas → t, then the shared loop
    "ltx2": "ltx2.sampling:sample",
    "svd": "svd.sampling:sample",  # [svd] clips [F, 4, h, w] on the k-diffusion samplers
    "stable_cascade": "stable_cascade.sampling:sample",  # [stable cascade] EPS + cosine schedule, k-samplers
    "hunyuan_dit": "hunyuan_dit.sampling:sample",  # [hunyuan dit] a UNet view on the SD path
    # [samplers: add new families above this line]
}

#: model.family -> its own SamplerCustomAdvanced loop (families not here: flow.custom.sample_custom).
CUSTOM_SAMPLERS: dict[str, str] = {
    "wan": "video_models.wan_custom:sample_custom",
    "ltxv": "ltx.sampling:sample_custom",
    "cosmos": "cosmos.sampling:sample_custom",  # [cosmos] EDM sigmas → t, then the shared loop
    "ltx2": "ltx2.sampling:sample_custom",
    "svd": "svd.sampling:sample_custom",  # [svd]
    "stable_cascade": "stable_cascade.sampling:sample_custom",  # [stable cascade]
    "hunyuan_dit": "hunyuan_dit.sampling:sample_custom",  # [hunyuan dit]
    # [custom samplers: add new families above this line]
}


def resolve(ref: str) -> Any:
    """The attribute a ``"module:attribute"`` entry names (module relative to ``nodegraph.diffusion``)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(f"nodegraph.diffusion.{module}"), attr)


def lookup(table: dict[str, str], key: str) -> Callable[..., Any] | None:
    """The resolved entry of ``table`` for ``key``, or None when the key has no entry."""
    ref = table.get(key)
    return None if ref is None else resolve(ref)


def transformer_loader(header: Any) -> Callable[..., Any] | None:
    """The loader of the first family in ``TRANSFORMER_FILES`` whose detector accepts ``header``, else None."""
    for is_ref, load_ref in TRANSFORMER_FILES:
        if resolve(is_ref)(header):
            return resolve(load_ref)
    return None


def clip_file_loader(shapes: dict[str, Any]) -> Callable[..., Any] | None:
    """The loader of the first family in ``CLIP_FILES`` whose detector accepts the tensor shapes, else None."""
    for is_ref, load_ref in CLIP_FILES:
        if resolve(is_ref)(shapes):
            return resolve(load_ref)
    return None


def vae_reader(keys: list[str]) -> Callable[..., Any] | None:
    """The reader of the first family in ``VAE_FILES`` whose detector accepts the tensor names, else None."""
    for is_ref, read_ref in VAE_FILES:
        if resolve(is_ref)(keys):
            return resolve(read_ref)
    return None


def checkpoint(path: Any, name: str, dtype: Any) -> Any:
    """The all-in-one checkpoint of the first family in ``CHECKPOINT_FILES`` that reads ``path``, else None."""
    for ref in CHECKPOINT_FILES:
        found = resolve(ref)(path, name, dtype)
        if found is not None:
            return found
    return None


__all__ = ["checkpoint", "CHECKPOINT_FILES", "clip_file_loader", "CLIP_FILES", "CLIP_LOADERS", "CUSTOM_SAMPLERS",
           "DENOISERS", "lookup", "resolve", "SAMPLERS", "TEXT_ENCODERS", "TRANSFORMER_FILES", "transformer_loader",
           "VAE_FILES", "vae_reader"]
