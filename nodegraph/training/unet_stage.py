"""Stage 2: train the UNet and text encoder on a latent pool; export, sample and score the pipeline."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import shapes
from .architecture import (
    MAX_TOKENS,
    build_tokenizer,
    make_sample_scheduler,
    make_text_encoder,
    make_train_scheduler,
    make_unet,
    nparams,
)
from .common import EMA, atomic_torch_save, log, swap_dir, to_tensor


def build_pool(vae, n: int, seed: int, cache: Path):
    if cache.exists():
        d = torch.load(cache, weights_only=False)
        if d["n"] == n and d["seed"] == seed:
            log(f"loaded latent pool {cache}")
            return d["latents"], d["specs"]
    log(f"rendering + encoding pool of {n} images ...")
    t0 = time.time()
    rng = np.random.default_rng(seed)
    specs = [shapes.random_spec(rng) for _ in range(n)]
    lat = torch.empty(n, 4, 16, 16)
    sf = vae.config.scaling_factor
    with torch.no_grad():
        for i in range(0, n, 256):
            imgs = np.stack([shapes.render(s) for s in specs[i:i + 256]])
            lat[i:i + len(imgs)] = vae.encode(to_tensor(imgs)).latent_dist.mean * sf
    specs_d = [s.as_dict() for s in specs]
    atomic_torch_save({"n": n, "seed": seed, "latents": lat, "specs": specs_d}, cache)
    log(f"pool done in {time.time() - t0:.0f}s; scaled latent std {lat.std():.3f} mean {lat.mean():.3f}")
    return lat, specs_d


def encode_text(te, tok, captions: list[str]) -> torch.Tensor:
    ids = tok(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    return te(ids)[0]


def make_pipeline(vae, te, tok, unet):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=make_sample_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def export_pipeline(pipe, out: Path, info: dict) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    os.chmod(tmp, 0o755)
    pipe.save_pretrained(tmp, safe_serialization=True)
    # keep the slow-tokenizer files too (vocab.json/merges.txt), so any CLIPTokenizer loads it
    src = getattr(pipe, "_tokenizer_src", None)
    if src is not None:
        for name in ("vocab.json", "merges.txt"):
            shutil.copy2(Path(src) / name, tmp / "tokenizer" / name)
    readme = out / "README.md"
    if readme.exists():
        shutil.copy2(readme, tmp / "README.md")
    (tmp / "training_info.json").write_text(json.dumps(info, indent=1))
    swap_dir(tmp, out)


@torch.no_grad()
def generate(pipe, prompts: list[str], steps: int = 20, cfg: float = 4.0, seed: int = 0, batch: int = 50) -> np.ndarray:
    """Images (N, H, W, 3) uint8 for prompts, batched."""
    out = []
    for i in range(0, len(prompts), batch):
        g = torch.Generator().manual_seed(seed + i)
        r = pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=cfg, generator=g,
                 output_type="np")
        out.append((np.clip(r.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def adherence(pipe, n: int = 200, seed: int = 1234, steps: int = 20, cfg: float = 4.0, batch: int = 50):
    from .classify import score

    rng = np.random.default_rng(seed)
    ps = [shapes.random_prompt(rng) for _ in range(n)]
    t0 = time.time()
    imgs = generate(pipe, [p[0] for p in ps], steps=steps, cfg=cfg, seed=seed, batch=batch)
    dt = time.time() - t0
    acc = score(imgs, [(p[1], p[2], p[3]) for p in ps])
    acc["seconds_per_image"] = dt / n
    return acc, imgs, ps


def train_unet(args, run_dir: Path, deadline: float) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed + 10)
    vae = AutoencoderKL.from_pretrained(run_dir / "vae").eval().requires_grad_(False)
    tok = build_tokenizer(run_dir / "tokenizer")
    te = make_text_encoder(tok)
    unet = make_unet()
    log(f"params: unet {nparams(unet):,} text_encoder {nparams(te):,} vae {nparams(vae):,}")
    lat, specs = build_pool(vae, args.pool, args.seed + 3, run_dir / "pool.pt")
    spec_objs = [shapes.ShapeSpec(**s) for s in specs]
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_u, ema_t = EMA(unet, args.ema), EMA(te, args.ema)
    sched = make_train_scheduler()
    acp = sched.alphas_cumprod
    snr = acp / (1 - acp)
    step, seen, t_train = 0, 0, 0.0
    history: list[dict] = []
    rng = np.random.default_rng(args.seed + 4)
    state_path = run_dir / "state.pt"
    if args.resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["te"])
        ema_u.model.load_state_dict(st["ema_unet"])
        ema_t.model.load_state_dict(st["ema_te"])
        opt.load_state_dict(st["opt"])
        step, seen, t_train = st["step"], st["seen"], st["t_train"]
        history = st.get("history", [])
        rng = np.random.default_rng(args.seed + 4 + step)
        torch.manual_seed(args.seed + 10 + step)
        log(f"resumed at step {step} ({seen} images, {t_train / 60:.1f} min)")
    vae_info = json.loads((run_dir / "vae_info.json").read_text()) if (run_dir / "vae_info.json").exists() else {}

    def checkpoint(final: bool = False):
        atomic_torch_save({
            "unet": unet.state_dict(), "te": te.state_dict(), "ema_unet": ema_u.model.state_dict(),
            "ema_te": ema_t.model.state_dict(), "opt": opt.state_dict(), "step": step, "seen": seen,
            "t_train": t_train, "history": history, "args": vars(args),
        }, state_path)
        pipe = make_pipeline(vae, ema_t.model, tok, ema_u.model)
        pipe._tokenizer_src = run_dir / "tokenizer"
        pipe.set_progress_bar_config(disable=True)
        entry = {"step": step, "images": seen, "train_minutes": round(t_train / 60, 1)}
        if args.eval_n > 0:
            acc, _, _ = adherence(pipe, n=args.eval_n, seed=999, cfg=args.eval_cfg, batch=args.eval_n)
            entry.update({k: round(v, 3) for k, v in acc.items()})
        history.append(entry)
        info = {"data_seed": args.seed, "steps": step, "images_seen": seen, "batch": args.batch,
                "train_minutes_unet": round(t_train / 60, 1), "lr": args.lr, "ema": args.ema,
                "params": {"unet": nparams(unet), "text_encoder": nparams(te), "vae": nparams(vae)},
                "vae": vae_info, "history": history, "final": final}
        export_pipeline(pipe, Path(args.out), info)
        log(f"checkpoint+export step {step}: {entry}")

    last_ckpt = time.time()
    t_last = time.time()
    loss_acc, n_acc = 0.0, 0
    unet.train()
    te.train()
    while time.time() < deadline:
        idx = rng.integers(0, len(lat), args.batch)
        x0 = lat[idx]
        caps = [shapes.random_caption(spec_objs[i], rng) if rng.random() >= args.cond_drop else "" for i in idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),))
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t)
        cond = encode_text(te, tok, caps)
        pred = unet(xt, t, cond).sample
        w = (torch.clamp(snr[t], max=args.snr_gamma) / (snr[t] + 1)).float()
        loss = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * w).sum() / w.sum() if args.snr_gamma > 0 else loss.mean()
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_u.update(unet, step)
        ema_t.update(te, step)
        step += 1
        seen += len(idx)
        now = time.time()
        t_train += now - t_last
        t_last = now
        loss_acc += loss.item()
        n_acc += 1
        if step % args.log_every == 0:
            log(f"step {step} loss {loss_acc / n_acc:.4f} lr {lr:.2e} images {seen} "
                f"({args.batch * args.log_every / max(t_train - getattr(train_unet, '_tl', 0.0), 1e-6):.1f} img/s)")
            train_unet._tl = t_train
            loss_acc, n_acc = 0.0, 0
        if now - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
            t_last = time.time()
    checkpoint(final=True)
