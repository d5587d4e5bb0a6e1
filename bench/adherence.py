"""Prompt adherence of the embedded default model (or any shapes model folder).

Generates --n images from seeded random prompts ("a red circle on a blue background"), 20 steps
with classifier-free guidance, batched, through a plain diffusers StableDiffusionPipeline, and
scores them with nodegraph.training.classify (pixel statistics): accuracy for the foreground
colour, background colour, shape and all three at once.

    HF_HUB_OFFLINE=1 python bench/adherence.py --model nodegraph/embedded/shapes-v1 --n 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCHEDULERS = ("euler", "dpmpp_2m", "ddim", "model")


def load(model: str, scheduler: str):
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           StableDiffusionPipeline)

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    cfg = dict(pipe.scheduler.config)
    if scheduler == "euler":
        pipe.scheduler = EulerDiscreteScheduler.from_config(cfg, timestep_spacing="trailing")
    elif scheduler == "dpmpp_2m":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing")
    elif scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(cfg, clip_sample=False, set_alpha_to_one=False,
                                                   timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> int:
    from nodegraph.training.train_default import adherence

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "nodegraph/embedded/shapes-v1"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--scheduler", choices=SCHEDULERS, default="euler")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="write a contact sheet PNG of the images here")
    ap.add_argument("--single", action="store_true", help="also time one single-image generation")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    pipe = load(a.model, a.scheduler)
    t_load = time.time() - t0
    acc, imgs, prompts = adherence(pipe, n=a.n, seed=a.seed, steps=a.steps, cfg=a.cfg, batch=a.batch)
    print(f"model {a.model}  scheduler {a.scheduler}  steps {a.steps}  cfg {a.cfg}  n {a.n}  (load {t_load:.1f}s)")
    for k in ("fg", "bg", "shape", "all"):
        print(f"  {k:6s} {acc[k] * 100:5.1f}%")
    print(f"  {acc['seconds_per_image']:.3f} s/image in batches of {a.batch}")
    if a.single:
        ts = []
        for i in range(3):
            t0 = time.time()
            pipe("a red circle on a blue background", num_inference_steps=a.steps, guidance_scale=a.cfg,
                 generator=torch.Generator().manual_seed(i))
            ts.append(time.time() - t0)
        print(f"  single image, {a.steps} steps + CFG: {sorted(ts)[1]:.3f} s (median of 3)")
    if a.save:
        from PIL import Image

        k = min(len(imgs), 100)
        cols = 10
        rows = (k + cols - 1) // cols
        h, w = imgs.shape[1:3]
        sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
        for i in range(k):
            r, c = divmod(i, cols)
            sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = imgs[i]
        Image.fromarray(sheet).save(a.save)
        with open(Path(a.save).with_suffix(".txt"), "w") as f:
            f.write("\n".join(p[0] for p in prompts[:k]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
