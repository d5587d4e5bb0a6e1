"""ControlNetInpaintingAliMamaApply (nodes/controlnet.py): an ordinary ControlNet is applied exactly as
ControlNetApplyAdvanced with the VAE (ComfyUI's behaviour when the ControlNet has no concat_mask); AliMama's
inpainting SD3 ControlNet (hint latent + mask, 17 input channels) fails at run time naming the file and what works."""

from __future__ import annotations

import pytest
import torch
from graphs import make_engine, run, txt2img


@pytest.fixture(scope="module")
def engine(tiny_sd):
    from diffusers import ControlNetModel, SD3ControlNetModel

    folder = tiny_sd.config.model_dir("controlnet")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(4)
    cn = ControlNetModel.from_unet(tiny_sd.components["unet"], conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for block in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block]:
            block.weight.normal_(0.0, 0.3)
        cn.controlnet_cond_embedding.conv_out.weight.normal_(0.0, 0.3)
    cn.save_pretrained(str(folder / "plain-cn"), safe_serialization=True)
    inpaint = SD3ControlNetModel(sample_size=8, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=8,
                                 num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                 pooled_projection_dim=32, out_channels=16, pos_embed_max_size=16,
                                 extra_conditioning_channels=1)
    inpaint.save_pretrained(str(folder / "alimama-sd3-inpaint"), safe_serialization=True)
    return make_engine(tiny_sd.config)


def _graph(apply: str | None, net: str = "plain-cn", strength: float = 0.9) -> dict:
    wf = txt2img(steps=2, width=64, height=64)
    if apply is None:
        return wf
    wf["load"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": net}}
    wf["hint"] = {"class_type": "ShapeImage", "inputs": {"shape": "circle", "color": "white", "background": "black",
                                                         "size": 64, "center_x": 0.4, "center_y": 0.5,
                                                         "radius": 0.25}}
    inputs = {"positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["load", 0], "image": ["hint", 0],
              "strength": strength, "start_percent": 0.0, "end_percent": 1.0, "vae": ["ckpt", 2]}
    if apply == "ControlNetInpaintingAliMamaApply":
        wf["mask"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
        inputs["mask"] = ["mask", 0]
    wf["apply"] = {"class_type": apply, "inputs": inputs}
    wf["ks"]["inputs"]["positive"], wf["ks"]["inputs"]["negative"] = ["apply", 0], ["apply", 1]
    return wf


def _latent(engine, wf) -> torch.Tensor:
    result, captured = run(engine, wf)
    result.raise_for_status()
    return captured["lat"]["samples"]


def test_plain_controlnet_is_applied_as_apply_controlnet(engine):
    alimama = _latent(engine, _graph("ControlNetInpaintingAliMamaApply"))
    advanced = _latent(engine, _graph("ControlNetApplyAdvanced"))
    plain = _latent(engine, _graph(None))
    assert torch.equal(alimama, advanced)
    assert (alimama - plain).abs().max() > 1e-3  # the ControlNet acted
    assert torch.equal(_latent(engine, _graph("ControlNetInpaintingAliMamaApply", strength=0.0)), plain)


def test_inpainting_sd3_controlnet_fails_clearly(engine):
    result, _ = run(engine, _graph("ControlNetInpaintingAliMamaApply", net="alimama-sd3-inpaint"))
    assert result.status == "error"
    message = str(result.error)
    assert "alimama-sd3-inpaint" in message and "inpainting SD3 ControlNet" in message
    assert "InpaintModelConditioning" in message
