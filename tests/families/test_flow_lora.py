"""LoRAs on transformer families: a tiny random LoRA in each file format people have (diffusers/PEFT, kohya,
ComfyUI ``diffusion_model.*``) gives the weights diffusers' ``load_lora_weights`` + ``fuse_lora`` gives on the same
tiny transformer; strength 0 is no LoRA; LoraLoaderModelOnly on Flux in a graph gives FluxPipeline's image with the
LoRA fused; a LoRA for another family is refused naming the file, the count and the family."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from nodegraph.diffusion import lora as lora_mod
from nodegraph.diffusion.lora import parse_lora
from nodegraph.diffusion.types import DiffusionModel, LoraPatch

RANK = 4


def _pair(state: dict, prefix: str, out: int, inp: int, style: str = "peft", alpha: float | None = None,
          gen: torch.Generator | None = None) -> tuple:
    down = torch.randn(RANK, inp, generator=gen) * 0.1
    up = torch.randn(out, RANK, generator=gen) * 0.1
    a, b = {"peft": ("lora_A", "lora_B"), "kohya": ("lora_down", "lora_up")}[style]
    state[f"{prefix}.{a}.weight"], state[f"{prefix}.{b}.weight"] = down, up
    if alpha is not None:
        state[f"{prefix}.alpha"] = torch.tensor(alpha)
    return down, up


def _shape(t: torch.nn.Module, name: str) -> tuple[int, int]:
    w = dict(t.named_modules())[name].weight
    return int(w.shape[0]), int(w.shape[1])


def peft_lora(t: torch.nn.Module, names: list[str], seed: int = 1) -> dict:
    """diffusers/PEFT names: ``transformer.<module>.lora_A/lora_B.weight`` for ``names``."""
    gen, state = torch.Generator().manual_seed(seed), {}
    for name in names:
        _pair(state, f"transformer.{name}", *_shape(t, name), gen=gen)
    return state


def ours(t0: torch.nn.Module, state: dict, strength: float = 1.0, family: str = "x") -> torch.nn.Module:
    """A copy of ``t0`` with the LoRA applied as sampling applies it (lora.applied's patch machinery)."""
    t = copy.deepcopy(t0)
    weights = parse_lora(state, "tiny-lora.safetensors")
    saved: dict = {}
    lora_mod._apply_lora(LoraPatch("tiny-lora.safetensors", "-", strength), lora_mod.unet_targets(t), "unet",
                         _Library(weights), saved, family)
    return t


class _Library:
    def __init__(self, weights) -> None:
        self.weights = weights

    def get(self, path, allow_pickle=False):
        return self.weights


def theirs(t0: torch.nn.Module, pipeline: str, state: dict, strength: float = 1.0) -> torch.nn.Module:
    """A copy of ``t0`` after diffusers' ``load_lora_weights`` + ``fuse_lora`` (the oracle)."""
    import diffusers

    t = copy.deepcopy(t0)
    cls = getattr(diffusers, pipeline)
    import inspect

    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    pipe = cls(**{p: (t if p == "transformer" else None) for p in params})
    pipe.load_lora_weights({k: v.clone() for k, v in state.items()})
    pipe.fuse_lora(lora_scale=strength)
    pipe.unload_lora_weights()
    return t


def assert_same(a: torch.nn.Module, b: torch.nn.Module, base: torch.nn.Module, changed: int) -> None:
    sa, sb, s0 = a.state_dict(), b.state_dict(), base.state_dict()
    assert set(sa) == set(sb)
    worst = max(float((sa[k] - sb[k]).abs().max()) for k in sa)
    assert worst <= 1 / 255, worst
    moved = [k for k in sa if not torch.equal(sa[k], s0[k])]
    assert len(moved) == changed, moved


# ---- per family: the tiny transformer, diffusers' pipeline, and files in several formats -------------------------

def _flux():
    from diffusers import FluxTransformer2DModel
    from flux_tiny import TRANSFORMER

    torch.manual_seed(0)
    return FluxTransformer2DModel(**TRANSFORMER).eval()


def _wan():
    from diffusers import WanTransformer3DModel
    from wan_tiny import TRANSFORMER

    torch.manual_seed(0)
    return WanTransformer3DModel(**TRANSFORMER).eval()


@pytest.fixture(scope="module")
def flux():
    return _flux()


@pytest.fixture(scope="module")
def wan():
    return _wan()


FLUX_PEFT = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_v_proj", "transformer_blocks.0.ff.net.2",
             "single_transformer_blocks.1.proj_mlp", "single_transformer_blocks.0.proj_out", "proj_out"]


