"""Z-Image Fun ControlNet through ComfyUI's ModelPatchLoader + ZImageFunControlnet equals diffusers: a tiny
``ZImageControlNetModel`` saved as Alibaba's file (what ComfyUI reads from models/model_patches) loads with the
same weights, and UNETLoader + CLIPLoader(lumina2) + VAELoader + ModelPatchLoader + ZImageFunControlnet + KSampler
(euler/simple) + VAEDecode gives ZImageControlNetPipeline's image ≤ 1/255; strength 0 is no control; the other
patch kinds are refused by name; ComfyUI's template validates with only its files missing."""

from __future__ import annotations

import json
from pathlib import Path

import family_kit as kit
import pytest
import torch
from lumina_tiny import QWEN3_FILE, VAE_FILE, Z_FILES, Z_IMAGE, build

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT = 7, 3, 64, 3.0
PATCH = "Z-Image-Turbo-Fun-Controlnet-Union.safetensors"  # the template's file name
CONTROL = "control.png"
TEMPLATE = "image_z_image_turbo_fun_union_controlnet"


def _build(home: Path):
    """The tiny Lumina files plus a tiny Z-Image Fun ControlNet (one control layer) and a control picture."""
    from diffusers import ZImageControlNetModel
    from PIL import Image
    from safetensors.torch import save_file

    tiny = build(home)
    torch.manual_seed(1)
    net = ZImageControlNetModel(control_layers_places=[0], control_in_dim=16, dim=Z_IMAGE["dim"],
                                n_heads=Z_IMAGE["n_heads"], n_kv_heads=Z_IMAGE["n_kv_heads"], n_refiner_layers=2)
    with torch.no_grad():  # zero-initialised projections would make the control do nothing
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    net.eval()
    folder = home / "models" / "model_patches"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / PATCH))
    save_file({"controlnet_blocks.0.y_rms.weight": torch.ones(4), "img_in.weight": torch.ones(4, 64)},
              str(folder / "qwen_diffsynth.safetensors"))
    save_file({"feature_embedder.mid_layer_norm.bias": torch.ones(4)}, str(folder / "uso.safetensors"))
    pixels = torch.Generator().manual_seed(3)
    picture = (torch.rand(SIZE, SIZE, 3, generator=pixels) * 255).to(torch.uint8).numpy()
    (home / "input").mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(home / "input" / CONTROL)
    tiny.controlnet = net
    return tiny


tiny = kit.tiny_fixture(_build, "tiny-zimage-controlnet-home")
engine = kit.engine_fixture("tiny")


def graph(strength: float = 1.0, control: bool = True) -> dict:
    """ComfyUI's Z-Image Fun ControlNet graph (its template's core), image captured as "img"."""
    wf = {
        "unet": kit.unet_loader(Z_FILES["comfyui"]),
        "clip": kit.node("CLIPLoader", clip_name=QWEN3_FILE, type="lumina2", device="default"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILE),
        "patch": kit.node("ModelPatchLoader", name=PATCH),
        "load": kit.node("LoadImage", image=CONTROL),
        "cn": kit.node("ZImageFunControlnet", model=["aura", 0], model_patch=["patch", 0], vae=["vae", 0],
                       strength=strength, image=["load", 0]),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "aura": kit.node("ModelSamplingAuraFlow", model=["unet", 0], shift=SHIFT),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("cn" if control else "aura", SEED, STEPS, 1.0),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }
    return wf


def reference(tiny, scale: float) -> torch.Tensor:
    """ZImageControlNetPipeline's image [1, H, W, 3] with our KSampler's noise and shifted sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageControlNetPipeline
    from PIL import Image

    pipe = ZImageControlNetPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
                                    vae=tiny.vae, text_encoder=tiny.qwen3, tokenizer=tiny.qwen_tokenizer,
                                    transformer=tiny.z_image, controlnet=tiny.controlnet)
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    control = Image.open(tiny.home / "input" / CONTROL).convert("RGB")
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, sigmas=kit.simple_sigmas(STEPS, SHIFT),
                   guidance_scale=0.0, control_image=control, controlnet_conditioning_scale=scale, latents=noise,
                   output_type="pt").images
    return kit.channels_last(out)


def test_patch_file_loads_the_diffusers_weights(engine, tiny):
    net = kit.unwrap(kit.run(engine, {"patch": graph()["patch"], "p": kit.capture("patch")})["p"])
    assert type(net).__name__ == "ZImageControlNetModel"
    assert list(net.config.control_layers_places) == [0] and net.config.control_in_dim == 16
    kit.assert_same_weights(net, tiny.controlnet)


def test_graph_image_equals_z_image_controlnet_pipeline(engine, tiny):
    image = kit.run(engine, graph(0.8))["img"]
    assert image.shape == (1, SIZE, SIZE, 3)
    diff = kit.assert_parity(image, reference(tiny, 0.8), "Z-Image Fun ControlNet vs ZImageControlNetPipeline")
    print(f"Z-Image Fun ControlNet parity: max diff {diff:.2e}")
    plain = kit.run(engine, graph(control=False))["img"]
    assert kit.max_diff(image, plain) > 1e-3  # the control changes the image


def test_qwen_node_with_a_z_image_patch_is_z_image_fun_controlnet(engine):
    """ComfyUI's template wires the Z-Image Fun patch through QwenImageDiffsynthControlnet: the same image."""
    ours = kit.run(engine, graph(0.8))["img"]
    wf = graph(0.8)
    wf["cn"] = kit.node("QwenImageDiffsynthControlnet", model=["aura", 0], model_patch=["patch", 0], vae=["vae", 0],
                        image=["load", 0], strength=0.8)
    assert kit.max_diff(kit.run(engine, wf)["img"], ours) < 1e-6


