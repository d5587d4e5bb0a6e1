"""TAESD: VAELoader's taesd/taesdxl/taesd3/taef1 (AutoencoderTiny from madebyollin/taesd's file layout) and
TAESD live previews (``--preview-method taesd``), on a tiny random AutoencoderTiny and the tiny SD model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from graphs import make_engine, run, txt2img
from PIL import Image
from safetensors.torch import save_file

from nodegraph.diffusion import preview, taesd
from nodegraph.diffusion.types import LatentFormat

SCALE = 0.18215


def _tiny(latent_channels: int = 4, seed: int = 0) -> AutoencoderTiny:
    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 2, 1), num_decoder_blocks=(1, 2, 1, 1),
                           latent_channels=latent_channels).eval()


def _write(folder: Path, name: str, tiny: AutoencoderTiny, parts: tuple[str, ...] = ("encoder", "decoder")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    enc, dec = taesd.taesd_state(tiny)
    for part, state in (("encoder", enc), ("decoder", dec)):
        if part in parts:
            save_file(state, str(folder / f"{name}_{part}.safetensors"))


def test_taesd_file_layout_round_trips_into_autoencoder_tiny():
    tiny = _tiny(16)
    enc, dec = taesd.taesd_state(tiny)
    assert "1.weight" in dec and "0.weight" not in dec  # the decoder's index 0 is TAESD's clamp
    cfg = taesd.tiny_config(enc, dec)
    assert cfg["latent_channels"] == 16
    assert cfg["num_encoder_blocks"] == [1, 1, 2, 1] and cfg["num_decoder_blocks"] == [1, 2, 1, 1]
    assert cfg["encoder_block_out_channels"] == [8, 8, 8, 8]
    built = taesd.build_tiny(enc, dec)
    for key, value in tiny.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    decoder_only = taesd.build_tiny(None, dec)
    z = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        assert torch.equal(decoder_only.decode(z).sample, tiny.decode(z).sample)
    with pytest.raises(ValueError, match="nn.Sequential"):
        taesd.tiny_config({"encoder.weight": torch.zeros(1)}, dec)


def test_vae_loader_lists_taesd_when_both_files_are_there(tiny_sd):
    from nodes.loaders import vae_choices

    folder = tiny_sd.models_dir / "vae_approx"
    _write(folder, "taesdxl", _tiny(seed=1), parts=("decoder",))
    assert "taesdxl" not in vae_choices(tiny_sd.config)  # an encoder is missing (ComfyUI lists neither)
    _write(folder, "taesd", _tiny())
    assert "taesd" in vae_choices(tiny_sd.config)
    assert taesd.taesd_names(tiny_sd.config) == ["taesd"]


def test_vae_loader_taesd_decodes_and_encodes_as_comfyui(tiny_sd):
    tiny = _tiny()
    _write(tiny_sd.models_dir / "vae_approx", "taesd", tiny)
    graph = txt2img(steps=2)
    graph["tae"] = {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}}
    graph["dec"]["inputs"]["vae"] = ["tae", 0]
    graph["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["dec", 0], "vae": ["tae", 0]}}
    graph["z"] = {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}
    result, got = run(make_engine(tiny_sd.config), graph)
    assert result.status == "success", result.error
    z = got["lat"]["samples"]
    with torch.no_grad():  # ComfyUI's comfy.taesd: decode((z - shift) * scale), encode(x) / scale + shift
        want = (tiny.decode(z * SCALE).sample / 2 + 0.5).clamp(0, 1).movedim(1, -1)
        img = got["img"]
        assert img.shape == (1, z.shape[2] * 8, z.shape[3] * 8, 3)
        assert (img - want).abs().max().item() < 1e-5
        want_z = tiny.encode(img.movedim(-1, 1) * 2 - 1).latents / SCALE
    assert (got["z"]["samples"] - want_z).abs().max().item() < 1e-5
    assert got["z"]["samples"].shape == z.shape


def test_vae_loader_taesd_without_files_names_them(tiny_sd):
    from nodegraph.diffusion.taesd import load_taesd

    with pytest.raises(FileNotFoundError, match="taef1_encoder.safetensors"):
        load_taesd(tiny_sd.config, "taef1")


def _jpeg_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32) / 255.0


def test_taesd_preview_decodes_with_the_formats_decoder(tmp_path, monkeypatch):
    tiny = _tiny(seed=3)
    _write(tmp_path, "taesd", tiny, parts=("decoder",))
    fmt = LatentFormat(channels=4, downscale=8, scaling_factor=SCALE)
    z = torch.randn(1, 4, 8, 8) * 3
    monkeypatch.delenv(preview.TAESD_ENV, raising=False)
    assert preview.taesd_decoder(fmt) is None
    plain = _jpeg_rgb(preview.preview_jpeg(z, fmt)[1])
    monkeypatch.setenv(preview.TAESD_ENV, str(tmp_path))
    assert preview.taesd_decoder(LatentFormat(channels=16, scaling_factor=0.3611, shift_factor=0.1159)) is None
    kind, data = preview.preview_jpeg(z, fmt)
    shown = _jpeg_rgb(data)
    with torch.no_grad():
        want = ((tiny.decode(z * SCALE).sample[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    assert kind == "JPEG" and shown.shape == want.shape == (64, 64, 3)
    assert np.abs(shown - want).mean() < 0.03  # JPEG's loss
    assert np.abs(plain - want).mean() > 0.05  # the latent2rgb preview is another picture


def test_ksampler_previews_come_from_taesd_when_asked(tiny_sd, monkeypatch):
    _write(tiny_sd.models_dir / "vae_approx", "taesd", _tiny())
    engine = make_engine(tiny_sd.config)

    def preview_sizes(seed: int) -> set[tuple[int, int]]:
        from nodegraph.events import EventBus

        events: list = []
        run(engine, txt2img(steps=4, seed=seed), bus=EventBus([events.append]))
        previews = [e.preview for e in events if getattr(e, "preview", None)]
        assert previews
        return {Image.open(io.BytesIO(p[1])).size for p in previews}

    monkeypatch.delenv(preview.TAESD_ENV, raising=False)
    assert preview_sizes(11) == {(64, 64)}  # latent2rgb: the 32×32 latent upscaled by the VAE's factor 2
    monkeypatch.setenv(preview.TAESD_ENV, str(tiny_sd.models_dir / "vae_approx"))
    assert preview_sizes(12) == {(256, 256)}  # TAESD decodes to 8 pixels per latent cell
