"""The shipped SD1/SD2/SDXL configs are complete and right, and detection tells the architectures apart."""

from __future__ import annotations

import gc
import json

import pytest
import torch
from safetensors.torch import save_file

from nodegraph.diffusion.detect import CONFIGS_DIR, detect
from nodegraph.diffusion.ldm import unet_to_ldm, vae_to_ldm

UNET = "model.diffusion_model."
ARCHES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
# Parameter counts of the published models (UNet, VAE, text encoders).
PARAMS = {"sd1": {"unet": 859_520_964, "text_encoder": 123_060_480},
          "sd2": {"unet": 865_910_724, "text_encoder": 340_387_840},
          "sdxl": {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
          "sdxl_refiner": {"text_encoder_2": 694_659_840}}


def _meta_models(arch: str) -> dict[str, torch.nn.Module]:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = CONFIGS_DIR / arch
    with init_empty_weights():
        out = {"unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "unet"))),
               "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(str(root / "vae")))}
        for name in ("text_encoder", "text_encoder_2"):
            if (root / name).is_dir():
                cfg = CLIPTextConfig.from_pretrained(str(root / name))
                cls = CLIPTextModelWithProjection if "WithProjection" in cfg.architectures[0] else CLIPTextModel
                out[name] = cls(cfg)
    return out


@pytest.mark.parametrize("arch", ARCHES)
def test_configs_build_the_published_architectures(arch):
    """Built on the meta device (no memory): parameter counts match, and LDM names round-trip through diffusers."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    models = _meta_models(arch)
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert counts["vae"] == 83_653_863
    for name, expected in PARAMS[arch].items():
        assert counts[name] == expected, name
    unet = models["unet"]
    state = unet.state_dict()
    ldm = unet_to_ldm(state, unet.config.layers_per_block)
    assert len(ldm) == {"sd1": 686, "sd2": 686, "sdxl": 1680, "sdxl_refiner": 1220}[arch]
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert set(back) == set(state) and all(back[k].shape == state[k].shape for k in state)
    vstate = models["vae"].state_dict()
    vback = convert_ldm_vae_checkpoint(vae_to_ldm(vstate, 4), dict(models["vae"].config))
    assert set(vback) == set(vstate) and all(vback[k].shape == vstate[k].shape for k in vstate)


def test_sd1_config_builds_a_working_random_pipeline():
    """Real random weights from the SD1.5 configs: text encoder → UNet → VAE shapes fit together (~20 s)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodegraph.diffusion.loading import clip_tokenizer

    root = CONFIGS_DIR / "sd1"
    torch.manual_seed(0)
    with torch.no_grad():
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "text_encoder"))).eval()
        ids = clip_tokenizer()("a photo of a cat", padding="max_length", return_tensors="pt").input_ids
        context = te(ids).last_hidden_state
        del te
        assert context.shape == (1, 77, 768)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "unet"))).eval()
        latents = torch.randn(1, 4, 8, 8)
        eps = unet(latents, torch.tensor([999]), encoder_hidden_states=context).sample
        del unet
        gc.collect()
        assert eps.shape == latents.shape and torch.isfinite(eps).all()
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(root / "vae"))).eval()
        image = vae.decode(latents / vae.config.scaling_factor).sample
        assert image.shape == (1, 3, 64, 64)


def _fake_checkpoint(tmp_path, name: str, ctx: int, encoders: list[str], in_channels: int = 4,
                     extra: dict[str, torch.Tensor] | None = None, metadata: dict[str, str] | None = None):
    """A .safetensors file with just the tensors detection looks at (tiny tensors, the right names/shapes)."""
    tensors = {UNET + "input_blocks.0.0.weight": torch.zeros(320, in_channels, 3, 3, dtype=torch.float16),
               UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(1, ctx,
                                                                                           dtype=torch.float16)}
    for prefix in encoders:
        tensors[prefix + "marker.weight"] = torch.zeros(1)
    tensors.update(extra or {})
    path = tmp_path / name
    save_file(tensors, str(path), metadata=metadata)
    return path


