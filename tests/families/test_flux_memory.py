"""Loading a Flux-shaped transformer needs about its own size in RAM, not twice it (weights are placed tensor by
tensor into a meta-device model; original-layout splits are views): measured in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

CONFIG = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=128,
              num_attention_heads=8, joint_attention_dim=1024, pooled_projection_dim=256, guidance_embeds=True,
              axes_dims_rope=[16, 56, 56])

CHILD = textwrap.dedent("""
    import json, sys, torch
    from nodegraph.diffusion.flow.loading import load_transformer
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024
    import accelerate, safetensors.torch
    from diffusers import FluxTransformer2DModel
    with torch.device("meta"):  # lazy imports and kernels are loaded once per process, not part of the load
        FluxTransformer2DModel(num_layers=1, num_single_layers=1)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size (VmHWM) to the current one
    before = status("VmRSS")
    model = load_transformer(sys.argv[1], "big", "default", torch.bfloat16)
    touched = sum(float(p.reshape(-1)[::1024].float().sum()) for p in model.unet.parameters())  # every page
    print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS")}))
""")


def test_load_peak_is_about_one_model(tmp_path):
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from nodegraph.diffusion.flow.convert import to_original

    with torch.device("meta"):
        model = FluxTransformer2DModel(**CONFIG)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen).to(torch.bfloat16) for k, v in model.state_dict().items()}
    path = tmp_path / "flux-shaped.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in to_original(state).items()}, str(path))
    size_mb = path.stat().st_size / 2**20
    del state
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300,
                         check=True).stdout.strip().splitlines()[-1]
    mem = json.loads(out)
    grown = mem["peak"] - mem["before"]
    print(f"\nfile {size_mb:.0f} MB, load peak +{grown:.0f} MB, kept +{mem['after'] - mem['before']:.0f} MB")
    assert size_mb > 150
    assert grown < 1.25 * size_mb