def test_strength_zero_is_no_control(engine):
    zero = kit.run(engine, graph(0.0))["img"]
    plain = kit.run(engine, graph(control=False))["img"]
    assert kit.max_diff(zero, plain) < 1e-5


def test_control_image_of_another_size_is_scaled_as_comfyui(engine):
    """A 40x56 control picture for a 64x64 image: scaled ("area", centre crop) and encoded at the sampled size,
    as ImageScale(area, center) before the node gives."""
    wf = graph(0.8)
    wf["small"] = kit.node("ImageScale", image=["load", 0], upscale_method="bilinear", width=40, height=56,
                           crop="disabled")
    wf["cn"]["inputs"]["image"] = ["small", 0]
    lazy = kit.run(engine, wf)["img"]
    wf["fit"] = kit.node("ImageScale", image=["small", 0], upscale_method="area", width=SIZE, height=SIZE,
                         crop="center")
    wf["cn"]["inputs"]["image"] = ["fit", 0]
    assert kit.max_diff(kit.run(engine, wf)["img"], lazy) < 1e-5
    assert kit.max_diff(lazy, kit.run(engine, graph(control=False))["img"]) > 1e-3


@pytest.mark.parametrize(("name", "kind"), [("qwen_diffsynth.safetensors", "Qwen-Image DiffSynth"),
                                            ("uso.safetensors", "USO style projector")])
def test_other_patch_kinds_are_refused_by_name(engine, name, kind):
    message = kit.run_error(engine, {"patch": kit.node("ModelPatchLoader", name=name), "p": kit.capture("patch")})
    assert kind in message and "Z-Image Fun ControlNet" in message


def test_v1_patches_ignore_inpaint_inputs_as_comfyui(engine):
    """A v1 (16-channel) patch is no inpainting model: ComfyUI's patch uses only the control image."""
    base = kit.run(engine, graph(0.8))["img"]
    wf = graph(0.8)
    wf["cn"]["inputs"].update(inpaint_image=["load", 0], mask=["load", 1])
    assert kit.max_diff(kit.run(engine, wf)["img"], base) < 1e-6
    wf = graph(0.8)
    del wf["cn"]["inputs"]["image"]
    assert "connect a control image" in kit.run_error(engine, wf)


def test_inpaint_context_follows_comfyui():
    """v2's input: [control latent, mask channel, inpaint latent]; no mask → a zero channel and the whole inpaint
    image; a mask (the node's flipped one: 1 = keep) greys the inpaint image where 0 and is the mask channel."""
    from types import SimpleNamespace

    from nodegraph.diffusion.lumina.controlnet import control_context

    fmt = SimpleNamespace(shift_factor=0.1, scaling_factor=2.0)

    def encode(pixels):  # a stand-in VAE: 8x8 means of the first channel, 2 channels
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1)[:, :1], 8)
        return torch.cat([x, -x], dim=1)

    image, inpaint = torch.full((1, 16, 16, 3), 0.25), torch.full((1, 16, 16, 3), 0.75)
    assert control_context(encode, fmt, 2, image).allclose(torch.tensor([0.3, -0.7]).view(1, 2, 1, 1).expand(1, 2, 2, 2))
    ctx = control_context(encode, fmt, 5, image, inpaint)
    assert ctx.shape == (1, 5, 2, 2) and float(ctx[:, 2].abs().max()) == 0.0
    assert ctx[:, 3].allclose(torch.full((1, 2, 2), (0.75 - 0.1) * 2))
    keep = torch.zeros(1, 16, 16)
    keep[:, :, 8:] = 1.0  # keep the right half
    ctx = control_context(encode, fmt, 5, image, inpaint, keep)
    assert ctx[0, 2].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert ctx[0, 3, :, 0].allclose(torch.full((2,), (0.5 - 0.1) * 2))  # greyed where not kept
    assert ctx[0, 3, :, 1].allclose(torch.full((2,), (0.75 - 0.1) * 2))
    grey = control_context(encode, fmt, 5, None, inpaint)  # no control image: a mid-grey one
    assert grey[:, 0].allclose(torch.full((1, 2, 2), (0.5 - 0.1) * 2))
    with pytest.raises(ValueError, match="input channels"):
        control_context(encode, fmt, 7, image)