SD1_TE = "cond_stage_model.transformer.text_model.encoder.layers.0."
SD2_TE = "cond_stage_model.model.transformer.resblocks.0."
XL_TE = ["conditioner.embedders.0.transformer.text_model.encoder.layers.0.",
         "conditioner.embedders.1.model.transformer.resblocks.0."]
REFINER_TE = "conditioner.embedders.0.model.transformer.resblocks.0."


def _sd2_norm(std: float) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.randn(320, generator=gen) * std}


def test_detects_sd1_sd2_sdxl_refiner(tmp_path):
    cases = {
        "sd1": _fake_checkpoint(tmp_path, "a.safetensors", 768, [SD1_TE]),
        "sd2": _fake_checkpoint(tmp_path, "b.safetensors", 1024, [SD2_TE], extra=_sd2_norm(0.2)),
        "sdxl": _fake_checkpoint(tmp_path, "c.safetensors", 2048, XL_TE),
        "sdxl_refiner": _fake_checkpoint(tmp_path, "d.safetensors", 1280, [REFINER_TE]),
    }
    for arch, path in cases.items():
        found = detect(path)
        assert found.arch == arch, (arch, found.reasons)
        shipped = json.loads((CONFIGS_DIR / arch / "unet" / "config.json").read_text())
        assert found.config("unet/config.json")["cross_attention_dim"] == shipped["cross_attention_dim"]
    assert "text_encoder_2" in detect(cases["sdxl"]).components
    assert detect(cases["sd1"]).prediction_type == "epsilon"
    assert detect(cases["sdxl"]).prediction_type == "epsilon"


def test_sd2_prediction_type(tmp_path):
    v = detect(_fake_checkpoint(tmp_path, "v.safetensors", 1024, [SD2_TE], extra=_sd2_norm(0.2)))
    eps = detect(_fake_checkpoint(tmp_path, "e.safetensors", 1024, [SD2_TE], extra=_sd2_norm(0.03)))
    assert (v.prediction_type, v.config("unet/config.json")["sample_size"]) == ("v_prediction", 96)
    assert (eps.prediction_type, eps.config("unet/config.json")["sample_size"]) == ("epsilon", 64)
    assert eps.config("scheduler/scheduler_config.json")["prediction_type"] == "epsilon"
    spec = detect(_fake_checkpoint(tmp_path, "s.safetensors", 1024, [SD2_TE], extra=_sd2_norm(0.2),
                                   metadata={"modelspec.prediction_type": "epsilon"}))
    assert spec.prediction_type == "epsilon"


def test_v_prediction_markers_and_inpainting(tmp_path):
    named = detect(_fake_checkpoint(tmp_path, "model-vpred.safetensors", 768, [SD1_TE]))
    assert named.prediction_type == "v_prediction"
    marked = detect(_fake_checkpoint(tmp_path, "x.safetensors", 2048, XL_TE,
                                     extra={"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)}))
    sched = marked.config("scheduler/scheduler_config.json")
    assert sched["prediction_type"] == "v_prediction" and sched["rescale_betas_zero_snr"] is True
    inpaint = detect(_fake_checkpoint(tmp_path, "inpaint.safetensors", 768, [SD1_TE], in_channels=9))
    assert inpaint.inpaint and inpaint.config("unet/config.json")["in_channels"] == 9


def test_shipped_tokenizers_pad_like_their_encoders():
    from nodegraph.diffusion.loading import _tokenizer

    for arch, name, pad in (("sd1", "tokenizer", 49407), ("sd2", "tokenizer", 0), ("sdxl", "tokenizer", 49407),
                            ("sdxl", "tokenizer_2", 0)):
        files = {f"{name}/tokenizer_config.json": (CONFIGS_DIR / arch / name / "tokenizer_config.json").read_text()}
        tok = _tokenizer(files, CONFIGS_DIR / arch, name)
        assert tok("a cat", padding="max_length").input_ids[-1] == pad, (arch, name)
        assert tok.model_max_length == 77


def test_configs_stay_small():
    size = sum(p.stat().st_size for p in CONFIGS_DIR.rglob("*") if p.is_file())
    assert size < 3 * 1024 * 1024
