"""Loaders for split model files: diffusion models and text encoders (ComfyUI's UNETLoader/CLIPLoader family).

Files are listed from both of ComfyUI's folder names of each pair (``diffusion_models`` + ``unet``,
``text_encoders`` + ``clip``). Flux.1 and SD3/SD3.5 load now (transformers in ComfyUI, original or diffusers layout;
CLIP-L, CLIP-G and T5-XXL text encoders), and SD1.x/SD2.x/SDXL UNets saved alone (LDM or diffusers names, detected like
checkpoints: ``nodegraph.diffusion.split_unet``); other types are refused naming what is supported.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    FLOW_WEIGHT_DTYPES,
    Combo,
    ModelCombo,
    Node,
    Output,
    diffusion_model_names,
    file_fingerprint,
    hookimpl,
    load_diffusion_model,
    load_split_clip,
    model_path,
    text_encoder_names,
)

#: ComfyUI's CLIPLoader ``type`` options, and those DualCLIPLoader offers.
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis",
              "longcat_image", "cogvideox")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15",
                   "kandinsky5", "kandinsky5_image", "ltxv", "newbie", "ace")
#: The types this version loads, per loader.
SUPPORTED = {"CLIPLoader": ("stable_diffusion", "sd3", "qwen_image", "wan", "ltxv", "chroma",
                            "hidream",  # [hidream]
                            "lumina2",  # [lumina] Z-Image's Qwen3-4B or Lumina 2's Gemma-2-2B
                            "flux2",  # [flux2]
                            "stable_cascade",  # [stable cascade] CLIP-G
                            "cosmos",  # [cosmos]
                            "mochi"),  # [mochi] T5-XXL
             "DualCLIPLoader": ("sdxl", "flux", "sd3",
                                "hunyuan_video",  # [hunyuan video]
                                "ltxv",  # [ltx2] Gemma-3 + the LTX-2 checkpoint (as LTXAVTextEncoderLoader)
                                "hidream")}  # [hidream]
DEVICES = ("default", "cpu")


def _paths(config: Any, names: list[str]) -> list[Any]:
    out = []
    for folder_pair, name in names:
        for folder in folder_pair:
            try:
                path = model_path(config, folder, name)
            except (OSError, ValueError):
                continue
            if path.exists():
                out.append(path)
                break
    return out


class _SplitFileNode(Node):
    """A node reading split model files: their fingerprints key the cache and their paths go into provenance."""

    FILE_INPUTS: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def _files(cls, config: Any, constants: dict[str, Any]) -> list[Any]:
        return _paths(config, [(folders, str(constants.get(name))) for name, folders in cls.FILE_INPUTS])

    @classmethod
    def fingerprint(cls, config, **constants):
        try:
            return tuple(file_fingerprint(p) for p in cls._files(config, constants))
        except (OSError, ValueError):
            return ("missing", tuple(constants.get(n) for n, _ in cls.FILE_INPUTS))

    @classmethod
    def model_files(cls, config, **constants):
        return [str(p) for p in cls._files(config, constants)]

    @classmethod
    def _check_type(cls, clip_type: str) -> None:
        supported = SUPPORTED[cls.__name__]
        if clip_type not in supported:
            raise ValueError(f"{cls.__name__} type {clip_type!r} is not supported in this version; supported: "
                             f"{', '.join(supported)}"
                             + ("; for Flux use DualCLIPLoader with type flux" if cls.__name__ != "DualCLIPLoader"
                                else ""))


_UNET = ("diffusion_models", "unet")
_TEXT = ("text_encoders", "clip")


class UNETLoader(_SplitFileNode):
    """Load a diffusion model file (Flux.1/SD3 transformer, SD1/SD2/SDXL UNet) from models/diffusion_models or unet."""

    DISPLAY_NAME = "Load Diffusion Model"
    CATEGORY = "advanced/loaders"
    FILE_INPUTS = (("unet_name", _UNET),)
    INPUTS = {"unet_name": ModelCombo("diffusion_models", diffusion_model_names,
                                      tooltip="a diffusion model file (.safetensors) in models/diffusion_models or "
                                              "models/unet"),
              "weight_dtype": Combo(FLOW_WEIGHT_DTYPES, tooltip="fp8 keeps the weights in 8 bits (half the memory) "
                                                                "and computes in the device's dtype")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, unet_name: str, weight_dtype: str):
        return (load_diffusion_model(ctx, unet_name, weight_dtype),)


class CLIPLoader(_SplitFileNode):
    """Load one text encoder file as a CLIP of the given type."""

    DISPLAY_NAME = "Load CLIP"
    CATEGORY = "advanced/loaders"
    FILE_INPUTS = (("clip_name", _TEXT),)
    INPUTS = {"clip_name": ModelCombo("text_encoders", text_encoder_names),
              "type": Combo(CLIP_TYPES),
              "device": Combo(DEVICES, optional=True)}
    OUTPUTS = (Output("CLIP"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        try:
            cls._check_type(str(constants.get("type", "stable_diffusion")))
        except ValueError as exc:
            return [("type", str(exc))]
        return []

    def execute(self, ctx, clip_name: str, type: str, device: str = "default"):
        self._check_type(type)
        return (load_split_clip(ctx, [clip_name], type),)


class DualCLIPLoader(CLIPLoader):
    """Load two text encoder files as one CLIP (Flux: CLIP-L + T5-XXL; SD3: two of CLIP-L, CLIP-G, T5-XXL)."""

    DISPLAY_NAME = "DualCLIPLoader"
    FILE_INPUTS = (("clip_name1", _TEXT), ("clip_name2", _TEXT))
    INPUTS = {"clip_name1": ModelCombo("text_encoders", text_encoder_names),
              "clip_name2": ModelCombo("text_encoders", text_encoder_names),
              "type": Combo(DUAL_CLIP_TYPES),
              "device": Combo(DEVICES, optional=True)}

    def execute(self, ctx, clip_name1: str, clip_name2: str, type: str, device: str = "default"):
        self._check_type(type)
        return (load_split_clip(ctx, [clip_name1, clip_name2], type),)


class TripleCLIPLoader(_SplitFileNode):
    """Load three text encoder files as one CLIP (SD3: CLIP-L + CLIP-G + T5-XXL)."""

    DISPLAY_NAME = "TripleCLIPLoader"
    CATEGORY = "advanced/loaders"
    FILE_INPUTS = (("clip_name1", _TEXT), ("clip_name2", _TEXT), ("clip_name3", _TEXT))
    INPUTS = {"clip_name1": ModelCombo("text_encoders", text_encoder_names),
              "clip_name2": ModelCombo("text_encoders", text_encoder_names),
              "clip_name3": ModelCombo("text_encoders", text_encoder_names)}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx, clip_name1: str, clip_name2: str, clip_name3: str):
        return (load_split_clip(ctx, [clip_name1, clip_name2, clip_name3], "sd3"),)


@hookimpl
def nodegraph_nodes():
    """The split-file loaders."""
    return [UNETLoader, CLIPLoader, DualCLIPLoader, TripleCLIPLoader]