def test_flux_peft_lora_equals_diffusers(flux):
    state = peft_lora(flux, FLUX_PEFT)
    assert_same(ours(flux, state, family="flux"), theirs(flux, "FluxPipeline", state), flux, len(FLUX_PEFT))


@pytest.mark.parametrize("spelling", ["kohya", "comfyui", "comfyui_peft"])
def test_flux_kohya_and_comfyui_loras_equal_diffusers(flux, spelling):
    """BFL names (fused qkv split into q/k/v by the converter), with alpha, in kohya's and ComfyUI's spellings."""
    gen, state = torch.Generator().manual_seed(2), {}
    style = "peft" if spelling == "comfyui_peft" else "kohya"
    for module, (out, inp) in {"double_blocks.0.img_attn.qkv": (192, 64), "double_blocks.0.txt_attn.proj": (64, 64),
                               "double_blocks.0.img_mlp.0": (256, 64), "single_blocks.1.linear2": (64, 320)}.items():
        name = "lora_unet_" + module.replace(".", "_") if spelling == "kohya" else "diffusion_model." + module
        _pair(state, name, out, inp, style, alpha=2.0, gen=gen)
    kohya = {k.replace("lora_A", "lora_down").replace("lora_B", "lora_up"): v for k, v in state.items()}
    assert_same(ours(flux, state, family="flux"), theirs(flux, "FluxPipeline", kohya), flux, 6)


def test_flux_single_block_linear1_is_split_by_the_model_widths(flux):
    """linear1 of a single block (q, k, v and the MLP in one layer) equals its PEFT split on diffusers."""
    gen, state = torch.Generator().manual_seed(3), {}
    down, up = _pair(state, "lora_unet_single_blocks_1_linear1", 64 * 3 + 256, 64, "kohya", alpha=8.0, gen=gen)
    split, names = {}, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
    for name, part in zip(names, up.split([64, 64, 64, 256])):
        split[f"transformer.single_transformer_blocks.1.{name}.lora_A.weight"] = down * 2.0  # alpha / rank
        split[f"transformer.single_transformer_blocks.1.{name}.lora_B.weight"] = part.contiguous()
    assert_same(ours(flux, state, family="flux"), theirs(flux, "FluxPipeline", split), flux, 4)


WAN_PEFT = ["blocks.0.attn1.to_q", "blocks.1.attn2.to_out.0", "blocks.0.ffn.net.0.proj", "blocks.1.ffn.net.2"]


def test_wan_peft_lora_equals_diffusers(wan):
    state = peft_lora(wan, WAN_PEFT)
    assert_same(ours(wan, state, family="wan"), theirs(wan, "WanPipeline", state), wan, len(WAN_PEFT))


@pytest.mark.parametrize("style", ["kohya", "peft"])
def test_wan_comfyui_lora_equals_diffusers(wan, style):
    """ComfyUI/original Wan names (``diffusion_model.blocks.N.self_attn.q`` …), lora_down/up or lora_A/B."""
    gen, state = torch.Generator().manual_seed(4), {}
    for module, (out, inp) in {"blocks.0.self_attn.q": (256, 256), "blocks.1.cross_attn.o": (256, 256),
                               "blocks.0.ffn.0": (64, 256), "blocks.1.ffn.2": (256, 64)}.items():
        _pair(state, "diffusion_model." + module, out, inp, style, alpha=2.0 if style == "kohya" else None, gen=gen)
    assert_same(ours(wan, state, family="wan"), theirs(wan, "WanPipeline", state), wan, 4)


def test_strength_zero_and_negative(flux):
    """Strength 0 leaves the weights bit for bit; -1 after +1 gives them back within float rounding."""
    state = peft_lora(flux, FLUX_PEFT)
    assert_same(ours(flux, state, 0.0), flux, flux, 0)
    half = ours(flux, state, 0.5)
    assert_same(half, theirs(flux, "FluxPipeline", state, 0.5), flux, len(FLUX_PEFT))
    back = ours(ours(flux, state, 1.0), state, -1.0)
    assert max(float((a - b).abs().max()) for a, b in zip(back.state_dict().values(),
                                                           flux.state_dict().values())) < 1e-6


def test_applied_restores_the_weights_exactly(flux):
    """lora.applied on a transformer MODEL changes the weights inside the block only (the cached model is intact)."""
    t = copy.deepcopy(flux)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    state = peft_lora(flux, FLUX_PEFT)
    path = _tmp_file(state)
    model = DiffusionModel(unet=t, scheduler_config={}, arch="flux-dev", source="x", family="flux")
    model = model.with_lora(LoraPatch("tiny.safetensors", str(path), 1.0))
    with lora_mod.applied(model) as changed:
        assert changed == len(FLUX_PEFT)
        q = "transformer_blocks.0.attn.to_q.weight"
        assert not torch.equal(t.state_dict()[q], before[q])
    assert all(torch.equal(v, before[k]) for k, v in t.state_dict().items())


