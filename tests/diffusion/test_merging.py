"""Model merges against hand arithmetic on the weights, sampling with a merged model against a checkpoint of
hand-merged weights, and CheckpointSave round trips (ComfyUI's LDM layout) on the tiny SD1 and SDXL models."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from graphs import make_engine, run, txt2img
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nodegraph.config import EngineConfig
from nodegraph.diffusion import lora
from nodegraph.diffusion.detect import METADATA_KEY
from nodegraph.diffusion.merging import merge_models
from nodegraph.diffusion.text import encode_text
from nodegraph.diffusion.types import DiffusionModel, TextEncoder
from nodegraph.nodes.model_merging import ModelMergeSD1

UNET = "model.diffusion_model."


def _perturbed(module, seed):
    other = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return other


@pytest.fixture(scope="module")
def pair(tiny_sd):
    unet = tiny_sd.components["unet"]
    a = DiffusionModel(unet=unet, scheduler_config={}, arch="custom", source="a")
    b = DiffusionModel(unet=_perturbed(unet, 1), scheduler_config={}, arch="custom", source="b")
    return a, b


def _weights(model):
    return {n: p.detach().clone() for n, p in model.unet.named_parameters()}


def test_simple_merge_ratios_by_hand(pair):
    a, b = pair
    wa, wb = _weights(a), _weights(b)
    with lora.applied(merge_models(a, b, 1.0, 0.0)) as changed:
        assert changed == 0 and all(torch.equal(p, wa[n]) for n, p in a.unet.named_parameters())
    with lora.applied(merge_models(a, b, 0.0, 1.0)):
        assert all(torch.equal(p, wb[n]) for n, p in a.unet.named_parameters())
    with lora.applied(merge_models(a, b, 0.5, 0.5)) as changed:
        assert changed == len(wa)
        for n, p in a.unet.named_parameters():
            assert torch.equal(p, wa[n] * 0.5 + 0.5 * wb[n])
            assert torch.allclose(p, (wa[n] + wb[n]) / 2, atol=1e-7)
    # neither input changed, during or after
    assert all(torch.equal(p, wa[n]) for n, p in a.unet.named_parameters())
    assert all(torch.equal(p, wb[n]) for n, p in b.unet.named_parameters())
    assert a.loras == () and b.loras == ()


def test_add_and_subtract_by_hand(pair):
    a, b = pair
    wa, wb = _weights(a), _weights(b)
    with lora.applied(merge_models(a, b, 1.0, 1.0)):  # ModelMergeAdd
        assert all(torch.equal(p, wa[n] + wb[n]) for n, p in a.unet.named_parameters())
    with lora.applied(merge_models(a, b, 0.7, -0.7)):  # ModelMergeSubtract, multiplier 0.7
        for n, p in a.unet.named_parameters():
            assert torch.allclose(p, 0.7 * (wa[n] - wb[n]), atol=1e-6)


def test_blocks_pick_their_ratio_by_the_ldm_name(pair):
    a, b = pair
    wa, wb = _weights(a), _weights(b)
    ratios = {"input": 0.2, "middle": 0.5, "out": 0.9}
    blocks = tuple((k, r, 1 - r) for k, r in ratios.items())
    expected = {"conv_in.weight": "input", "time_embedding.linear_1.weight": "input",
                "down_blocks.0.resnets.0.conv1.weight": "input", "down_blocks.0.attentions.0.proj_in.weight": "input",
                "mid_block.resnets.0.conv1.weight": "middle", "mid_block.attentions.0.proj_out.weight": "middle",
                "up_blocks.0.resnets.0.conv1.weight": "out", "up_blocks.1.attentions.2.proj_out.weight": "out",
                "conv_norm_out.weight": "out", "conv_out.weight": "out"}
    with lora.applied(merge_models(a, b, 0.2, 0.8, blocks)):
        params = dict(a.unet.named_parameters())
        for name, block in expected.items():
            r = ratios[block]
            assert torch.equal(params[name], wa[name] * r + (1 - r) * wb[name]), name


def test_merges_of_merges_and_of_the_same_base(pair):
    a, b = pair
    wa, wb = _weights(a), _weights(b)
    half = merge_models(a, b, 0.5, 0.5)
    again = merge_models(a, half, 0.25, 0.75)  # model2 shares model1's UNet and carries its own patch
    with lora.applied(again):
        for n, p in a.unet.named_parameters():
            assert torch.allclose(p, wa[n] * 0.25 + 0.75 * (wa[n] * 0.5 + 0.5 * wb[n]), atol=1e-7)
    assert all(torch.equal(p, wa[n]) for n, p in a.unet.named_parameters())


def test_clip_merge_encodes_like_hand_merged_encoders(tiny_sd):
    parts = tiny_sd.components
    te1, tok = parts["text_encoder"], parts["tokenizer"]
    te2 = _perturbed(te1, 2)
    clip1 = TextEncoder(tokenizers=(tok,), encoders=(te1,), arch="sd1")
    clip2 = TextEncoder(tokenizers=(tok,), encoders=(te2,), arch="sd1")
    hand = copy.deepcopy(te1)
    with torch.no_grad():
        for (n, p), q in zip(hand.named_parameters(), te2.parameters()):
            p.copy_(p * 0.3 + 0.7 * q)
    expected, = encode_text(TextEncoder(tokenizers=(tok,), encoders=(hand,), arch="sd1"), "a red circle", "cpu")
    with lora.applied(merge_models(clip1, clip2, 0.3, 0.7)):
        got, = encode_text(clip1, "a red circle", "cpu")
    assert torch.equal(got[0], expected[0])
    plain, = encode_text(clip1, "a red circle", "cpu")
    assert not torch.allclose(plain[0], got[0], atol=1e-4)


@pytest.fixture(scope="module")
def home(tiny_sd, tmp_path_factory):
    """A home with checkpoints a (the tiny model), b (UNet and CLIP perturbed) and hand (UNet = a·0.5 + 0.5·b by hand,
    the rest a's)."""
    root = tmp_path_factory.mktemp("merge-home")
    config = EngineConfig(home=root, models_dir=root / "models")
    config.ensure_dirs()
    ckpts = config.model_dir("checkpoints")
    shutil.copy(tiny_sd.single_file, ckpts / "a.safetensors")
    with safe_open(str(tiny_sd.single_file), "pt") as f:
        meta = f.metadata()
    sa = load_file(str(tiny_sd.single_file))
    gen = torch.Generator().manual_seed(3)
    sb = {k: v + torch.randn(v.shape, generator=gen) * 0.05 if k.startswith((UNET, "cond_stage_model.")) else v
          for k, v in sa.items()}
    hand = {k: v * 0.5 + 0.5 * sb[k] if k.startswith(UNET) else v for k, v in sa.items()}
    save_file(sb, str(ckpts / "b.safetensors"), metadata=meta)
    save_file(hand, str(ckpts / "hand.safetensors"), metadata=meta)
    return config, sa, hand


def test_merged_model_samples_like_a_hand_merged_checkpoint_and_saves_those_weights(home):
    config, _, hand = home
    engine = make_engine(config)
    wf = txt2img("a.safetensors", steps=3)
    wf["b"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}}
    wf["merge"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["ckpt", 0], "model2": ["b", 0],
                                                                "ratio": 0.5}}
    wf["ks"]["inputs"]["model"] = ["merge", 0]
    wf["save"] = {"class_type": "CheckpointSave", "inputs": {"model": ["merge", 0], "clip": ["ckpt", 1],
                                                             "vae": ["ckpt", 2], "filename_prefix": "merged/mix"}}
    result, cap = run(engine, wf)
    result.raise_for_status()
    merged = cap["lat"]["samples"]
    result, cap = run(engine, txt2img("hand.safetensors", steps=3))
    result.raise_for_status()
    assert torch.equal(merged, cap["lat"]["samples"])
    result, cap = run(engine, txt2img("a.safetensors", steps=3))
    assert not torch.allclose(merged, cap["lat"]["samples"], atol=1e-3)
    saved = load_file(str(config.outputs_dir / "merged" / "mix_00001_.safetensors"))
    assert set(saved) == set(hand)
    assert all(torch.equal(saved[k], hand[k]) for k in hand)


