"""Limits: node count, string sizes, pixels per image and per prompt, text windows, the bounded CPU pool."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc

import pytest

from nodegraph.limits import Limits, pixel_problems
from nodegraph.validation import ValidationReport


def report_of(engine, wf: dict) -> dict:
    with pytest.raises(ValidationReport) as info:
        engine.prepare(wf)
    return info.value.to_json()


def image(width: int, height: int, batch: int = 1) -> dict:
    return {"e": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                          "color": 0}},
            "p": {"class_type": "PreviewImage", "inputs": {"images": ["e", 0]}}}


def test_limits_are_positive_integers():
    assert Limits().max_nodes == 10_000
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_nodes must be an integer of at least 1"):
            Limits(max_nodes=bad)


def test_limits_from_the_environment(monkeypatch):
    from nodegraph.config import EngineConfig

    assert Limits.from_env({"NODEGRAPH_LIMIT_MAX_NODES": "50_000"}).max_nodes == 50_000
    with pytest.raises(ValueError, match="NODEGRAPH_LIMIT_MAX_IMAGE_PIXELS='lots' is not an integer"):
        Limits.from_env({"NODEGRAPH_LIMIT_MAX_IMAGE_PIXELS": "lots"})
    monkeypatch.setenv("NODEGRAPH_LIMIT_MAX_STRING_CHARS", "123")
    assert EngineConfig().limits.max_string_chars == 123


def test_node_count_cap_says_how_to_raise_it(config, make_engine):
    config.limits = Limits(max_nodes=50)
    engine = make_engine()
    wf = {str(i): {"class_type": "Const", "inputs": {"value": 1}} for i in range(50)}
    wf["o"] = {"class_type": "Sink", "inputs": {"value": ["0", 0]}}
    report = report_of(engine, wf)
    assert report["error"]["type"] == "too_many_nodes" and report["node_errors"] == {}
    assert "51 nodes" in report["error"]["message"] and "50" in report["error"]["message"]
    assert "EngineConfig.limits.max_nodes" in report["error"]["details"]
    ui = {"nodes": [{"id": i, "type": "Const", "widgets_values": [1]} for i in range(51)], "links": []}
    assert report_of(engine, ui)["error"]["type"] == "too_many_nodes"  # counted before conversion
    del wf["49"]
    assert engine.prepare(wf).outputs == ["o"]


def test_string_inputs_are_capped_per_input_and_per_prompt(config, make_engine):
    config.limits = Limits(max_string_chars=1000, max_prompt_string_chars=2500)
    engine = make_engine()
    wf = {"c": {"class_type": "Const", "inputs": {"value": 1}},
          "f": {"class_type": "Fail", "inputs": {"x": ["c", 0], "message": "x" * 1001}},
          "o": {"class_type": "Sink", "inputs": {"value": ["f", 0]}}}
    err = report_of(engine, wf)["node_errors"]["f"]["errors"][0]
    assert err["type"] == "string_too_long" and err["extra_info"]["input_name"] == "message"
    assert "1,001 characters" in err["message"] and "1,000" in err["message"]
    assert "EngineConfig.limits.max_string_chars" in err["details"]
    assert len(err["extra_info"]["received_value"]) < 300  # the report does not echo the whole text

    chain = {"c": {"class_type": "Const", "inputs": {"value": 1}}}
    for i in range(3):
        chain[f"f{i}"] = {"class_type": "Fail", "inputs": {"x": ["c", 0], "message": "y" * 1000}}
        chain[f"o{i}"] = {"class_type": "Sink", "inputs": {"value": [f"f{i}", 0]}}
    report = report_of(engine, chain)
    assert list(report["node_errors"]) == ["f2"]
    err = report["node_errors"]["f2"]["errors"][0]
    assert err["type"] == "prompt_strings_too_long" and "3,000 characters" in err["message"]
    assert "max_prompt_string_chars" in err["details"]
    del chain["f2"], chain["o2"]
    engine.prepare(chain)


def test_pixels_per_image_and_per_prompt(engine):
    err = report_of(engine, image(16384, 16384))["node_errors"]["e"]["errors"][0]
    assert err["type"] == "image_too_large" and err["extra_info"]["input_name"] == "width"
    assert "268,435,456 pixels" in err["message"] and "max_image_pixels" in err["details"]

    err = report_of(engine, image(512, 512, batch=4096))["node_errors"]["e"]["errors"][0]
    assert err["type"] == "image_too_large" and "4096 image(s)" in err["message"]
    assert "max_prompt_pixels" in err["details"]

    engine.prepare(image(4096, 4096))  # 16 MP: at the per-image limit
    engine.prepare(image(1024, 1024, batch=256))  # 256 MP: at the per-prompt limit
    two = image(4096, 4096, batch=16)
    two["e2"] = {**two["e"], "inputs": {**two["e"]["inputs"], "batch_size": 1}}
    two["p2"] = {"class_type": "PreviewImage", "inputs": {"images": ["e2", 0]}}
    assert set(report_of(engine, two)["node_errors"]) == {"e2"}  # the node that crosses the prompt total


def test_pixel_rule_scales_linked_sizes_and_honours_opt_outs():
    class Make:
        pass

    class Scale:
        pass

    class Conditioning:
        PIXEL_INPUTS = ()

    limits = Limits(max_image_pixels=1000, max_prompt_pixels=5000)
    nodes = [("m", Make, {"width": 20, "height": 20, "batch_size": 2}, []),
             ("s", Scale, {"scale_by": 2.0}, ["m"]),
             ("c", Conditioning, {"width": 4096, "height": 4096}, [])]
    problems = pixel_problems(nodes, limits)
    assert [(p[0], p[1]) for p in problems] == [("s", "scale_by")]  # 40×40 = 1,600 per image
    assert pixel_problems(nodes[:1], limits) == []
    assert pixel_problems([("m", Make, {"width": 30, "height": 30, "batch_size": 6}, [])], limits)[0][1] == "width"


def _clip(folder):
    """A small CLIP text encoder and tokenizer (the tiny test vocabulary, random weights)."""

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodegraph._tiny import make_tokenizer
    from nodegraph.diffusion.types import TextEncoder

    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return TextEncoder(tokenizers=(tok,), encoders=(CLIPTextModel(cfg).eval(),), arch="sd1"), tok


def test_text_encoding_is_chunk_bounded(tmp_path):
    import torch

    from nodegraph.diffusion.text import encode_text

    clip, tok = _clip(tmp_path)
    text = " ".join(["a red circle on a blue square"] * 80)  # 560 tokens: 8 windows
    ids = tok(text, add_special_tokens=False).input_ids
    windows = -(-len(ids) // 75)
    assert windows > 7
    cond = encode_text(clip, text, "cpu")[0][0]
    assert cond.shape == (1, 77 * windows, 32)
    first = [tok.bos_token_id, *ids[:75], tok.eos_token_id]
    with torch.no_grad():
        expected = clip.encoders[0](torch.tensor([first])).last_hidden_state
    assert torch.allclose(cond[:, :77], expected, atol=1e-5)

    with pytest.raises(ValueError, match="longer than 375 tokens.*max_text_chunks"):
        encode_text(clip, text, "cpu", max_chunks=5)
    huge = "a red circle " * 800_000  # 10 MB
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ValueError, match="max_text_chunks"):
        encode_text(clip, huge, "cpu")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 20 * 1024 * 1024, peak
    spaces = encode_text(clip, "a" + " " * 200_000 + "circle", "cpu")[0][0]  # long in characters, 2 tokens
    assert spaces.shape == (1, 77, 32)


def test_cpu_pool_is_bounded_and_counts_running_jobs():
    from nodegraph.server.state import CpuPool, PoolBusyError

    async def main() -> list:
        pool = CpuPool(threads=1, waiting=1)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run(gate.wait, 10))
        second = asyncio.ensure_future(pool.run(lambda: "queued"))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolBusyError):
            await pool.run(lambda: "refused")
        first.cancel()  # the request went away; its job still holds its place until the thread finishes
        await asyncio.sleep(0.05)
        busy = pool.jobs
        gate.set()
        result = await second
        await asyncio.sleep(0.05)
        pool.close()
        return [busy, result, pool.jobs]

    assert asyncio.run(main()) == [2, "queued", 0]
