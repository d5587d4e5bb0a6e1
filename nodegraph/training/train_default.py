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
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np
import torch
import torch.nn.functional as F

from . import shapes

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "nodegraph" / "embedded" / "shapes-v1"
DEFAULT_RUN = REPO_ROOT / "runs" / "shapes-v1"

MAX_TOKENS = 16
TEXT_HIDDEN = 128

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    # few groups: GroupNorm with one channel per group is InstanceNorm and erases the absolute
    # colour of flat regions (the prototype's washed-out backgrounds); 4-8 channels per group keep it
    norm_num_groups=4,
    sample_size=64,
)

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=TEXT_HIDDEN,
    attention_head_dim=4,  # (diffusers' legacy name: number of heads)
    norm_num_groups=8,
)

SCHED_KW = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- tokenizer
_BASE_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(",.!?'-")


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    toks = list(word[:-1]) + [word[-1] + "</w>"]
    while len(toks) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(toks, toks[1:]))]
        r, _ = min(pairs)
        if r == math.inf:
            break
        first, second = [p for p in ranks if ranks[p] == r][0]
        out, i = [], 0
        while i < len(toks):
            if i < len(toks) - 1 and toks[i] == first and toks[i + 1] == second:
                out.append(first + second)
                i += 2
            else:
                out.append(toks[i])
                i += 1
        toks = out
    return toks


def build_vocab(words=shapes.VOCAB_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Word-level BPE: merges chosen so that every caption word becomes exactly one token."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(100):
        changed = False
        for w in words:
            toks = _bpe(w, ranks)
            while len(toks) > 1:
                pair = (toks[0], toks[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                changed = True
                toks = _bpe(w, ranks)
        if not changed:
            break
    vocab: dict[str, int] = {}
    for c in _BASE_CHARS:
        vocab.setdefault(c, len(vocab))
    for c in _BASE_CHARS:
        vocab.setdefault(c + "</w>", len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def build_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS, pad_token="<|endoftext|>",
                        unk_token="<|endoftext|>", bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    # the saved folder must load with a plain from_pretrained and give one token per word
    tok = CLIPTokenizer.from_pretrained(str(folder))
    assert tok.model_max_length == MAX_TOKENS, tok.model_max_length
    for w in shapes.VOCAB_WORDS:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] == vocab[w + "</w>"], (w, ids)
    return tok


# --------------------------------------------------------------------------- models
def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def make_text_encoder(tok):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_HIDDEN * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN,
        hidden_act="quick_gelu",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModel(cfg)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHED_KW)


def make_sample_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SCHED_KW, timestep_spacing="trailing", steps_offset=1)


def nparams(m) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- data
def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------- helpers
def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def swap_dir(tmp: Path, final: Path) -> None:
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ep = list(self.model.parameters())
        mp = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ep, mp, 1.0 - d)
        for eb, mb in zip(self.model.buffers(), model.buffers()):
            eb.copy_(mb)


# --------------------------------------------------------------------------- VAE stage
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


# --------------------------------------------------------------------------- UNet stage
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