def _tmp_file(state: dict):
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    path = Path(tempfile.mkdtemp()) / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_a_lora_of_another_family_is_refused_with_the_reason(flux, wan):
    """A Wan LoRA on Flux matches nothing: the error names the file, 0 of N and the family."""
    state = peft_lora(wan, WAN_PEFT)
    with pytest.raises(ValueError, match=r"tiny-lora\.safetensors: 0 of its 4 layers match this flux model"):
        ours(flux, state, family="flux")


# ---- the other families ------------------------------------------------------------------------------------------

def _build(module: str, cls: str):
    import importlib

    import diffusers

    torch.manual_seed(0)
    return getattr(diffusers, cls)(**importlib.import_module(module).TRANSFORMER).eval()


def test_sd3_peft_and_comfyui_loras_equal_diffusers():
    """SD3: diffusers names directly; ComfyUI/kohya ``joint_blocks`` names (fused qkv, swapped adaLN halves of the
    last context block and final layer) equal their diffusers-named split."""
    t = _build("sd3_tiny", "SD3Transformer2DModel")
    names = ["transformer_blocks.0.attn.to_q", "transformer_blocks.1.ff_context.net.2", "proj_out"]
    state = peft_lora(t, names)
    assert_same(ours(t, state, family="sd3"), theirs(t, "StableDiffusion3Pipeline", state), t, 3)
    w = int(t.config.num_attention_heads) * int(t.config.attention_head_dim)
    last = int(t.config.num_layers) - 1
    gen = torch.Generator().manual_seed(5)
    for spelling in ("comfyui", "kohya"):
        orig, split = {}, {}
        for module, (out, targets, swap) in {
                "joint_blocks.0.x_block.attn.qkv": (3 * w, ["attn.to_q", "attn.to_k", "attn.to_v"], False),
                "joint_blocks.0.context_block.attn.qkv": (3 * w, ["attn.add_q_proj", "attn.add_k_proj",
                                                                  "attn.add_v_proj"], False),
                f"joint_blocks.{last}.context_block.adaLN_modulation.1": (2 * w, ["norm1_context.linear"], True),
                "final_layer.adaLN_modulation.1": (2 * w, ["norm_out.linear"], True)}.items():
            name = ("diffusion_model." + module if spelling == "comfyui"
                    else "lora_unet_" + module.replace(".", "_"))
            down, up = _pair(orig, name, out, w, "kohya", alpha=2.0, gen=gen)
            if swap:
                up = torch.cat(list(reversed(up.chunk(2))))
            block = "" if module.startswith("final") else f"transformer_blocks.{module.split('.')[1]}."
            for target, part in zip(targets, up.chunk(len(targets))):
                split[f"transformer.{block}{target}.lora_A.weight"] = down * 0.5
                split[f"transformer.{block}{target}.lora_B.weight"] = part.contiguous()
        assert_same(ours(t, orig, family="sd3"), theirs(t, "StableDiffusion3Pipeline", split), t, 8)


def test_qwen_image_loras_equal_diffusers():
    """Qwen-Image: diffusers names, and ComfyUI's ``diffusion_model.*`` with lora_down/up + alpha."""
    t = _build("qwen_tiny", "QwenImageTransformer2DModel")
    names = ["transformer_blocks.0.attn.to_q", "transformer_blocks.1.img_mlp.net.2", "transformer_blocks.0.txt_mod.1"]
    state = peft_lora(t, names)
    assert_same(ours(t, state, family="qwen_image"), theirs(t, "QwenImagePipeline", state), t, 3)
    gen, comfy = torch.Generator().manual_seed(6), {}
    for name in names:
        _pair(comfy, "diffusion_model." + name, *_shape(t, name), "kohya", alpha=2.0, gen=gen)
    assert_same(ours(t, comfy, family="qwen_image"), theirs(t, "QwenImagePipeline", comfy), t, 3)


def test_chroma_loras_equal_diffusers():
    """Chroma (Flux's names without modulation): diffusers names and kohya's BFL names."""
    t = _build("chroma_tiny", "ChromaTransformer2DModel")
    names = ["transformer_blocks.0.attn.to_k", "single_transformer_blocks.1.proj_out"]
    state = peft_lora(t, names)
    assert_same(ours(t, state, family="chroma"), theirs(t, "ChromaPipeline", state), t, 2)
    gen, kohya = torch.Generator().manual_seed(7), {}
    _pair(kohya, "lora_unet_double_blocks_0_txt_attn_qkv", 192, 64, "kohya", alpha=2.0, gen=gen)
    _pair(kohya, "lora_unet_double_blocks_0_img_mlp_2", 64, 256, "kohya", gen=gen)
    assert_same(ours(t, kohya, family="chroma"), theirs(t, "ChromaPipeline", kohya), t, 4)