def _round_trip(tiny, tmp_path):
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    shutil.copy(tiny.single_file, config.model_dir("checkpoints") / "orig.safetensors")
    engine = make_engine(config)
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "orig.safetensors"}},
          "save": {"class_type": "CheckpointSave", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                              "vae": ["ckpt", 2],
                                                              "filename_prefix": "checkpoints/ComfyUI"}}}
    workflow = {"nodes": [], "links": []}
    result = engine.run(engine.prepare(wf), extra_data={"extra_pnginfo": {"workflow": workflow}})
    result.raise_for_status()
    path = config.outputs_dir / "checkpoints" / "ComfyUI_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["prompt"])["save"]["class_type"] == "CheckpointSave"
    assert json.loads(meta["workflow"]) == workflow
    assert meta["modelspec.predict_key"] == "epsilon"
    assert METADATA_KEY in meta  # a tiny (non-standard) model carries its configs to load again
    original, saved = load_file(str(tiny.single_file)), load_file(str(path))
    assert set(original) <= set(saved)
    assert all(torch.equal(original[k], saved[k]) for k in original)
    shutil.copy(path, config.model_dir("checkpoints") / "saved.safetensors")
    lats = []
    for name in ("orig.safetensors", "saved.safetensors"):
        result, cap = run(engine, txt2img(name, steps=2))
        result.raise_for_status()
        lats.append(cap["lat"]["samples"])
    assert torch.equal(lats[0], lats[1])
    return meta, set(saved) - set(original)


