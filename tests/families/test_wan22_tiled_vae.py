"""VAEDecodeTiled / VAEEncodeTiled on video VAEs tile in time (and space) as ComfyUI's ``decode_tiled_3d``:

- the box arithmetic (placement at ``k · t`` frames, feathered overlaps, normalised weights) reproduces a local
  decoder exactly;
- on the tiny Wan 2.1 VAE a clip that fits in one box decodes exactly as VAEDecode; in boxes of 2 latent frames the
  frames before the first overlap are exact (the decoder is causal) and the rest stay within a stated tolerance
  (random weights: a box's first latent frame is decoded as a clip's first frame, as in ComfyUI);
- on the tiny LTX-Video VAE (which decodes a whole clip at once) the peak memory of a longer clip's tiled decode is
  below the untiled one's; VAEEncodeTiled in one box equals VAEEncode, and in boxes keeps the clip's latent shape.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import ClassVar

import family_kit as kit
import pytest
import torch
from ltx_tiny import VAE as LTX_VAE
from safetensors.torch import save_file
from wan_tiny import VAE as WAN_VAE

from nodegraph.config import EngineConfig
from nodegraph.diffusion.video_models.video_tiling import (
    decode_tiled,
    temporal_compression,
    tiled_multidim,
)
from nodegraph.testing_graphs import capture_engine, run_captured

WAN_FILE, LTX_FILE = "wan-tiling-vae.safetensors", "ltx-tiling-vae.safetensors"
#: Largest mean per-pixel difference (0..1 scale) allowed between a clip decoded in 2-latent-frame boxes and in one
#: piece: tiny random-weight Wan 2.1 VAE, 17 frames of 32×32, measured 0.105 (max 0.74: random weights make a box's
#: first-frame decode far from the mid-clip one; trained weights are smooth in time).
TEMPORAL_TOLERANCE = 0.15


def _latent_file(path: Path, z: torch.Tensor) -> None:
    save_file({"latent_tensor": z.contiguous(), "latent_format_version_0": torch.tensor([])}, str(path))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from diffusers import AutoencoderKLLTXVideo, AutoencoderKLWan

    root = tmp_path_factory.mktemp("video-tiling")
    (root / "models" / "vae").mkdir(parents=True)
    (root / "input").mkdir()
    torch.manual_seed(0)
    wan = AutoencoderKLWan(**WAN_VAE).eval()
    save_file({k: v.contiguous() for k, v in wan.state_dict().items()}, str(root / "models" / "vae" / WAN_FILE))
    ltx = AutoencoderKLLTXVideo(**LTX_VAE).eval()
    save_file({k: v.contiguous() for k, v in ltx.state_dict().items()}, str(root / "models" / "vae" / LTX_FILE))
    gen = torch.Generator().manual_seed(1)
    _latent_file(root / "input" / "wan.latent", torch.randn(1, 16, 5, 4, 4, generator=gen))
    return root


engine = kit.engine_fixture("home", home=lambda home: home)


def _decode(engine, tiled: dict | None) -> torch.Tensor:
    dec = {"class_type": "VAEDecode", "inputs": {"samples": ["lat", 0], "vae": ["vae", 0]}}
    if tiled is not None:
        dec = {"class_type": "VAEDecodeTiled", "inputs": dict({"samples": ["lat", 0], "vae": ["vae", 0]}, **tiled)}
    wf = {"vae": {"class_type": "VAELoader", "inputs": {"vae_name": WAN_FILE}},
          "lat": {"class_type": "LoadLatent", "inputs": {"latent": "wan.latent"}},
          "dec": dec, "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap["img"]


def test_boxes_reproduce_a_local_decoder_exactly():
    """A decoder with no reach across frames or pixels (frame 0 once, then each latent frame 4 times; 8× nearest
    upscaling) gives the same frames in overlapping boxes of every size as in one piece."""
    def local(z: torch.Tensor) -> torch.Tensor:
        frames = torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)[:, :3]

    z = torch.randn(2, 3, 11, 9, 7, generator=torch.Generator().manual_seed(2))
    whole = local(z)
    for tile_size, overlap, temporal_size, temporal_overlap in ((64, 16, 8, 4), (32, 8, 12, 8), (512, 64, 64, 8)):
        got = decode_tiled(local, z, 4, 8, tile_size, overlap, temporal_size, temporal_overlap)
        assert got.shape == whole.shape
        assert torch.allclose(got, whole, atol=1e-6), (tile_size, temporal_size)
    # the feather weights matter: an unnormalised sum would double the overlaps
    sums = tiled_multidim(torch.ones(1, 1, 6), lambda a: a, (3,), (1,), (lambda a: a,), (lambda p: p,), 1)
    assert torch.equal(sums, torch.ones(1, 1, 6))


def test_one_box_equals_vae_decode(engine):
    whole = _decode(engine, None)
    tiled = _decode(engine, {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8})
    assert whole.shape == tiled.shape == (17, 32, 32, 3)
    assert torch.allclose(whole, tiled, atol=1e-6)


@pytest.mark.slow
def test_temporal_boxes_stay_close_to_vae_decode(engine):
    whole = _decode(engine, None)
    # boxes of 8 // 4 = 2 latent frames, overlap 1 (ComfyUI's bounds): boxes start at latent frames 0, 1, 2, 3
    tiled = _decode(engine, {"tile_size": 512, "overlap": 64, "temporal_size": 8, "temporal_overlap": 4})
    assert tiled.shape == whole.shape
    # the first box covers latent frames 0-1 (frames 0-4); the second box's frames start at frame 4
    assert torch.allclose(tiled[:4], whole[:4], atol=1e-6)
    diff = float((tiled - whole).abs().mean())
    print(f"wan tiny VAE, 2-frame boxes: mean |tiled - whole| {diff:.4f}, max "
          f"{float((tiled - whole).abs().max()):.3f}")
    assert 0.0 < diff <= TEMPORAL_TOLERANCE


def _peak_mib() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _reset_peak() -> float:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _peak_mib()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_tiled_decode_of_a_longer_clip_peaks_lower(home):
    """LTX-Video's VAE decodes a clip at once: boxes of 2 latent frames bound the activations (peak RSS measured
    with Linux's resettable high-water mark; tiled first, so memory it leaves in the allocator favours untiled)."""
    from safetensors.torch import load_file

    from nodegraph.diffusion.ltx.vae import ltx_vae_from_state

    vae = ltx_vae_from_state(load_file(str(home / "models" / "vae" / LTX_FILE)), LTX_FILE).vae
    assert temporal_compression(vae) == 8
    z = torch.randn(1, 128, 9, 4, 4, generator=torch.Generator().manual_seed(3))  # 65 frames of 128×128

    def box(part: torch.Tensor) -> torch.Tensor:
        return vae.decode(part).sample.movedim(0, 1).unsqueeze(0)

    with torch.no_grad():
        base = _reset_peak()
        tiled = decode_tiled(box, z, 8, 32, 512, 64, 16, 8)
        tiled_peak = _peak_mib() - base
        base = _reset_peak()
        whole = vae.decode(z).sample
        whole_peak = _peak_mib() - base
    assert tiled.shape[2] == whole.shape[0] == 65
    print(f"LTX tiny VAE, 65 frames 128×128: peak +{tiled_peak:.0f} MiB tiled, +{whole_peak:.0f} MiB untiled, "
          f"ratio {tiled_peak / whole_peak:.2f}")
    assert tiled_peak < 0.8 * whole_peak


