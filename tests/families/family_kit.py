"""Shared scaffolding of the model-family tests: the tiny model home and capture engine fixtures, running a graph and
reading its captured values, graph nodes, "the ComfyUI_examples graphs validate but for missing model files", "the
example runs on the tiny model under its file names", loading-equals-diffusers weight checks, parity numbers and
parameter counts on the meta device. Each helper keeps the check the family tests made by hand before."""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

#: The parity limit of every family test: one 8-bit grey level.
LIMIT = 1 / 255
#: Editor-only node types that never reach the engine.
EDITOR_ONLY = {"Note", "MarkdownNote"}


# --- fixtures --------------------------------------------------------------------------------------------------------


def tiny_fixture(build: Callable[[Path], Any], folder: str) -> Any:
    """A module fixture that builds a tiny family with ``build`` in a fresh temporary folder named ``folder``."""

    @pytest.fixture(scope="module")
    def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
        return build(tmp_path_factory.mktemp(folder))

    return tiny


def engine_fixture(tiny: str = "tiny", extra_nodes: tuple = (), home: Callable[[Any], Path] | None = None) -> Any:
    """A module fixture: a capture engine (plus ``extra_nodes``) on the home of the fixture named ``tiny``."""

    @pytest.fixture(scope="module")
    def engine(request: pytest.FixtureRequest) -> Engine:
        value = request.getfixturevalue(tiny)
        return capture_engine(home_config(home(value) if home else value.home), extra_nodes)

    return engine


def home_config(home: Path, output_dir: Path | None = None) -> EngineConfig:
    """An EngineConfig on ``home`` with its folders made."""
    cfg = EngineConfig(home=home) if output_dir is None else EngineConfig(home=home, output_dir=output_dir)
    cfg.ensure_dirs()
    return cfg


def model_folders(home: Path, *subs: str) -> Path:
    """``home/models`` with the named model folders made; returns it."""
    models = home / "models"
    for sub in subs:
        (models / sub).mkdir(parents=True, exist_ok=True)
    return models


def cloned_state(module: Any) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous copies (safe to save and to convert in place)."""
    return {k: v.contiguous().clone() for k, v in module.state_dict().items()}


# --- running graphs --------------------------------------------------------------------------------------------------


def run(engine: Engine, wf: dict) -> dict:
    """Run ``wf`` (raising on failure) and return its captured values by Capture node id."""
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def run_timed(engine: Engine, wf: dict) -> tuple[dict, float]:
    """``run`` and the seconds it took."""
    start = time.perf_counter()
    cap = run(engine, wf)
    return cap, time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unwrap(value: Any) -> Any:
    """A captured model handle's object (``handle.get()``), or the value itself."""
    return value.get() if hasattr(value, "get") else value


def run_error(engine: Engine, wf: dict) -> str:
    """Run ``wf``, assert it failed, and return its error text."""
    result, _ = run_captured(engine, wf)
    assert result.status != "success" and result.error
    return str(result.error)


# --- graph nodes -----------------------------------------------------------------------------------------------------


def node(class_type: str, **inputs: Any) -> dict:
    """An API-format node."""
    return {"class_type": class_type, "inputs": inputs}


def capture(source: str, index: int = 0) -> dict:
    """A Capture node on output ``index`` of node ``source``."""
    return node("Capture", value=[source, index])


def add_captures(wf: dict, **sources: str | list) -> dict:
    """``wf`` with a Capture per keyword (name=node id, or name=[node id, output])."""
    for name, src in sources.items():
        wf[name] = capture(*src) if isinstance(src, list) else capture(src)
    return wf


def unet_loader(name: str, weight_dtype: str = "default") -> dict:
    """UNETLoader on ``name``."""
    return node("UNETLoader", unet_name=name, weight_dtype=weight_dtype)


def encode(text: str, clip: str = "clip", index: int = 0) -> dict:
    """CLIPTextEncode of ``text`` on output ``index`` of ``clip``."""
    return node("CLIPTextEncode", text=text, clip=[clip, index])


def empty_image(width: int, height: int, color: int, batch: int = 1) -> dict:
    """EmptyImage of one colour."""
    return node("EmptyImage", width=width, height=height, batch_size=batch, color=color)


def empty_latent(class_type: str, size: int, batch: int = 1, **more: Any) -> dict:
    """An empty latent node (``class_type``) of ``size``² (and e.g. ``length``)."""
    return node(class_type, width=size, height=size, **more, batch_size=batch)


def ksampler(model: str, seed: int, steps: int, cfg: float, sampler: str = "euler", scheduler: str = "simple",
             positive: list | None = None, negative: list | None = None, latent: list | None = None,
             denoise: float = 1.0) -> dict:
    """KSampler on output 0 of ``model``, "pos"/"neg"/"empty" unless given."""
    return node("KSampler", model=[model, 0], seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                scheduler=scheduler, positive=positive or ["pos", 0], negative=negative or ["neg", 0],
                latent_image=latent or ["empty", 0], denoise=denoise)