def _template() -> dict:
    templates = pytest.importorskip("comfyui_workflow_templates_json")
    path = Path(templates.__file__).parent / "templates" / f"{TEMPLATE}.json"
    if not path.exists():
        pytest.skip(f"{TEMPLATE} is not in this comfyui_workflow_templates_json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_official_template_validates_but_for_missing_files(tmp_path):
    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine
    from nodegraph.ui_format import ui_to_api
    from nodegraph.validation import ValidationReport

    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = ui_to_api(_template(), engine.registry)
    classes = {n["class_type"] for n in prompt.values()}
    assert {"ModelPatchLoader", "QwenImageDiffsynthControlnet"} <= classes  # ComfyUI's node for Z-Image Fun too
    with pytest.raises(ValidationReport) as info:  # the model files and the input picture are missing here
        engine.prepare(prompt)
    missing = set()
    for node_id, entry in info.value.node_errors.items():
        for error in entry["errors"]:
            assert error["type"] == "value_not_in_list", (node_id, error)
            missing.add(error["extra_info"]["input_name"])
    assert missing == {"image", "clip_name", "vae_name", "unet_name", "name"}


def test_official_template_runs_on_the_tiny_model(tiny, tmp_path):
    """The template (Canny of a picture → the patch through QwenImageDiffsynthControlnet) on the tiny files."""
    from nodegraph.ui_format import ui_to_api

    def prompt(engine):
        wf = ui_to_api(_template(), engine.registry)
        picture = next(n for n in wf.values() if n["class_type"] == "LoadImage")["inputs"]["image"]
        kit.save_picture(tiny.home / "input" / picture, (48, 32), (200, 40, 90))
        return kit.shrink(wf, {"KSampler": {"steps": 2}})

    kit.run_example(tiny.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (48, 32))


@pytest.mark.parametrize("broken", [False, True])
def test_version_2_files_load_and_run(engine, tiny, broken):
    """A v2 file (15 control layers, 33 input channels, control_noise_refiner; ComfyUI's "broken" v2.0 has zero
    refiner projections and reuses the control layers): config from shapes, weights round trip, the graph runs."""
    from diffusers import ZImageControlNetModel
    from safetensors.torch import save_file

    from nodegraph.diffusion.lumina.controlnet import (
        controlnet_config,
        load_model_patch,
    )

    torch.manual_seed(2)
    mode = "control_layers" if broken else "control_noise_refiner"
    net = ZImageControlNetModel(control_layers_places=[2 * i for i in range(15)], control_refiner_layers_places=[0, 1],
                                control_in_dim=33, add_control_noise_refiner=mode, dim=Z_IMAGE["dim"],
                                n_heads=Z_IMAGE["n_heads"], n_kv_heads=Z_IMAGE["n_kv_heads"], n_refiner_layers=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if broken:  # Alibaba's v2.0 file still holds the refiner, with zero output projections
        refiner = ZImageControlNetModel(control_layers_places=[0], control_in_dim=33,
                                        add_control_noise_refiner="control_noise_refiner", dim=Z_IMAGE["dim"],
                                        n_heads=Z_IMAGE["n_heads"], n_kv_heads=Z_IMAGE["n_kv_heads"])
        state.update({k: (torch.zeros_like(v) if k.endswith("after_proj.weight") else v).contiguous()
                      for k, v in refiner.state_dict().items() if k.startswith("control_noise_refiner.")})
    name = f"fun_v2{'_broken' if broken else ''}.safetensors"
    save_file(state, str(tiny.home / "models" / "model_patches" / name))
    config = controlnet_config({k: tuple(v.shape) for k, v in state.items()}, state)
    assert config["add_control_noise_refiner"] == mode and config["control_in_dim"] == 33
    assert config["control_layers_places"] == [2 * i for i in range(15)]  # ComfyUI: round(30 / 15) = 2
    kit.assert_same_weights(load_model_patch(tiny.home / "models" / "model_patches" / name, name=name), net)
    wf = graph()
    wf["patch"]["inputs"]["name"] = name
    image = kit.run(engine, wf)["img"]
    plain = kit.run(engine, graph(control=False))["img"]
    assert image.shape == (1, SIZE, SIZE, 3) and kit.max_diff(image, plain) > 1e-4
    wf["mask"] = kit.node("SolidMask", value=0.0, width=SIZE, height=SIZE)  # nothing to repaint: all kept
    wf["cn"]["inputs"].update(inpaint_image=["load", 0], mask=["mask", 0])
    inpainted = kit.run(engine, wf)["img"]
    assert kit.max_diff(inpainted, image) > 1e-4  # inpainting changes the input
    wf["small"] = kit.node("ImageScale", image=["load", 0], upscale_method="area", width=40, height=56,
                           crop="disabled")
    wf["cn"]["inputs"]["inpaint_image"] = ["small", 0]  # two sizes: both encoded at the sampled size
    assert kit.run(engine, wf)["img"].shape == (1, SIZE, SIZE, 3)