def test_checkpoint_save_round_trip_sd1(tiny_sd, tmp_path):
    meta, extra = _round_trip(tiny_sd, tmp_path)
    assert extra == set() and "modelspec.architecture" not in meta


def test_checkpoint_save_round_trip_sdxl(tiny_sdxl, tmp_path):
    meta, extra = _round_trip(tiny_sdxl, tmp_path)
    assert extra == {"conditioner.embedders.0.transformer.text_model.embeddings.position_ids"}
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert meta["modelspec.title"] == "ComfyUI 1"


def test_checkpoint_save_never_leaves_the_output_folder(home):
    config, _, _ = home
    engine = make_engine(config)
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
          "save": {"class_type": "CheckpointSave", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                              "vae": ["ckpt", 2], "filename_prefix": "../../escape"}}}
    result = engine.run(engine.prepare(wf))
    assert result.error is not None and result.error.node_id == "save"
    assert not list(config.home.parent.glob("escape*")) and not list(config.home.glob("escape*"))


def test_merge_nodes_record_patches_in_order_and_leave_inputs_alone(home):
    from nodegraph.models.handles import resolve

    config, _, _ = home
    engine = make_engine(config)
    wf = {"a": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
          "b": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}},
          "blocks": {"class_type": "ModelMergeBlocks", "inputs": {"model1": ["a", 0], "model2": ["b", 0],
                                                                 "input": 0.2, "middle": 0.5, "out": 0.9}},
          "sub": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["b", 0], "model2": ["a", 0],
                                                                 "multiplier": 0.5}},
          "add": {"class_type": "ModelMergeAdd", "inputs": {"model1": ["a", 0], "model2": ["sub", 0]}},
          "clip": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["a", 1], "clip2": ["b", 1], "ratio": 0.4}}}
    for name in ("a", "b", "blocks", "add", "clip"):
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": [name, 0]}}
    for name in ("a", "b"):
        wf[f"c_{name}clip"] = {"class_type": "Capture", "inputs": {"value": [name, 1]}}
    result, cap = run(engine, wf)
    result.raise_for_status()
    a, b = resolve(cap["c_a"]), resolve(cap["c_b"])
    wa = {n: p.detach().clone() for n, p in a.unet.named_parameters()}
    wb = {n: p.detach().clone() for n, p in b.unet.named_parameters()}
    assert any(not torch.equal(wa[n], wb[n]) for n in wa)
    blocks, add = resolve(cap["c_blocks"]), resolve(cap["c_add"])
    assert [p.name for p in blocks.loras] == ["ModelMergeBlocks"] and a.loras == ()
    with lora.applied(blocks):
        params = dict(a.unet.named_parameters())
        for name, r in (("conv_in.weight", 0.2), ("mid_block.resnets.0.conv1.weight", 0.5), ("conv_out.weight", 0.9)):
            assert torch.equal(params[name], wa[name] * r + (1 - r) * wb[name])
    with lora.applied(add):  # a + 0.5 · (b − a)
        for n, p in a.unet.named_parameters():
            assert torch.allclose(p, wa[n] + 0.5 * (wb[n] - wa[n]), atol=1e-6)
    assert all(torch.equal(p, wa[n]) for n, p in a.unet.named_parameters())
    clip, clip_a, clip_b = resolve(cap["c_clip"]), resolve(cap["c_aclip"]), resolve(cap["c_bclip"])
    ta = {n: p.detach().clone() for n, p in clip_a.encoders[0].named_parameters()}
    tb = dict(clip_b.encoders[0].named_parameters())
    assert any(not torch.equal(ta[n], tb[n]) for n in ta)
    with lora.applied(clip):
        for n, p in clip.encoders[0].named_parameters():
            assert torch.equal(p, ta[n] * 0.4 + 0.6 * tb[n])
    assert all(torch.equal(p, ta[n]) for n, p in clip_a.encoders[0].named_parameters())