def decode(samples: str = "ks", vae: list | None = None) -> dict:
    """VAEDecode of output 0 of ``samples`` with ``vae`` (["vae", 0] unless given)."""
    return node("VAEDecode", samples=[samples, 0], vae=vae or ["vae", 0])


# --- numbers ---------------------------------------------------------------------------------------------------------


def jitter(module: Any, scale: float = 0.02) -> None:
    """Add ``scale`` × standard normal noise to every parameter, so norms and modulation are not at their init."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def seeded_noise(shape: tuple, seed: int) -> torch.Tensor:
    """The noise our samplers draw for ``seed`` (``make_noise`` on a CPU generator)."""
    from nodegraph.diffusion.sampling import make_noise

    return make_noise(shape, torch.Generator("cpu").manual_seed(seed))


def simple_sigmas(steps: int, shift: float, multiplier: float = 1.0, kind: str = "discrete") -> list[float]:
    """Our "simple" flow sigmas without the final 0, as the list a diffusers pipeline takes."""
    from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas

    return [float(s) for s in flow_sigmas("simple", steps, FlowSettings(kind, shift, multiplier))[:-1]]


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """A pipeline's [B, 3, H, W] images as our IMAGE [B, H, W, 3] float."""
    return images.permute(0, 2, 3, 1).float()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|."""
    return float((a - b).abs().max())


def assert_parity(ours: torch.Tensor, ref: torch.Tensor, what: str, limit: float = LIMIT) -> float:
    """Assert equal shapes and max |ours - ref| ≤ ``limit`` (printed as ``what``); returns the difference."""
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    diff = max_diff(ours, ref)
    print(f"{what}: max |diff| = {diff:.2e} (limit {limit:.2e})")
    assert diff <= limit
    return diff


def assert_video_run(engine: Engine, wf: dict, reference: torch.Tensor, frames: tuple, latent: tuple,
                     what: str) -> dict:
    """Run ``wf`` (timed): its frames "img" have shape ``frames`` as ``reference`` does and equal it ≤ 1/255, its
    latent "lat" has shape ``latent``, and the video is not blank; returns the captures."""
    cap, elapsed = run_timed(engine, wf)
    assert cap["img"].shape == frames == reference.shape
    assert cap["lat"]["samples"].shape == latent
    diff = max_diff(cap["img"], reference)
    print(f"{what}: {elapsed:.2f} s, max |diff| {diff:.2e}, peak RSS {peak_rss_mib():.0f} MiB")
    assert diff <= LIMIT
    assert float(cap["img"].std()) > 0.01  # not a blank video
    return cap


def assert_same_weights(ours: Any, ref: Any, label: str = "", skip: Callable[[str], bool] | None = None) -> None:
    """The two modules (or state dicts) hold the same tensor names and the same values (names ``skip`` drops aside)."""
    a = ours if isinstance(ours, dict) else ours.state_dict()
    b = ref if isinstance(ref, dict) else ref.state_dict()
    if skip is not None:
        a, b = ({k: v for k, v in d.items() if not skip(k)} for d in (a, b))
    assert set(a) == set(b), (label, sorted(set(a) ^ set(b))[:5])
    assert all(torch.equal(a[k], b[k]) for k in b), (label, [k for k in b if not torch.equal(a[k], b[k])][:3])


def custom_sample(model: Any, guider: Any, latent: dict, steps: int, seed: int, scheduler: str = "simple") -> tuple:
    """(out, denoised) of euler through ``flow.custom`` on ``model``'s schedule, as SamplerCustomAdvanced runs it."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import RandomNoise

    sigmas = custom.model_schedule(model, scheduler, steps, 1.0)
    return custom.sample_custom(guider, euler, sigmas, RandomNoise(seed), latent, DeviceManager(), model=model)


def scaled_fp8(state: dict, select: Callable[[str, torch.Tensor], bool], scale_name: str = "scale_weight",
               marker: bool = True, comfy_quant: bool = False) -> dict:
    """ComfyUI's scaled-fp8 form of ``state``: each selected weight as float8 / scale with its scale beside it."""
    out = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)} if marker else {}
    for key, value in state.items():
        if select(key, value):
            scale = value.abs().max() / 448.0
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + scale_name] = scale.reshape(())
            if comfy_quant:
                out[key[: -len("weight")] + "comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'),
                                                                          dtype=torch.uint8)
        else:
            out[key] = value
    return out


def byte_level_bpe(corpus: str, specials: list[str], vocab_size: int = 380) -> Any:
    """A tiny byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus`` (Qwen-style, ``specials`` first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus] * 4, trainer=trainer)
    return tok


# --- parameter counts ------------------------------------------------------------------------------------------------


def on_meta(build: Callable[[], Any], include_buffers: bool = False) -> Any:
    """``build()`` with its parameters (and buffers if asked) on the meta device: no memory, no weights."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=include_buffers):
        return build()


