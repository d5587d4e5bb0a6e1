"""HypernetworkLoader (A1111 hypernetworks, ComfyUI's attn1/attn2 patch) on the tiny SD model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from graphs import make_engine, run, txt2img
from safetensors.torch import save_file

from nodegraph.diffusion.hypernetwork import Hypernetwork, install, load_hypernetwork


def _tensors(widths: tuple[int, ...], seed: int = 0, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A1111's layout flattened: ``<width>.<0|1>.linear.<i>.weight|bias``: Linear, ReLU, LayerNorm, Linear, LayerNorm
    (A1111's Sequential indices with ``activation_func=relu, is_layer_norm=True``)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for w in widths:
        for index in (0, 1):
            for i, (o, n) in ((0, (2 * w, w)), (2, (2 * w, 0)), (3, (w, 2 * w)), (4, (w, 0))):
                if n:
                    out[f"{w}.{index}.linear.{i}.weight"] = torch.randn(o, n, generator=g) * scale
                else:
                    out[f"{w}.{index}.linear.{i}.weight"] = 1 + torch.randn(o, generator=g) * 0.1
                out[f"{w}.{index}.linear.{i}.bias"] = torch.randn(o, generator=g) * 0.1
    return out


META = {"activation_func": "relu", "is_layer_norm": "True", "use_dropout": "False", "activate_output": "False"}


def test_processor_transforms_key_and_value_inputs_as_comfyui(tmp_path):
    path = tmp_path / "h.safetensors"
    save_file(_tensors((16, 24)), str(path), metadata=META)
    nets = load_hypernetwork(path)
    # ComfyUI counts the layer norms when it finds the last layer, so the last Linear gets its activation too
    assert [type(m).__name__ for m in nets["16"][0]] == ["Linear", "ReLU", "LayerNorm", "Linear", "ReLU", "LayerNorm"]
    torch.manual_seed(1)
    attn = Attention(16, cross_attention_dim=24, heads=2, dim_head=8).eval()
    unet = torch.nn.Module()  # stand-in: install patches the attentions of BasicTransformerBlocks
    from diffusers.models.attention import BasicTransformerBlock

    unet.block = BasicTransformerBlock(16, 2, 8, cross_attention_dim=24).eval()
    unet.block.attn2 = attn
    h, c = torch.randn(2, 10, 16), torch.randn(2, 7, 24)
    with torch.no_grad():
        plain = attn(h, encoder_hidden_states=c)
        with install(unet, [Hypernetwork("h", nets, 0.7)]):
            got = attn(h, encoder_hidden_states=c)
        k_in, v_in = c + nets["24"][0](c) * 0.7, c + nets["24"][1](c) * 0.7  # ComfyUI: k + hn[0](k) * strength
        q, k, v = (t.view(2, -1, 2, 8).transpose(1, 2) for t in (attn.to_q(h), attn.to_k(k_in), attn.to_v(v_in)))
        want = attn.to_out[0](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, -1, 16))
        assert attn(h, encoder_hidden_states=c).equal(plain)  # removed after the run
    assert (got - want).abs().max() < 1e-5 and (got - plain).abs().max() > 1e-2


def test_hypernetwork_loader_changes_the_image_and_strength_zero_does_not(tiny_sd):
    folder = tiny_sd.models_dir / "hypernetworks"
    folder.mkdir(parents=True, exist_ok=True)
    unet = tiny_sd.components["unet"]
    widths = (32, 64, int(unet.config.cross_attention_dim))
    save_file(_tensors(tuple(sorted(set(widths)))), str(folder / "tiny-hyper.safetensors"), metadata=META)
    engine = make_engine(tiny_sd.config)

    def image(strength):
        wf = txt2img(steps=2)
        if strength is not None:
            wf["hn"] = {"class_type": "HypernetworkLoader", "inputs": {
                "model": ["ckpt", 0], "hypernetwork_name": "tiny-hyper.safetensors", "strength": strength}}
            wf["ks"]["inputs"]["model"] = ["hn", 0]
        result, cap = run(engine, wf)
        result.raise_for_status()
        return cap["img"]

    plain, zero, full = image(None), image(0.0), image(1.0)
    assert (zero - plain).abs().max() < 1e-5
    assert (full - plain).abs().max() > 0.02


def test_bad_hypernetwork_files_are_refused(tmp_path):
    path = tmp_path / "h.safetensors"
    save_file(_tensors((16,)), str(path), metadata={**META, "activation_func": "gelu"})
    with pytest.raises(ValueError, match="activation 'gelu'"):
        load_hypernetwork(path)
    save_file({"x.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError):
        load_hypernetwork(path)
