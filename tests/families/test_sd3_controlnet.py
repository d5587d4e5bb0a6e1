"""SD3 ControlNets: ControlNetLoader reads an SD3ControlNetModel file (diffusers' layout, at the root or under
``controlnet.``), ControlNetApplySD3 feeds its block outputs into the SD3 transformer, and the graph's image equals
StableDiffusion3ControlNetPipeline's (≤ 1/255); strength 0 is no control; a UNet ControlNet on SD3 is refused."""

from __future__ import annotations

import family_kit as kit
import numpy as np
import pytest
import torch
from sd3_tiny import LAYOUTS, build
from test_sd3_parity import CFG, PROMPT, SEED, SHIFT, SIZE, STEPS, graph

from nodegraph.testing_graphs import capture_engine

CONTROLNET = "sd3-tiny-controlnet.safetensors"
STRENGTH = 0.8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny SD3.5, a 2-block SD3 ControlNet made from it (random, so every weight matters) and a hint PNG."""
    from diffusers import SD3ControlNetModel
    from PIL import Image
    from safetensors.torch import save_file

    sd3 = build(tmp_path_factory.mktemp("tiny-sd3-cn-home"))
    torch.manual_seed(3)
    cn = SD3ControlNetModel.from_transformer(sd3.transformer, num_layers=2,
                                                 num_extra_conditioning_channels=0).eval()
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = sd3.home / "models" / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in cn.state_dict().items()}
    save_file(state, str(folder / CONTROLNET))
    save_file({"controlnet." + k: v for k, v in state.items()}, str(folder / ("prefixed-" + CONTROLNET)))
    cfg = kit.home_config(sd3.home)
    rng = np.random.default_rng(0)
    pixels = (rng.random((SIZE // 8, SIZE // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    Image.fromarray(pixels).save(cfg.input_dir / "hint.png")
    return sd3, cn, cfg, Image.fromarray(pixels)


@pytest.fixture(scope="module")
def engine(tiny):
    return capture_engine(tiny[2])


def controlled(strength: float = STRENGTH, controlnet: str = CONTROLNET, apply: str = "ControlNetApplySD3") -> dict:
    wf = graph(LAYOUTS["comfyui"])
    wf["hint"] = kit.node("LoadImage", image="hint.png")
    wf["cn"] = kit.node("ControlNetLoader", control_net_name=controlnet)
    wf["apply"] = kit.node(apply, positive=["pos", 0], negative=["neg", 0], control_net=["cn", 0], vae=["vae", 0],
                       image=["hint", 0], strength=strength, start_percent=0.0, end_percent=1.0)
    wf["ks"]["inputs"].update(positive=["apply", 0], negative=["apply", 1])
    wf["ctl"] = kit.capture("cn")
    return wf


def _reference(tiny, monkeypatch) -> torch.Tensor:
    """StableDiffusion3ControlNetPipeline's image with the VAE's posterior mode for the hint (ComfyUI's encode)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        StableDiffusion3ControlNetPipeline,
    )
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    sd3, cn, _, image = tiny
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    base = sd3.pipeline(SHIFT)
    pipe = StableDiffusion3ControlNetPipeline(
        transformer=sd3.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), vae=sd3.vae,
        text_encoder=sd3.clip_l, tokenizer=base.tokenizer, text_encoder_2=sd3.clip_g, tokenizer_2=base.tokenizer_2,
        text_encoder_3=sd3.t5, tokenizer_3=base.tokenizer_3, controlnet=cn)
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                   sigmas=list(np.linspace(1.0, 1.0 / STEPS, STEPS)), latents=noise, max_sequence_length=77,
                   control_image=image, controlnet_conditioning_scale=STRENGTH, output_type="pt").images
    return kit.channels_last(out)


def test_loader_reads_both_layouts_with_the_same_weights(engine, tiny):
    _, cn, _, _ = tiny
    for name in (CONTROLNET, "prefixed-" + CONTROLNET):
        wf = {"cn": kit.node("ControlNetLoader", control_net_name=name), "ctl": kit.capture("cn")}
        model = kit.run(engine, wf)["ctl"]
        from nodegraph.models.handles import resolve

        loaded = resolve(model.model)
        assert loaded.kind == "sd3_controlnet" and loaded.family == "sd3"
        kit.assert_same_weights(loaded.module, cn)
        assert loaded.module.config.num_layers == 2 and loaded.module.config.force_zeros_for_pooled_projection


def test_graph_image_equals_sd3_controlnet_pipeline(engine, tiny, monkeypatch):
    """UNETLoader + ControlNetLoader + ControlNetApplySD3 (VAE) + KSampler (cfg) = the diffusers pipeline; the
    control changes the image, and strength 0 gives the image without it."""
    image = kit.run(engine, controlled())["img"]
    kit.assert_parity(image, _reference(tiny, monkeypatch),
                      "SD3 ControlNet parity vs StableDiffusion3ControlNetPipeline")
    plain = kit.run(engine, graph(LAYOUTS["comfyui"]))["img"]
    assert kit.max_diff(image, plain) > 2 / 255
    assert kit.max_diff(kit.run(engine, controlled(0.0))["img"], plain) == 0.0