def test_model_specific_merge_nodes_and_clip_add_subtract(home):
    """ModelMergeSD1: one ratio per LDM prefix, the longest match wins, the first input is the default;
    CLIPMergeAdd/Subtract as ComfyUI's (1, 1) and (m, -m)."""
    from nodegraph.diffusion.merging import _unet_key
    from nodegraph.models.handles import resolve

    config, _, _ = home
    engine = make_engine(config)
    ratios = {"time_embed.": 0.1, "input_blocks.1.": 0.25, "middle_block.1.": 0.5, "out.": 0.6}
    listed = [k for k in ModelMergeSD1.INPUTS if k not in ("model1", "model2")]
    everything = {**{k: 1.0 for k in listed}, **ratios}
    wf = {"a": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
          "b": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}},
          "sd1": {"class_type": "ModelMergeSD1", "inputs": {"model1": ["a", 0], "model2": ["b", 0], **everything}},
          "sub": {"class_type": "CLIPMergeSubtract", "inputs": {"clip1": ["a", 1], "clip2": ["b", 1],
                                                               "multiplier": 0.5}},
          "add": {"class_type": "CLIPMergeAdd", "inputs": {"clip1": ["a", 1], "clip2": ["b", 1]}}}
    for name, out in (("a", 0), ("b", 0), ("sd1", 0), ("sub", 0), ("add", 0), ("aclip", None), ("bclip", None)):
        src = [name[0], 1] if out is None else [name, 0]
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": src}}
    try:
        result, cap = run(engine, wf)
    except Exception as exc:
        raise AssertionError(getattr(exc, "node_errors", exc)) from exc
    result.raise_for_status()
    a, b, merged = resolve(cap["c_a"]), resolve(cap["c_b"]), resolve(cap["c_sd1"])
    wa = {n: p.detach().clone() for n, p in a.unet.named_parameters()}
    wb = {n: p.detach().clone() for n, p in b.unet.named_parameters()}
    key = _unet_key(a.unet)
    seen = set()
    with lora.applied(merged):
        for n, p in a.unet.named_parameters():
            ldm = key(n)
            match = max((k for k in listed if ldm.startswith(k)), key=len, default=None)
            r = everything[match] if match else everything["time_embed."]  # the first input is the default
            seen.add(match)
            assert torch.allclose(p, wa[n] * r + (1 - r) * wb[n], atol=1e-7), (n, ldm, r)
    assert {"time_embed.", "input_blocks.1.", "middle_block.1.", "out."} <= seen
    ca, cb = resolve(cap["c_aclip"]), resolve(cap["c_bclip"])
    ta = {n: p.detach().clone() for n, p in ca.encoders[0].named_parameters()}
    tb = dict(cb.encoders[0].named_parameters())
    with lora.applied(resolve(cap["c_sub"])):
        assert all(torch.allclose(p, 0.5 * (ta[n] - tb[n]), atol=1e-6) for n, p in ca.encoders[0].named_parameters())
    with lora.applied(resolve(cap["c_add"])):
        assert all(torch.allclose(p, ta[n] + tb[n], atol=1e-6) for n, p in ca.encoders[0].named_parameters())
