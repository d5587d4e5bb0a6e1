"""ComfyUI's "fp8_scaled" files, dequantised at load for every family (transformers and text encoders).

Such a file (``flux1-dev-fp8-scaled``, ``wan2.1_*_fp8_scaled``, ``sd3.5_large_fp8_scaled``,
``t5xxl_fp8_e4m3fn_scaled``, ``umt5_xxl_fp8_e4m3fn_scaled``, …) stores each big ``X.weight`` in float8 with a
float32 ``X.scale_weight`` (a scalar, or one scale per output row), the real weight being ``weight · scale``; a
``scaled_fp8`` marker tensor and ``X.scale_input`` (input scales for fp8 matmuls) come with it. Newer ComfyUI files
spell the scale ``X.weight_scale`` (with ``X.input_scale`` and a ``X.comfy_quant`` description). ``unscale_fp8``
multiplies each weight by its scale in float32, casts it to the compute dtype and drops the markers, so the loaders
place ordinary weights (to store them in 8 bits again, use UNETLoader's ``weight_dtype`` fp8_e4m3fn).
"""

from __future__ import annotations

from typing import Any

_SCALES = (".scale_weight", ".weight_scale")
_MARKERS = (".scale_input", ".input_scale", ".comfy_quant", "scaled_fp8")


def is_scaled_fp8(keys: Any) -> bool:
    """Whether tensor names (a state dict or header names) are those of a ComfyUI fp8_scaled file."""
    return any(k.endswith(_SCALES) or k.endswith("scaled_fp8") for k in keys)


def _is_float8(t: Any) -> bool:
    return "float8" in str(getattr(t, "dtype", ""))


def unscale_fp8(state: dict[str, Any], dtype: Any = None) -> dict[str, Any]:
    """``state`` with each scaled float8 weight replaced by ``weight · scale`` in ``dtype`` (None: float32) and the
    scale/marker tensors removed (in place; returned). A state dict of another kind passes unchanged."""
    import torch

    if not is_scaled_fp8(state):
        return state
    out_dtype = dtype or torch.float32
    for key in [k for k in state if k.endswith(_SCALES)]:
        weight_key = key[: key.rfind(".")] + ".weight"
        weight = state.get(weight_key)
        if weight is None or not _is_float8(weight):
            continue  # a model's own tensor that happens to be named so
        scale = state.pop(key).float()
        if scale.numel() > 1 and scale.dim() <= 2 and scale.shape[0] == weight.shape[0]:
            scale = scale.reshape(weight.shape[0], *([1] * (weight.dim() - 1)))  # one scale per output row
        state[weight_key] = (weight.float() * scale).to(out_dtype)
    for key in [k for k in state if k.endswith(_MARKERS)]:
        del state[key]
    return state


__all__ = ["is_scaled_fp8", "unscale_fp8"]
