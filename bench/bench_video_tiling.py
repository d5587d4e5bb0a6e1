"""Peak memory of a video VAE decode, tiled (VAEDecodeTiled's boxes in time and space) against untiled (VAEDecode).

Builds random-weight video VAEs from configs (no files): LTX-Video's structure (decodes a whole clip at once) and
Wan 2.1's (causal: decodes one latent frame at a time with a feature cache), and decodes one random latent per VAE
both ways in this one process. Peak memory is Linux's resettable high-water mark of the process RSS (VmHWM after
``echo 5 > /proc/self/clear_refs``, with ``malloc_trim`` before each pass); each pass prints its growth over the
RSS it started from, and the tiled/untiled ratio. The tiled pass runs first, so memory it leaves in the allocator
can only favour the untiled one.

Run: python bench/bench_video_tiling.py [--ltx-frames 33] [--wan-frames 5] [--wan-cells 16] [--wan-width 8]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("DIFFUSERS_VERBOSITY", "error")):
    os.environ.setdefault(_name, _value)

LTX = dict(latent_channels=128, block_out_channels=(16, 32, 64, 64), decoder_block_out_channels=(16, 32, 64, 64),
           layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
           spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
           decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
           upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=4, patch_size_t=1,
           encoder_causal=True, decoder_causal=False)


def peak_mib() -> float:
    """The process's peak RSS since the last reset, in MiB."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset() -> float:
    """Return freed heap to the system, reset the peak RSS, and give the RSS now (MiB)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return peak_mib()


def measure(name: str, vae, z, tile_size: int, temporal_size: int) -> float:
    """Decode ``z`` tiled then untiled; print both peaks and return tiled/untiled."""
    import torch

    from nodegraph.diffusion.video_models.video_tiling import decode_tiled, temporal_compression

    k, spatial = temporal_compression(vae), 2 ** (len(vae.config.block_out_channels) - 1)

    def box(part):
        return vae.decode(part).sample.movedim(0, 1).unsqueeze(0)

    with torch.no_grad():
        base = reset()
        start = time.perf_counter()
        tiled = decode_tiled(box, z, k, spatial, tile_size, tile_size // 8, temporal_size, 8)
        tiled_s, tiled_peak = time.perf_counter() - start, peak_mib() - base
        del tiled
        base = reset()
        start = time.perf_counter()
        whole = vae.decode(z).sample
        whole_s, whole_peak = time.perf_counter() - start, peak_mib() - base
    frames, height = whole.shape[0], whole.shape[-2]
    ratio = tiled_peak / whole_peak
    print(f"{name}: {frames} frames of {height}×{whole.shape[-1]} (tile {tile_size} px, {temporal_size} frames): "
          f"peak +{tiled_peak:.0f} MiB tiled ({tiled_s:.1f} s), +{whole_peak:.0f} MiB untiled ({whole_s:.1f} s), "
          f"ratio tiled/untiled {ratio:.2f}")
    return ratio


def main() -> None:
    """Build the VAEs, decode both ways, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ltx-frames", type=int, default=33, help="latent frames of the LTX clip (8 each)")
    parser.add_argument("--wan-frames", type=int, default=5, help="latent frames of the Wan clip (4 each)")
    parser.add_argument("--wan-cells", type=int, default=16, help="latent cells per side of the Wan clip (8 px)")
    parser.add_argument("--wan-width", type=int, default=8, help="base width of the Wan VAE (96 released)")
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux's resettable peak RSS (/proc/self/clear_refs)")
    sys.path.insert(0, str(ROOT))
    import torch
    from diffusers import AutoencoderKLLTXVideo, AutoencoderKLWan

    from nodegraph.diffusion.ltx.vae import LTXVideoVAE
    from nodegraph.diffusion.video_models.wan_vae import WanVideoVAE

    torch.manual_seed(0)
    ltx = LTXVideoVAE(AutoencoderKLLTXVideo(**LTX).eval())
    measure("LTX-Video VAE (whole-clip decode), time boxes of 2 latent frames", ltx,
            torch.randn(1, 128, args.ltx_frames, 4, 4), 512, 16)
    wan = WanVideoVAE(AutoencoderKLWan(base_dim=args.wan_width, z_dim=16).eval())
    z = torch.randn(1, 16, args.wan_frames, args.wan_cells, args.wan_cells)
    measure("Wan 2.1 VAE (causal decode), time boxes only", wan, z, 8 * args.wan_cells, 16)
    measure("Wan 2.1 VAE (causal decode), time and space boxes", wan, z, 4 * args.wan_cells, 16)


if __name__ == "__main__":
    main()
