"""Where node classes we lack come from: ComfyUI model families not yet supported, and well-known custom-node packs.

Used by validation to say, for an unknown ``class_type``, which plugin or model family provides it.
"""

from __future__ import annotations

_FAMILIES = ("a model family not yet supported (Stable Zero123/SV3D, Hunyuan Image, "
             "Kandinsky 5)")
_VIDEO_MODELS = "a video model family not yet supported (HunyuanVideo 1.5, CogVideoX)"

#: class_type → who provides it (none of these may be a registered node: tests/core/test_file_formats.py).
KNOWN_CLASSES: dict[str, str] = {
    **dict.fromkeys(("StableZero123_Conditioning", "StableZero123_Conditioning_Batched", "SV3D_Conditioning",
                     "EmptyHunyuanImageLatent"), _FAMILIES),
    **dict.fromkeys(("HunyuanVideo15ImageToVideo", "EmptyHunyuanVideo15Latent"),
                    _VIDEO_MODELS),
    **dict.fromkeys(("FaceDetailer", "DetailerForEach", "UltralyticsDetectorProvider", "SAMLoader",
                     "ImpactWildcardProcessor", "BboxDetectorSEGS", "SEGSDetailer"),
                    "the custom-node pack ComfyUI-Impact-Pack"),
    **dict.fromkeys(("IPAdapterModelLoader", "IPAdapterUnifiedLoader", "IPAdapterAdvanced", "IPAdapter",
                     "IPAdapterFaceID", "IPAdapterEncoder"), "the custom-node pack ComfyUI_IPAdapter_plus"),
    **dict.fromkeys(("Image Save", "Text Multiline", "Text Concatenate", "Image Resize", "Number to Int",
                     "CLIPTextEncode (NSP)"), "the custom-node pack was-node-suite-comfyui"),
    **dict.fromkeys(("Power Lora Loader (rgthree)", "Seed (rgthree)", "Context (rgthree)",
                     "Fast Groups Muter (rgthree)", "Image Comparer (rgthree)", "Display Any (rgthree)"),
                    "the custom-node pack rgthree-comfy"),
    **dict.fromkeys(("VHS_VideoCombine", "VHS_LoadVideo", "VHS_LoadVideoPath", "VHS_LoadImagesPath",
                     "VHS_SplitImages"), "the custom-node pack ComfyUI-VideoHelperSuite"),
    **dict.fromkeys(("CannyEdgePreprocessor", "DWPreprocessor", "OpenposePreprocessor", "DepthAnythingPreprocessor",
                     "LineArtPreprocessor", "Zoe-DepthMapPreprocessor", "AIO_Preprocessor", "MiDaS-DepthMapPreprocessor"),
                    "the custom-node pack comfyui_controlnet_aux"),
}


def provider_of(class_type: str) -> str | None:
    """Who provides ``class_type`` (a model family or a custom-node pack), or None when we do not know."""
    known = KNOWN_CLASSES.get(class_type)
    if known is not None:
        return known
    if class_type.startswith("VHS_"):
        return KNOWN_CLASSES["VHS_VideoCombine"]
    if class_type.endswith("(rgthree)"):
        return KNOWN_CLASSES["Seed (rgthree)"]
    return None
