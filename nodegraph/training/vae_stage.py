"""Stage 1: train the VAE (reconstruction + tiny KL) and set its latent scaling factor."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import shapes
from .architecture import make_vae, nparams
from .common import log, swap_dir, to_tensor


def _vae_recon_check(vae, n: int, seed: int) -> tuple[float, float]:
    from .classify import score

    imgs, specs = shapes.generate(n, seed=seed)
    with torch.no_grad():
        x = to_tensor(imgs)
        rec = torch.cat([vae.decode(vae.encode(x[i:i + 128]).latent_dist.mean).sample for i in range(0, n, 128)])
    rec_u8 = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    acc = score(rec_u8, [(s.shape, s.fg, s.bg) for s in specs])["all"]
    return F.mse_loss(rec, x).item(), acc


def train_vae(args, run_dir: Path, deadline: float) -> None:
    """Train for --vae-minutes, then keep going (checking reconstructions every ~2 min) until the
    pixel classifier gets >= --vae-target-acc on reconstructions, or --vae-max-minutes."""
    from diffusers import AutoencoderKL

    vae_dir = run_dir / "vae"
    if (vae_dir / "config.json").exists() and not args.vae_continue:
        log(f"VAE already trained at {vae_dir}; skipping")
        return
    torch.manual_seed(args.seed)
    if (vae_dir / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(vae_dir)
        log(f"continuing VAE from {vae_dir}")
    else:
        vae = make_vae()
    vae.train()
    log(f"VAE params {nparams(vae):,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    stream = shapes.iter_samples(seed=args.seed + 1 + 7919 * int(args.vae_continue))
    t0 = time.time()
    end_min = min(deadline, t0 + args.vae_minutes * 60)
    end_max = min(deadline, t0 + max(args.vae_max_minutes, args.vae_minutes) * 60)
    next_check = end_min
    step, seen, ma = 0, 0, None
    while time.time() < end_max:
        imgs = np.stack([next(stream)[0] for _ in range(args.vae_batch)])
        x = to_tensor(imgs)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        loss = mse + args.vae_l1 * F.l1_loss(rec, x) + args.kl_weight * post.kl().mean() / z[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        seen += len(x)
        ma = mse.item() if ma is None else 0.95 * ma + 0.05 * mse.item()
        if step % 25 == 0:
            log(f"vae step {step} mse(avg) {ma:.5f} psnr {10 * math.log10(4 / max(ma, 1e-10)):.1f}dB "
                f"{seen / (time.time() - t0):.1f} img/s")
        if time.time() >= next_check:
            vae.eval()
            rmse, racc = _vae_recon_check(vae, 256, args.seed + 5)
            vae.train()
            log(f"vae check at step {step}: recon mse {rmse:.5f}, classifier acc on recon {racc:.3f}")
            if racc >= args.vae_target_acc and rmse < 0.01:
                break
            for g in opt.param_groups:
                g["lr"] = max(g["lr"] * 0.7, args.vae_lr * 0.1)
            next_check = time.time() + 120
    vae.eval()
    # scaling factor from held-out renders
    imgs, _ = shapes.generate(1024, seed=args.seed + 2)
    with torch.no_grad():
        zs = torch.cat([vae.encode(to_tensor(imgs[i:i + 128])).latent_dist.mean for i in range(0, 1024, 128)])
        rec = torch.cat([vae.decode(zs[i:i + 128]).sample for i in range(0, 1024, 128)])
    from .classify import score

    rec_u8 = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    _, specs = shapes.generate(1024, seed=args.seed + 2)
    acc = score(rec_u8, [(s.shape, s.fg, s.bg) for s in specs])
    std = zs.std().item()
    sf = round(1.0 / std, 5)
    vae.register_to_config(scaling_factor=sf)
    tmp = Path(tempfile.mkdtemp(dir=run_dir))
    vae.save_pretrained(tmp, safe_serialization=True)
    swap_dir(tmp, vae_dir)
    # latents of an older VAE are now stale
    for stale in ("pool.pt", "state.pt"):
        if (run_dir / stale).exists():
            os.replace(run_dir / stale, run_dir / (stale + ".stale"))
    info = {"vae_steps": step, "vae_images": seen, "vae_seconds": round(time.time() - t0, 1),
            "latent_mean": zs.mean().item(), "latent_std": std, "scaling_factor": sf,
            "recon_mse": F.mse_loss(rec, to_tensor(imgs)).item(), "recon_classifier_acc": acc,
            "vae_params": nparams(vae)}
    (run_dir / "vae_info.json").write_text(json.dumps(info, indent=1))
    log(f"VAE done: {info}")
