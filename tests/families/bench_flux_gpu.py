"""GPU check (not collected by pytest): a full-size Flux.1-dev-shaped transformer with random bf16 weights, 1024²,
our KSampler path (flow.sampling.sample, euler/simple) against diffusers' FluxPipeline on the same weights and
embeddings; prints both it/s and the ratio in one run.

    python tests/families/bench_flux_gpu.py [steps]
"""

from __future__ import annotations

import json
import sys
import time

import torch


def main(steps: int = 10) -> None:
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow.detect import shipped_config
    from nodegraph.diffusion.flow.loading import FLUX_LATENT
    from nodegraph.diffusion.flow.sampling import sample
    from nodegraph.diffusion.flow.schedule import FlowSettings, flux_shift
    from nodegraph.diffusion.sampling import SamplingOptions
    from nodegraph.diffusion.types import DiffusionModel

    device, dtype = torch.device("cuda"), torch.bfloat16
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(shipped_config("transformer"))
    transformer = transformer.to_empty(device=device).to(dtype).eval()
    with torch.no_grad():
        for p in transformer.parameters():
            p.normal_(0.0, 0.02)
    emb = torch.randn(1, 512, 4096) * 0.1
    pooled = torch.randn(1, 768) * 0.1
    size = 1024
    model = DiffusionModel(unet=transformer, scheduler_config={}, arch="flux-dev", source="random", latent=FLUX_LATENT,
                           family="flux", flow=FlowSettings("flux", flux_shift(size, size)))
    devices = DeviceManager()  # CUDA; bf16 as ComfyUI runs Flux (the manager's default is float16)
    devices.dtype = devices.residency.dtype = dtype
    latent = {"samples": torch.zeros(1, 16, size // 8, size // 8)}
    opts = SamplingOptions("euler", "simple", steps, 1.0, 0)
    cond = [(emb, {"pooled_output": pooled, "guidance": 3.5})]
    sample(model, cond, cond, latent, SamplingOptions("euler", "simple", 2, 1.0, 0), devices)  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    sample(model, cond, cond, latent, opts, devices)
    torch.cuda.synchronize()
    ours = steps / (time.perf_counter() - t)
    pipe = FluxPipeline(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                        base_image_seq_len=256, max_image_seq_len=4096),
                        None, None, None, None, None, transformer)
    kw = dict(prompt_embeds=emb.to(device, dtype), pooled_prompt_embeds=pooled.to(device, dtype), height=size,
              width=size, guidance_scale=3.5, output_type="latent")
    pipe(num_inference_steps=2, **kw)
    torch.cuda.synchronize()
    t = time.perf_counter()
    pipe(num_inference_steps=steps, **kw)
    torch.cuda.synchronize()
    theirs = steps / (time.perf_counter() - t)
    print(json.dumps({"size": size, "steps": steps, "ours_it_s": round(ours, 3), "diffusers_it_s": round(theirs, 3),
                      "ratio": round(ours / theirs, 3), "gpu": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