@pytest.mark.slow
def test_encode_tiled_in_one_box_equals_vae_encode(engine):
    import numpy as np

    frames = torch.from_numpy(np.random.default_rng(5).random((17, 128, 128, 3), dtype=np.float32))
    from nodegraph.api import Node, Output

    class Frames(Node):
        """The fixed test clip as an IMAGE batch."""

        INPUTS: ClassVar[dict] = {}
        OUTPUTS = (Output("IMAGE"),)

        def execute(self, ctx):
            return (frames,)

    cfg = EngineConfig(home=engine.config.home)
    eng = capture_engine(cfg, (Frames,))
    wf = {"vae": {"class_type": "VAELoader", "inputs": {"vae_name": LTX_FILE}},
          "px": {"class_type": "Frames", "inputs": {}},
          "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["px", 0], "vae": ["vae", 0]}},
          "tiled": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["px", 0], "vae": ["vae", 0],
                                                               "tile_size": 512, "overlap": 64,
                                                               "temporal_size": 64, "temporal_overlap": 8}},
          "boxes": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["px", 0], "vae": ["vae", 0],
                                                               "tile_size": 64, "overlap": 0,
                                                               "temporal_size": 9, "temporal_overlap": 4}},
          "a": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
          "b": {"class_type": "Capture", "inputs": {"value": ["tiled", 0]}},
          "c": {"class_type": "Capture", "inputs": {"value": ["boxes", 0]}}}
    result, cap = run_captured(eng, wf)
    result.raise_for_status()
    want = cap["a"]["samples"]
    assert want.shape == (1, 128, 3, 4, 4) == cap["b"]["samples"].shape == cap["c"]["samples"].shape
    assert torch.allclose(cap["b"]["samples"], want, atol=1e-5)
    # 2 × 2 spatial boxes of 64 px and 2 temporal boxes of 9 frames (1 frame overlap) give another latent
    boxes = cap["c"]["samples"]
    assert bool(torch.isfinite(boxes).all()) and float((boxes - want).abs().max()) > 1e-3


def test_wan22_vae_tiles_in_time_and_space(tmp_path):
    """The Wan 2.2 VAE (16 px cells, 2×2 patches): one box equals VAEDecode; boxes of 2 latent frames keep the
    frames before the first temporal overlap exact (causal decoder)."""
    from diffusers import AutoencoderKLWan
    from wan22_tiny import vae22_config

    root = tmp_path / "home"
    (root / "models" / "vae").mkdir(parents=True)
    (root / "input").mkdir()
    torch.manual_seed(4)
    vae = AutoencoderKLWan(**vae22_config()).eval()
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(root / "models" / "vae" / "w22.safetensors"))
    _latent_file(root / "input" / "wan.latent", torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(6)))
    engine = capture_engine(EngineConfig(home=root))

    def run(tiled: dict | None) -> torch.Tensor:
        wf = {"vae": {"class_type": "VAELoader", "inputs": {"vae_name": "w22.safetensors"}},
              "lat": {"class_type": "LoadLatent", "inputs": {"latent": "wan.latent"}},
              "dec": {"class_type": "VAEDecode" if tiled is None else "VAEDecodeTiled",
                      "inputs": dict({"samples": ["lat", 0], "vae": ["vae", 0]}, **(tiled or {}))},
              "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}}}
        result, cap = run_captured(engine, wf)
        result.raise_for_status()
        return cap["img"]

    whole = run(None)
    assert whole.shape == (9, 32, 32, 3)
    one = run({"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8})
    assert torch.allclose(one, whole, atol=1e-6)
    boxes = run({"tile_size": 64, "overlap": 0, "temporal_size": 8, "temporal_overlap": 4})
    assert boxes.shape == whole.shape and torch.allclose(boxes[:4], whole[:4], atol=1e-5)