def test_controlnet_apply_advanced_with_the_vae_is_the_same(engine):
    a = kit.run(engine, controlled())["img"]
    b = kit.run(engine, controlled(apply="ControlNetApplyAdvanced"))["img"]
    assert kit.max_diff(a, b) == 0.0


def test_unet_controlnet_on_sd3_is_refused(engine):
    with pytest.raises(Exception) as failed:
        kit.run(engine, controlled(controlnet="nodegraph-shapes-canny-v1"))
    assert "not SD3" in str(failed.value) and "SD3 ControlNet" in str(failed.value)


def _stability_layout(state: dict) -> dict:
    """Stability's SD3.5 ControlNet names for a diffusers SD3ControlNetModel state (single-stream blocks)."""
    names = {"attn.to_out.0": "attn.proj", "ff.net.0.proj": "mlp.fc1", "ff.net.2": "mlp.fc2",
             "norm1.linear": "adaLN_modulation.1"}
    out = {"control_type": torch.tensor(0.0)}  # blur: the hint as is
    for key, value in state.items():
        for a, b in names.items():
            key = key.replace(f".{a}.", f".{b}.")
        if ".attn.to_q." in key:
            out[key.replace("to_q", "qkv")] = torch.cat([state[key.replace("to_q", f"to_{c}")] for c in "qkv"])
        elif ".attn.to_k." not in key and ".attn.to_v." not in key:
            out[key] = value.contiguous()
    return out


def test_sd35_controlnet_in_stability_format_equals_the_pipeline(engine, tiny, monkeypatch):
    """Stability's sd3.5_large_controlnet_* layout (single-stream blocks, the transformer's position embedding, the
    VAE's shift kept) loads as diffusers' conversion script makes it and gives the pipeline's image."""
    from diffusers import SD3ControlNetModel
    from safetensors.torch import save_file

    from nodegraph.models.handles import resolve

    sd3, _, cfg, _ = tiny
    torch.manual_seed(4)
    cn = SD3ControlNetModel(patch_size=2, in_channels=16, num_layers=2, attention_head_dim=32, num_attention_heads=1,
                            joint_attention_dim=None, caption_projection_dim=32, pooled_projection_dim=80,
                            out_channels=16, pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False,
                            force_zeros_for_pooled_projection=False).eval()
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    name = "sd3.5-tiny-controlnet-blur.safetensors"
    save_file(_stability_layout(cn.state_dict()), str(cfg.model_dir("controlnet") / name))
    cap = kit.run(engine, controlled(controlnet=name))
    loaded = resolve(cap["ctl"].model).module
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in cn.state_dict().items())
    kit.assert_parity(cap["img"], _reference((sd3, cn, cfg, tiny[3]), monkeypatch),
                  "SD3.5 ControlNet (Stability format) parity vs the pipeline")


@pytest.mark.parametrize("example, controlnet", [
    ("sd3.5_large_canny_controlnet_example", "sd3.5_large_controlnet_canny.safetensors"),
    ("sd3_controlnet_example", "sd3_controlnet_canny.safetensors")])
def test_comfyui_controlnet_examples_run_on_the_tiny_model(tmp_path, tiny, example, controlnet):
    """ComfyUI_examples' SD3 and SD3.5 ControlNet graphs (Canny, ControlNetApplySD3/Advanced) run unchanged but for
    sizes and steps, on the tiny files saved under the examples' names."""
    from pathlib import Path

    from diffusers import SD3ControlNetModel
    from safetensors.torch import save_file
    from sd3_tiny import CHECKPOINT

    sd3, cn, cfg, image = tiny
    models = sd3.home / "models"
    kit.copy_as(models / "checkpoints", CHECKPOINT, "sd3.5_large_fp8_scaled.safetensors",
            "sd3_medium_incl_clips_t5xxlfp8.safetensors")
    if "sd3.5" in controlnet:
        sd35 = SD3ControlNetModel(patch_size=2, in_channels=16, num_layers=2, attention_head_dim=32,
                                  num_attention_heads=1, joint_attention_dim=None, caption_projection_dim=32,
                                  pooled_projection_dim=80, out_channels=16, pos_embed_max_size=None,
                                  pos_embed_type=None, use_pos_embed=False, force_zeros_for_pooled_projection=False)
        state = dict(_stability_layout(sd35.state_dict()), control_type=torch.tensor(1.0))  # canny
    else:
        state = {k: v.contiguous() for k, v in cn.state_dict().items()}
    save_file(state, str(models / "controlnet" / controlnet))
    prompt = kit.shrink(kit.load_example(Path(__file__).parent / "sd3_examples" / f"{example}.json"), {
        "EmptySD3LatentImage": {"width": 64, "height": 64}, "ImageScale": {"width": 64, "height": 64},
        "KSampler": {"steps": 2}, "LoadImage": lambda inputs: image.save(cfg.input_dir / inputs["image"])})
    kit.run_example(sd3.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))


def test_an_sd3_controlnet_on_a_unet_fails_clearly():
    from types import SimpleNamespace

    from nodegraph.diffusion.controlnet import _check_fits

    model = SimpleNamespace(kind="sd3_controlnet", source="sd3.5_large_controlnet_canny.safetensors")
    with pytest.raises(ValueError, match="is an SD3 ControlNet; use it with an SD3"):
        _check_fits(model, SimpleNamespace(block_out_channels=[32, 64], cross_attention_dim=32), "positive")
