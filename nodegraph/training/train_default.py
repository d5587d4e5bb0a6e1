"""Train nodegraph's embedded default model ("shapes-v1") on the CPU.

A small SD-shaped latent text-to-image model in standard diffusers layout:
AutoencoderKL (64x64 RGB -> 4x16x16) + UNet2DConditionModel (v-prediction, cross-attention
at 16x16 and 8x8 and in the 4x4 mid block) + a tiny CLIPTextModel trained jointly with the UNet
+ a word-level CLIPTokenizer (hand-made vocab.json/merges.txt) + an EulerDiscrete scheduler config.

Stages: ``vae`` (reconstruction + tiny KL; sets scaling_factor so scaled latents have std ~1),
then ``unet`` (DDPM noise objective, v-prediction, min-SNR-5 weighting, 10% caption dropout,
EMA).  Checkpoints every ``--ckpt-minutes`` to ``--run-dir`` (resumable) and exports the EMA
pipeline to ``--out`` at each checkpoint (directory swapped in by rename).

Usage::

    HF_HUB_OFFLINE=1 python -m nodegraph.training.train_default --stage all --minutes 120 \
        --run-dir runs/shapes-v1 --out nodegraph/embedded/shapes-v1
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

import torch  # noqa: E402

from .common import log  # noqa: E402
from .unet_stage import adherence, train_unet  # noqa: E402,F401  (adherence: used by bench/adherence.py)
from .vae_stage import train_vae  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "nodegraph" / "embedded" / "shapes-v1"
DEFAULT_RUN = REPO_ROOT / "runs" / "shapes-v1"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="exported diffusers folder (EMA weights)")
    p.add_argument("--run-dir", default=str(DEFAULT_RUN), help="resumable state, VAE, latent pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=120.0, help="wall-clock budget for this invocation")
    p.add_argument("--stage", choices=["vae", "unet", "all"], default="all")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-minutes", type=float, default=10.0)
    p.add_argument("--vae-max-minutes", type=float, default=30.0)
    p.add_argument("--vae-target-acc", type=float, default=0.98)
    p.add_argument("--vae-continue", action="store_true", help="keep training an existing run-dir VAE")
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-l1", type=float, default=0.0)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-5)
    p.add_argument("--pool", type=int, default=30000, help="latent pool size (rendered+encoded once)")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--snr-gamma", type=float, default=5.0)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--eval-n", type=int, default=32, help="prompts scored at each checkpoint (0: off)")
    p.add_argument("--eval-cfg", type=float, default=4.0)
    p.add_argument("--log-every", type=int, default=25)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    deadline = time.time() + args.minutes * 60
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"args {vars(args)}; deadline {time.strftime('%H:%M:%S', time.localtime(deadline))}")
    if args.stage in ("vae", "all"):
        train_vae(args, run_dir, deadline)
    if args.stage in ("unet", "all"):
        train_unet(args, run_dir, deadline)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