def test_ltx_video_loras_equal_diffusers():
    """LTX-Video: diffusers names, and ComfyUI's ``diffusion_model.transformer_blocks.*`` (diffusers' converter)."""
    t = _build("ltx_tiny", "LTXVideoTransformer3DModel")
    names = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn2.to_out.0", "transformer_blocks.0.ff.net.2"]
    state = peft_lora(t, names)
    assert_same(ours(t, state, family="ltxv"), theirs(t, "LTXPipeline", state), t, 3)
    comfy = {k.replace("transformer.", "diffusion_model.", 1): v for k, v in peft_lora(t, names, 8).items()}
    assert_same(ours(t, comfy, family="ltxv"), theirs(t, "LTXPipeline", comfy), t, 3)


# ---- in a graph ----------------------------------------------------------------------------------------------------

def test_lora_loader_model_only_on_flux_in_a_graph(flux_config, tiny_flux):
    """UNETLoader → LoraLoaderModelOnly → KSampler gives FluxPipeline's image with the LoRA fused (≤ 1/255);
    strength 0 gives the image without it."""
    from flux_tiny import LAYOUTS
    from safetensors.torch import save_file
    from test_flux_parity import PROMPT, SEED, SIZE, STEPS, graph

    from nodegraph.diffusion.flow.latents import pack
    from nodegraph.diffusion.sampling import make_noise
    from nodegraph.testing_graphs import capture_engine, run_captured

    state = {k: v * 3 for k, v in peft_lora(tiny_flux.transformer, FLUX_PEFT, seed=9).items()}
    folder = flux_config.model_dir("loras")
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "tiny-flux-lora.safetensors"))
    engine = capture_engine(flux_config)

    def image(strength: float):
        wf = graph(LAYOUTS["comfyui"])
        wf["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["unet", 0], "lora_name": "tiny-flux-lora.safetensors", "strength_model": strength}}
        wf["msf"]["inputs"]["model"] = ["lora", 0]
        result, cap = run_captured(engine, wf)
        result.raise_for_status()
        return cap["img"]

    plain = image(0.0)
    with_lora = image(1.0)
    fused = theirs(tiny_flux.transformer, "FluxPipeline", state)
    pipe = dataclasses.replace(tiny_flux, transformer=fused).pipeline()
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        ref = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=3.5,
                   latents=pack(noise), max_sequence_length=256, output_type="pt").images.permute(0, 2, 3, 1)
    assert float((with_lora - ref).abs().max()) <= 1 / 255
    assert float((with_lora - plain).abs().max()) > 2 / 255  # the LoRA matters at this size
    base = run_captured(engine, graph(LAYOUTS["comfyui"]))
    base[0].raise_for_status()
    assert float((plain - base[1]["img"]).abs().max()) == 0.0


def test_wan_bias_differences_equal_diffusers(wan):
    """``diff_b`` tensors (LightX2V/CausVid-style Wan LoRAs) change the biases as diffusers' lora_bias does."""
    gen, state = torch.Generator().manual_seed(10), {}
    for module, (out, inp) in {"blocks.0.self_attn.q": (256, 256), "blocks.1.ffn.0": (64, 256)}.items():
        _pair(state, "diffusion_model." + module, out, inp, "kohya", gen=gen)
        state[f"diffusion_model.{module}.diff_b"] = torch.randn(out, generator=gen) * 0.1
    assert_same(ours(wan, state, family="wan"), theirs(wan, "WanPipeline", state), wan, 4)


def test_full_weight_differences_are_added(flux):
    """A ``.diff`` tensor (a full weight difference, as ComfyUI reads them) adds strength × diff."""
    name = "transformer_blocks.0.attn.to_k"
    diff = torch.randn(_shape(flux, name)) * 0.1
    got = ours(flux, {f"transformer.{name}.diff": diff, **peft_lora(flux, FLUX_PEFT[:1])}, 0.5, family="flux")
    assert torch.allclose(got.state_dict()[name + ".weight"], flux.state_dict()[name + ".weight"] + 0.5 * diff)


def test_a_text_encoder_only_lora_leaves_the_transformer(flux):
    """A LoRA with only CLIP layers (lora_te1_…) changes nothing in the MODEL and raises nothing."""
    state = {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(RANK, 64),
             "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(64, RANK)}
    assert_same(ours(flux, state, family="flux"), flux, flux, 0)
