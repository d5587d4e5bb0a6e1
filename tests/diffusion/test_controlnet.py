"""ControlNet and T2I-Adapter on the tiny model: parity with diffusers' pipelines (single, chained ↔
MultiControlNetModel, T2I-Adapter), step ranges, the k-diffusion path, single-file layouts, Canny and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import make_engine, run

from nodegraph.diffusion.controlnet_files import from_state_dict, load_control_model
from nodegraph.diffusion.detect import UnknownModelError
from nodegraph.diffusion.ldm import unet_name_to_ldm
from nodegraph.validation import ValidationReport

PIXEL = 1.0 / 255.0
W, H = 64, 48  # not square, so a transposed hint would show


def _controlnet(unet, seed: int):
    """A ControlNet copied from the tiny UNet whose zero convs are randomised, so that it changes the image."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for block in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block]:
            block.weight.normal_(0.0, 0.3)
            block.bias.normal_(0.0, 0.05)
        cn.controlnet_cond_embedding.conv_out.weight.normal_(0.0, 0.3)
    return cn.eval()


def _adapter(seed: int):
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    a = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=2, adapter_type="full_adapter")
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(3.0)
    return a.eval()


@pytest.fixture(scope="module")
def nets(tiny_sd):
    """Two ControlNets and a T2I-Adapter saved as diffusers folders in models/controlnet."""
    folder = tiny_sd.config.model_dir("controlnet")
    folder.mkdir(parents=True, exist_ok=True)
    out = {"cn1": _controlnet(tiny_sd.components["unet"], 1), "cn2": _controlnet(tiny_sd.components["unet"], 2),
           "t2i": _adapter(3)}
    for name, model in out.items():
        model.save_pretrained(str(folder / name), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def engine(tiny_sd, nets):
    return make_engine(tiny_sd.config)


def _hint(shape: str, cx: float) -> dict:
    return {"class_type": "ShapeImage", "inputs": {"shape": shape, "color": "white", "background": "black",
                                                   "size": 64, "center_x": cx, "center_y": 0.5, "radius": 0.25}}


def _graph(controls: list[tuple[str, str, float]], *, steps: int = 4, sampler: str = "euler", start: float = 0.0,
           end: float = 1.0, old: bool = False) -> dict:
    """txt2img with ControlNetApplyAdvanced per (net, hint shape, strength), chained in order; hints are 64×64
    ShapeImages cropped to the 64×48 output by the hint resize (centre crop, as ComfyUI)."""
    wf = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": W, "height": H, "batch_size": 1}},
    }
    pos, neg = ["pos", 0], ["neg", 0]
    for i, (net, shape, strength) in enumerate(controls):
        wf[f"load{i}"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": net}}
        wf[f"hint{i}"] = _hint(shape, 0.3 + 0.4 * i)
        if old:
            wf[f"apply{i}"] = {"class_type": "ControlNetApply", "inputs": {
                "conditioning": pos, "control_net": [f"load{i}", 0], "image": [f"hint{i}", 0], "strength": strength}}
            pos = [f"apply{i}", 0]
            continue
        wf[f"apply{i}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": pos, "negative": neg, "control_net": [f"load{i}", 0], "image": [f"hint{i}", 0],
            "strength": strength, "start_percent": start, "end_percent": end}}
        pos, neg = [f"apply{i}", 0], [f"apply{i}", 1]
    wf["ks"] = {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": 7, "steps": steps, "cfg": 7.5, "sampler_name": sampler, "scheduler": "normal",
        "positive": pos, "negative": neg, "latent_image": ["empty", 0], "denoise": 1.0}}
    wf["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    wf["img"] = {"class_type": "Capture", "inputs": {"value": ["dec", 0]}}
    for i in range(len(controls)):
        wf[f"h{i}"] = {"class_type": "Capture", "inputs": {"value": [f"hint{i}", 0]}}
    return wf


def _image(engine, wf) -> tuple[np.ndarray, dict]:
    result, cap = run(engine, wf)
    result.raise_for_status()
    return cap["img"].numpy(), cap


def _cropped(hint) -> torch.Tensor:
    """The 64×64 hint centre-cropped to 64×48, NCHW (what the pipeline is given at the output size)."""
    return hint[:, 8:56].movedim(-1, 1).contiguous()


def _pipe(tiny_sd, cls_name: str, **parts):
    import diffusers

    p = getattr(diffusers, cls_name).from_pretrained(str(tiny_sd.folder), safety_checker=None,
                                                     requires_safety_checker=False, **parts)
    p.scheduler = diffusers.EulerDiscreteScheduler.from_config(p.scheduler.config, timestep_spacing="linspace")
    p.set_progress_bar_config(disable=True)
    return p


def _reference(pipe, **kw) -> np.ndarray:
    return pipe("a red circle", negative_prompt="blue", height=H, width=W, num_inference_steps=4, guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(7), output_type="np", **kw).images


def test_controlnet_matches_diffusers_pipeline(engine, tiny_sd, nets):
    ours, cap = _image(engine, _graph([("cn1", "square", 0.8)]))
    ref = _reference(_pipe(tiny_sd, "StableDiffusionControlNetPipeline", controlnet=nets["cn1"]),
                     image=_cropped(cap["h0"]), controlnet_conditioning_scale=0.8)
    plain, _ = _image(engine, _graph([]))
    assert ours.shape == ref.shape == (1, H, W, 3)
    assert np.abs(ours - plain).max() > 0.05  # the ControlNet changes the image …
    print(f"ControlNet vs StableDiffusionControlNetPipeline: max |diff| {np.abs(ours - ref).max() * 255:.4f}/255")
    assert np.abs(ours - ref).max() <= PIXEL  # … exactly as diffusers' pipeline does


def test_chained_controlnets_match_multicontrolnet(engine, tiny_sd, nets):
    ours, cap = _image(engine, _graph([("cn1", "square", 0.7), ("cn2", "triangle", 1.3)]))
    ref = _reference(_pipe(tiny_sd, "StableDiffusionControlNetPipeline", controlnet=[nets["cn1"], nets["cn2"]]),
                     image=[_cropped(cap["h0"]), _cropped(cap["h1"])], controlnet_conditioning_scale=[0.7, 1.3])
    single, _ = _image(engine, _graph([("cn1", "square", 0.7)]))
    assert np.abs(ours - single).max() > 0.05
    print(f"chained ControlNets vs MultiControlNetModel: max |diff| {np.abs(ours - ref).max() * 255:.4f}/255")
    assert np.abs(ours - ref).max() <= PIXEL


def test_t2i_adapter_matches_diffusers_pipeline(engine, tiny_sd, nets):
    from PIL import Image

    ours, cap = _image(engine, _graph([("t2i", "circle", 0.9)]))
    hint = Image.fromarray((cap["h0"][0, 8:56].numpy() * 255).round().astype(np.uint8))
    ref = _reference(_pipe(tiny_sd, "StableDiffusionAdapterPipeline", adapter=nets["t2i"]), image=hint,
                     adapter_conditioning_scale=0.9)
    plain, _ = _image(engine, _graph([]))
    assert np.abs(ours - plain).max() > 0.05
    print(f"T2I-Adapter vs StableDiffusionAdapterPipeline: max |diff| {np.abs(ours - ref).max() * 255:.4f}/255")
    assert np.abs(ours - ref).max() <= PIXEL


def test_step_range_and_strength(engine):
    plain, _ = _image(engine, _graph([]))
    never, _ = _image(engine, _graph([("cn1", "square", 1.0)], start=0.0, end=0.0))
    assert np.abs(never - plain).max() == 0.0  # end_percent 0: never active (ComfyUI's rule)
    late, _ = _image(engine, _graph([("cn1", "square", 1.0)], start=0.5, end=1.0))
    full, _ = _image(engine, _graph([("cn1", "square", 1.0)]))
    assert 0.0 < np.abs(late - plain).max() and np.abs(late - full).max() > 0.01
    zero, _ = _image(engine, _graph([("cn1", "square", 0.0)]))
    assert np.abs(zero - plain).max() == 0.0


def test_old_apply_controls_positive_only_and_k_sampler_path(engine):
    plain, _ = _image(engine, _graph([]))
    old, _ = _image(engine, _graph([("cn1", "square", 1.0)], old=True))
    adv, _ = _image(engine, _graph([("cn1", "square", 1.0)]))
    assert np.abs(old - plain).max() > 0.01 and np.abs(old - adv).max() > 0.01
    # a k-diffusion sampler (custom.KDenoiser → side_predictions) is steered too
    k_plain, _ = _image(engine, _graph([], sampler="dpmpp_2m"))
    k_ctrl, _ = _image(engine, _graph([("cn1", "square", 1.0)], sampler="dpmpp_2m"))
    assert np.abs(k_ctrl - k_plain).max() > 0.05


# ---- files -----------------------------------------------------------------------------------------------------------

def _controlnet_to_original(cn) -> dict[str, torch.Tensor]:
    """The original (lllyasviel) layout of a diffusers ControlNet, under ``control_model.``."""
    state = cn.state_dict()
    per = int(cn.config.layers_per_block)
    hint = sorted({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")}, key=int)
    out = {}
    for k, v in state.items():
        if k.startswith("controlnet_cond_embedding."):
            part, p = k.split(".")[1], k.split(".")[-1]
            idx = 0 if part == "conv_in" else 2 * (len(hint) + 1) if part == "conv_out" else 2 * (int(k.split(".")[2]) + 1)
            out[f"input_hint_block.{idx}.{p}"] = v
        elif k.startswith("controlnet_down_blocks."):
            out[f"zero_convs.{k.split('.')[1]}.0.{k.split('.')[-1]}"] = v
        elif k.startswith("controlnet_mid_block."):
            out[f"middle_block_out.0.{k.split('.')[-1]}"] = v
        else:
            out[unet_name_to_ldm(k, per, set())] = v
    return {"control_model." + k: v for k, v in out.items()}


def _adapter_to_original(state: dict[str, torch.Tensor], res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """TencentARC's flat layout: ``adapter.body.B.resnets.R.x`` → ``body.{B*2+R}.x``, in_conv on the first."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[1] == "conv_in":
            out[".".join(parts[1:])] = v
        elif parts[3] == "in_conv":
            out[f"body.{int(parts[2]) * res_blocks}." + ".".join(parts[3:])] = v
        else:
            out[f"body.{int(parts[2]) * res_blocks + int(parts[4])}." + ".".join(parts[5:])] = v
    return out


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_single_files_load_with_the_same_weights(tmp_path, nets):
    from safetensors.torch import save_file

    original = tmp_path / "control_original.safetensors"
    save_file(_controlnet_to_original(nets["cn1"]), str(original))
    loaded = load_control_model(original)
    assert loaded.kind == "controlnet" and loaded.family == "custom"
    _same_weights(loaded.module, nets["cn1"])
    assert list(loaded.module.config.conditioning_embedding_out_channels) == [16, 32]
    flat = tmp_path / "diffusers_names.safetensors"
    save_file(nets["cn2"].state_dict(), str(flat))
    _same_weights(load_control_model(flat).module, nets["cn2"])
    adapter = _adapter_to_original(nets["t2i"].state_dict())
    t2i = from_state_dict(adapter, "t2i_original.safetensors")
    assert t2i.kind == "t2i_adapter"
    _same_weights(t2i.module, nets["t2i"])


def test_diff_controlnet_adds_the_base_unet(tiny_sd, nets):
    unet = tiny_sd.components["unet"]
    base = unet.state_dict()
    full = nets["cn1"].state_dict()
    diff = {k: (v - base[k] if k in base else v) for k, v in full.items()}
    diff["difference"] = torch.zeros(1)
    with pytest.raises(UnknownModelError, match="DiffControlNetLoader"):
        from_state_dict(dict(diff), "diff.safetensors")
    _same_weights(from_state_dict(diff, "diff.safetensors", unet).module, nets["cn1"])


def test_unknown_and_pickle_files_are_refused_clearly(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(1)}, str(other))
    with pytest.raises(UnknownModelError, match=r"neither a ControlNet nor a T2I-Adapter.*foo.weight"):
        load_control_model(other)
    pickle = tmp_path / "control.pth"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(ValueError, match="pickle"):
        load_control_model(pickle)


def test_canny_matches_kornia_and_thresholds(engine):
    from kornia.filters import canny

    wf = {"shape": {"class_type": "ShapeImage", "inputs": {"shape": "square", "color": "yellow",
                                                          "background": "black", "size": 64, "center_x": 0.5,
                                                          "center_y": 0.5, "radius": 0.25}},
          "canny": {"class_type": "Canny", "inputs": {"image": ["shape", 0], "low_threshold": 0.4,
                                                     "high_threshold": 0.8}},
          "img": {"class_type": "Capture", "inputs": {"value": ["canny", 0]}},
          "src": {"class_type": "Capture", "inputs": {"value": ["shape", 0]}}}
    result, cap = run(engine, wf)
    result.raise_for_status()
    edges = cap["img"]
    assert edges.shape == (1, 64, 64, 3) and set(edges.unique().tolist()) == {0.0, 1.0}
    ref = canny(cap["src"].movedim(-1, 1), 0.4, 0.8)[1].repeat(1, 3, 1, 1).movedim(1, -1)
    assert torch.equal(edges, ref)
    assert edges[0, 32, :, 0].sum() == 2  # a row through the square crosses two edges
    wf["canny"]["inputs"]["low_threshold"] = 0.9
    with pytest.raises(ValidationReport) as info:
        engine.prepare(wf)
    message = info.value.node_errors["canny"]["errors"][0]["message"]
    assert "low_threshold" in message and "high_threshold" in message


def test_sdxl_controlnet_matches_diffusers_pipeline(tiny_sdxl):
    """SDXL ControlNets get the pooled text and size conditioning (added_cond_kwargs) as the UNet does."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline

    cn = _controlnet(tiny_sdxl.components["unet"], 5)
    folder = tiny_sdxl.config.model_dir("controlnet")
    folder.mkdir(parents=True, exist_ok=True)
    cn.save_pretrained(str(folder / "xl-cn"), safe_serialization=True)
    engine = make_engine(tiny_sdxl.config)
    wf = _graph([("xl-cn", "square", 1.1)], steps=3)
    wf["ckpt"]["inputs"]["ckpt_name"] = "tiny-sdxl"
    wf["pos"]["inputs"]["text"], wf["neg"]["inputs"]["text"] = "a green tree", "red"
    ours, cap = _image(engine, wf)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(tiny_sdxl.folder), controlnet=cn)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a green tree", negative_prompt="red", image=_cropped(cap["h0"]), controlnet_conditioning_scale=1.1,
               height=H, width=W, num_inference_steps=3, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    print(f"SDXL ControlNet vs StableDiffusionXLControlNetPipeline: max |diff| {np.abs(ours - ref).max() * 255:.4f}/255")
    assert np.abs(ours - ref).max() <= PIXEL


def test_control_models_are_held_by_the_model_manager(engine, tiny_sd):
    from nodegraph.models import model_manager

    _image(engine, _graph([("cn2", "circle", 1.0)], steps=1))
    manager = model_manager(engine.services, engine.config)
    held = [(kind, name) for kind, name, _ in manager.loaded()]
    assert ("controlnet", "cn2") in held
    assert manager.evict(next(k for k in manager._entries if k[0] == "controlnet" and "cn2" in str(k)))
    _image(engine, _graph([("cn2", "circle", 1.0)], steps=2))  # the cached CONTROL_NET handle reloads its model
    assert manager.stats.reloads >= 1


def test_embedded_controlnet_places_the_shape(tmp_path):
    """The shipped workflow: the edge map of a triangle at the top left puts the red triangle there."""
    import json
    from pathlib import Path

    from nodegraph.config import EngineConfig
    from nodegraph.diffusion.controlnet_files import EMBEDDED_CONTROLNET_NAME, controlnet_names
    from nodegraph.training.controlnet_stage import _centroid

    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    assert controlnet_names(config)[0] == EMBEDDED_CONTROLNET_NAME
    wf = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "controlnet.json").read_text())
    wf["cap"] = {"class_type": "Capture", "inputs": {"value": ["8", 0]}}
    engine = make_engine(config)
    _, cap = run(engine, wf)
    steered = (cap["cap"][0].numpy() * 255).astype(np.uint8)
    hint = wf["10"]["inputs"]
    cx, cy = _centroid(steered)
    assert abs(cx - hint["center_x"] * 64) < 8 and abs(cy - hint["center_y"] * 64) < 10  # triangle: mass sits low
    wf["13"]["inputs"]["strength"] = 0.0
    _, cap = run(engine, wf)
    free = _centroid((cap["cap"][0].numpy() * 255).astype(np.uint8))
    assert np.hypot(free[0] - cx, free[1] - cy) > 8  # without the edges the shape lands elsewhere


def test_controlnet_of_another_family_fails_clearly(engine, tiny_sd):
    from diffusers import ControlNetModel

    torch.manual_seed(9)
    other = ControlNetModel(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            layers_per_block=2, cross_attention_dim=48, attention_head_dim=8, norm_num_groups=32,
                            conditioning_embedding_out_channels=(16, 32))
    other.save_pretrained(str(tiny_sd.config.model_dir("controlnet") / "other-family"), safe_serialization=True)
    result, _ = run(engine, _graph([("other-family", "square", 1.0)], steps=1))
    assert result.status == "error"
    message = str(result.error)
    assert "other-family" in message and "text width 48" in message and "made for this checkpoint" in message


@pytest.mark.parametrize("name", ["controlnet_sd15", "controlnet_sdxl", "t2i_adapter_sd15", "t2i_adapter_sdxl"])
def test_full_size_layouts_detect_the_shipped_configs(name):
    """Real-size files (shapes only, no weights): the original layout maps to diffusers names and the shapes give
    back exactly the shipped config, so SD1.5/SDXL ControlNets and T2I-Adapters load offline."""
    import json

    from accelerate import init_empty_weights
    from diffusers import ControlNetModel, T2IAdapter

    from nodegraph.diffusion import controlnet_files as cf

    shipped = json.loads((cf.CONTROL_CONFIGS / f"{name}.json").read_text())
    cls = ControlNetModel if shipped["_class_name"] == "ControlNetModel" else T2IAdapter
    with init_empty_weights():
        model = cls.from_config(shipped)
    if cls is T2IAdapter:
        state = cf._adapter_from_original(_adapter_to_original(model.state_dict()))
        cfg, family = cf.adapter_config(state)
    else:
        original = {k.removeprefix("control_model."): v for k, v in _controlnet_to_original(model).items()}
        assert "input_hint_block.14.weight" in original  # the real files' hint encoder: 8 convs, conv_out at 14
        state = cf._controlnet_from_original(original)
        assert set(state) == set(model.state_dict())
        cfg, family = cf.controlnet_config(state)
    assert family == ("sdxl" if name.endswith("sdxl") else "sd1")
    assert {k: v for k, v in cfg.items() if not k.startswith("_")} == {k: v for k, v in shipped.items()
                                                                       if not k.startswith("_")}


def test_controlnet_with_area_conditioning(engine):
    """Area-composed entries (``regions``) get their control too: the hint is fitted to the area's crop."""
    def graph(strength: float) -> dict:
        wf = _graph([("cn1", "square", strength)], steps=2)
        wf["area"] = {"class_type": "ConditioningSetArea", "inputs": {
            "conditioning": ["pos", 0], "width": 64, "height": 64, "x": 32, "y": 0, "strength": 1.0}}
        wf["both"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                      "conditioning_2": ["area", 0]}}
        wf["apply0"]["inputs"]["positive"] = ["both", 0]
        return wf

    plain, _ = _image(engine, graph(0.0))
    steered, _ = _image(engine, graph(1.0))
    assert np.isfinite(steered).all() and np.abs(steered - plain).max() > 0.05
