"""ComfyUI's fp8_scaled files (float8 weights with ``.scale_weight``/``.weight_scale``, the ``scaled_fp8`` marker and
``.scale_input``) load for every transformer family and for T5, with the weights within fp8 rounding of the
originals — a file read without its scales would be off by the scale (hundreds of times)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from nodegraph.diffusion.fp8 import is_scaled_fp8, unscale_fp8

FP8 = getattr(torch, "float8_e4m3fn", None)
pytestmark = pytest.mark.skipif(FP8 is None, reason="this torch has no float8_e4m3fn")


def quantise(state: dict, spelling: str = "scale_weight", per_row: bool = False, prefix: str = "") -> dict:
    """``state`` as ComfyUI's fp8_scaled files store it: 2-D weights in float8 with their scales."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2 and value.numel() >= 256:
            amax = value.abs().amax(dim=1) if per_row else value.abs().max()
            scale = (amax / 448.0).clamp(min=1e-12).float()
            q = (value / (scale[:, None] if per_row else scale)).to(FP8)
            out[key] = q
            out[key[: -len("weight")] + spelling] = scale
            out[key[: -len("weight")] + ("input_scale" if spelling == "weight_scale" else "scale_input")] = \
                torch.ones(())
        else:
            out[key] = value.contiguous()
    out[prefix + "scaled_fp8"] = torch.empty(0, dtype=FP8)
    return out


def assert_within_fp8(loaded: dict, reference: dict) -> None:
    """Every weight within fp8 e4m3 rounding (3 mantissa bits) of the original; some of them actually rounded."""
    assert set(loaded) == set(reference), sorted(set(loaded) ^ set(reference))[:5]
    rounded = 0
    for key, ref in reference.items():
        got = loaded[key].float()
        err = (got - ref.float()).abs()
        bound = ref.float().abs() * 2.0 ** -4 + ref.float().abs().max() / 448 * 2.0 ** -9 + 1e-7
        assert bool((err <= bound).all()), (key, float(err.max()))
        rounded += int(not torch.equal(got, ref.float()))
    assert rounded >= 4


def _load(tmp_path: Path, state: dict, name: str):
    from safetensors.torch import save_file

    from nodegraph.diffusion.flow.loading import load_transformer

    path = tmp_path / name
    save_file(state, str(path))
    return load_transformer(path, name)


def _tiny(module: str, cls: str):
    import diffusers

    torch.manual_seed(0)
    t = getattr(diffusers, cls)(**importlib.import_module(module).TRANSFORMER).eval()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return t


def test_unscale_fp8_multiplies_by_the_scales_and_drops_the_markers():
    w = torch.randn(16, 32)
    state = quantise({"a.weight": w, "a.bias": torch.randn(16)}, per_row=True)
    assert is_scaled_fp8(state) and not is_scaled_fp8({"a.weight": w})
    out = unscale_fp8(dict(state), torch.float32)
    assert set(out) == {"a.weight", "a.bias"}
    assert torch.equal(out["a.weight"], state["a.weight"].float() * state["a.scale_weight"][:, None])
    assert float((out["a.weight"] - w).abs().max()) <= float(w.abs().max()) * 2.0 ** -4
    plain = {"x.weight": torch.randn(4, 4)}
    assert unscale_fp8(plain) is plain


def test_flux_fp8_scaled_loads_within_fp8_rounding(tmp_path):
    """flux1-dev-fp8-scaled: ComfyUI's layout under model.diffusion_model., fused qkv scaled as one tensor."""
    from nodegraph.diffusion.flow.convert import to_original

    t = _tiny("flux_tiny", "FluxTransformer2DModel")
    original = {"model.diffusion_model." + k: v for k, v in to_original(t.state_dict()).items()}
    model = _load(tmp_path, quantise(original, prefix="model.diffusion_model."), "flux-tiny-fp8-scaled.safetensors")
    assert model.family == "flux"
    assert_within_fp8(model.unet.state_dict(), t.state_dict())


def test_sd3_fp8_scaled_loads_within_fp8_rounding(tmp_path):
    from sd3_tiny import to_original

    t = _tiny("sd3_tiny", "SD3Transformer2DModel")
    model = _load(tmp_path, quantise(to_original(t.state_dict())), "sd3.5-tiny-fp8-scaled.safetensors")
    assert model.family == "sd3"
    assert_within_fp8(model.unet.state_dict(), t.state_dict())


def test_wan_fp8_scaled_loads_within_fp8_rounding(tmp_path):
    """Wan with newer ComfyUI's spelling (``.weight_scale``, ``.input_scale``) and one scale per output row."""
    from wan_tiny import to_original

    t = _tiny("wan_tiny", "WanTransformer3DModel")
    original = {"model.diffusion_model." + k: v for k, v in to_original(t.state_dict()).items()}
    state = quantise(original, "weight_scale", per_row=True, prefix="model.diffusion_model.")
    model = _load(tmp_path, state, "wan2.1-tiny-fp8-scaled.safetensors")
    assert model.family == "wan"
    assert_within_fp8(model.unet.state_dict(), t.state_dict())


def test_ltx_and_qwen_fp8_scaled_load_within_fp8_rounding(tmp_path):
    from ltx_tiny import transformer_to_original

    t = _tiny("ltx_tiny", "LTXVideoTransformer3DModel")
    model = _load(tmp_path, quantise(transformer_to_original(t.state_dict()), prefix="model.diffusion_model."),
                  "ltxv-tiny-fp8-scaled.safetensors")
    assert model.family == "ltxv"
    assert_within_fp8(model.unet.state_dict(), t.state_dict())
    q = _tiny("qwen_tiny", "QwenImageTransformer2DModel")
    model = _load(tmp_path, quantise(q.state_dict()), "qwen-tiny-fp8-scaled.safetensors")
    assert model.family == "qwen_image"
    assert_within_fp8(model.unet.state_dict(), q.state_dict())


def test_t5_fp8_scaled_text_encoder_loads_within_fp8_rounding(tmp_path):
    """t5xxl_fp8_e4m3fn_scaled (the text encoder of Flux, SD3 and Chroma)."""
    from flux_tiny import T5
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    from nodegraph.diffusion.flow.loading import load_text_encoder

    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(**T5)).eval()
    state = {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    path = tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(quantise(state), str(path))
    kind, model = load_text_encoder(path, path.name)
    assert kind == "t5xxl"
    assert_within_fp8(model.state_dict(), t5.state_dict())


def test_umt5_fp8_scaled_text_encoder_loads_within_fp8_rounding(tmp_path):
    """umt5_xxl_fp8_e4m3fn_scaled (the text encoder of ComfyUI's Wan examples), vocabulary tensor kept."""
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel
    from wan_tiny import UMT5, spiece_model

    from nodegraph.diffusion.video_models.wan_text import SPIECE_KEY, load_umt5, tokenizer_from

    spiece = spiece_model()
    torch.manual_seed(0)
    umt5 = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer_from(spiece, None, "tiny")), **UMT5)).eval()
    state = {k: v.contiguous().clone() for k, v in umt5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    state = quantise(state)
    state[SPIECE_KEY] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    path = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(state, str(path))
    _, model = load_umt5(path, path.name)
    assert_within_fp8(model.state_dict(), umt5.state_dict())