def parameter_count(model: Any) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


# --- ComfyUI_examples ------------------------------------------------------------------------------------------------


def load_example(path: Path, registry: Any = None) -> dict:
    """The API prompt of an example file: its "prompt", or its editor workflow converted with ``registry``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "prompt" in data:
        return data["prompt"]
    from nodegraph.ui_format import ui_to_api

    return ui_to_api(data.get("workflow", data), registry)


def example_classes(path: Path) -> set[str]:
    """The node classes an example file uses (its prompt's, or its editor workflow's but for notes)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "prompt" in data:
        return {n["class_type"] for n in data["prompt"].values()}
    return {n["type"] for n in data.get("workflow", data)["nodes"]} - EDITOR_ONLY


def assert_file_errors_only(report: ValidationReport, file_inputs: set[str], where: str = "",
                            allow: Callable[[str, dict], bool] | None = None) -> set[str]:
    """Every error of ``report`` is a missing model file (value_not_in_list on a ``file_inputs`` input), but those
    ``allow(class_type, error)`` lets through; returns the input names the errors name."""
    names = set()
    for node_id, entry in report.node_errors.items():
        for error in entry["errors"]:
            name = error["extra_info"].get("input_name")
            if allow is not None and allow(entry.get("class_type", ""), error):
                continue
            assert error["type"] == "value_not_in_list" and name in file_inputs, (where, node_id, error)
            names.add(name)
    return names


def validate_examples(paths: Iterable[Path], file_inputs: set[str], tmp_path: Path, skip_absent: bool = False,
                      allow: Callable[[str, str, dict], bool] | None = None) -> tuple[list[str], list, set[str]]:
    """Prepare each example on an empty home: each must fail only for its missing model files. Examples using a
    class we lack are skipped if ``skip_absent`` (else refused); ``allow(stem, class_type, error)`` lets an error
    through. Returns (checked stems, [(skipped stem, absent classes)], input names seen)."""
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    checked, skipped, names = [], [], set()
    paths = list(paths)
    assert paths, "no example files"
    for path in paths:
        absent = sorted(c for c in example_classes(path) if engine.registry.get(c) is None)
        if absent and skip_absent:
            skipped.append((path.stem, absent))
            continue
        assert not absent, (path.name, absent)
        checked.append(path.stem)
        with pytest.raises(ValidationReport) as info:  # the model files are missing here
            engine.prepare(load_example(path, engine.registry))
        rule = None if allow is None else (lambda cls, error, stem=path.stem: allow(stem, cls, error))
        names |= assert_file_errors_only(info.value, file_inputs, path.name, rule)
    print(f"\nexamples validated: {checked}; skipped for classes we lack: {skipped}")
    return checked, skipped, names


def shrink(prompt: dict, changes: dict[str, dict | Callable[[dict], None]]) -> dict:
    """``prompt`` with the inputs of each node whose class is in ``changes`` updated (or passed to a function)."""
    for item in prompt.values():
        change = changes.get(item["class_type"])
        if callable(change):
            change(item["inputs"])
        elif change:
            item["inputs"].update(change)
    return prompt


def copy_as(folder: Path, source: str, *names: str) -> None:
    """Copy ``folder/source`` under each of ``names`` (those not there yet)."""
    for name in names:
        if not (folder / name).exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / source, folder / name)


def save_picture(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    """A one-colour RGB picture at ``path`` (a LoadImage input)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def run_example(home: Path, out: Path, prompt: dict | Callable[[Engine], dict]) -> list[Path]:
    """Run an example prompt (or ``prompt(engine)``) on ``home``; returns the files written under ``out``."""
    engine = Engine(EngineConfig(home=home, output_dir=out))
    if callable(prompt):
        prompt = prompt(engine)
    try:
        prepared = engine.prepare(prompt)
    except ValidationReport as exc:
        raise AssertionError(exc.node_errors) from None
    engine.run(prepared).raise_for_status()
    return sorted(p for p in out.rglob("*") if p.is_file())


def assert_one_image(out: Path, size: tuple[int, int]) -> None:
    """Exactly one PNG under ``out``, of ``size`` and not blank."""
    import numpy as np
    from PIL import Image

    images = list(out.rglob("*.png"))
    assert len(images) == 1, images
    with Image.open(images[0]) as img:
        assert img.size == size
        assert float(np.asarray(img, dtype=np.float32).std()) > 0  # not a blank image


def assert_animation(path: Path, size: tuple[int, int], frames: int) -> None:
    """An animated picture (WEBP) of ``size`` with ``frames`` frames."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == size and getattr(im, "n_frames", 1) == frames
