"""Train a tiny Canny ControlNet for the embedded model (shapes-v1) on the procedural shapes dataset.

The control image is the Canny edge map (``nodegraph.diffusion.preprocess.canny_edges``, ComfyUI's default thresholds
0.4/0.8) of the shape drawn white on black — what ``ShapeImage`` (white on black) → ``Canny`` gives in a graph — so
the edges carry the shape's outline and place, never its colours. The UNet, VAE and text encoder stay frozen; the
ControlNet starts as a copy of the UNet's encoder (``ControlNetModel.from_unet``, zero-initialised output convs) and
learns the v-prediction objective of the UNet stage (min-SNR weighting). Captions are the dataset's captions, 20% of
them empty, so the edges steer with or without a prompt. Exported as fp16 safetensors in diffusers layout.

    HF_HUB_OFFLINE=1 python -m nodegraph.training.controlnet_stage --minutes 15 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import shapes
from .common import log, to_tensor

EMBEDDED = Path(__file__).resolve().parent.parent / "embedded"
BASE = EMBEDDED / "shapes-v1"
OUT = EMBEDDED / "controlnet-shapes-canny-v1"


def outline_image(spec: shapes.ShapeSpec) -> np.ndarray:
    """The spec's shape drawn white on black (uint8 HWC), the picture the Canny control is taken from."""
    return shapes.render(shapes.ShapeSpec(spec.shape, "white", "black", spec.size, spec.position, spec.cx, spec.cy,
                                          spec.r))


def control_images(specs: list[shapes.ShapeSpec]) -> torch.Tensor:
    """Canny edge maps [N, 3, H, W] in 0..1 of the specs' outlines (the ControlNet's conditioning images)."""
    from nodegraph.diffusion.preprocess import canny_edges

    pix = torch.from_numpy(np.stack([outline_image(s) for s in specs])).float() / 255.0
    return canny_edges(pix).movedim(-1, 1).contiguous()


def load_base():
    """The embedded model's parts (frozen): vae, text encoder, tokenizer, unet, training scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(BASE / "vae").eval().requires_grad_(False)
    te = CLIPTextModel.from_pretrained(BASE / "text_encoder").eval().requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(BASE / "tokenizer")
    unet = UNet2DConditionModel.from_pretrained(BASE / "unet").eval().requires_grad_(False)
    cfg = json.loads((BASE / "scheduler" / "scheduler_config.json").read_text())
    sched = DDPMScheduler(num_train_timesteps=cfg["num_train_timesteps"], beta_start=cfg["beta_start"],
                          beta_end=cfg["beta_end"], beta_schedule=cfg["beta_schedule"],
                          prediction_type=cfg["prediction_type"])
    return vae, te, tok, unet, sched


def make_controlnet(unet):
    """A ControlNet copied from ``unet``'s encoder, its hint encoder sized for the ×4 VAE (two stride-2 convs)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64))


def build_pool(vae, n: int, seed: int):
    """n random specs with their scaled latents and control images."""
    rng = np.random.default_rng(seed)
    specs = [shapes.random_spec(rng) for _ in range(n)]
    lat = torch.empty(n, 4, 16, 16)
    hints = torch.empty(n, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    with torch.no_grad():
        for i in range(0, n, 256):
            part = specs[i:i + 256]
            imgs = np.stack([shapes.render(s) for s in part])
            lat[i:i + len(part)] = vae.encode(to_tensor(imgs)).latent_dist.mean * vae.config.scaling_factor
            hints[i:i + len(part)] = control_images(part)
    return specs, lat, hints


def encode(te, tok, captions: list[str]) -> torch.Tensor:
    """Text embeddings of ``captions`` (the tokenizer's max length)."""
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return te(ids)[0]


def train(args: argparse.Namespace) -> dict:
    """Train until the time budget is spent; returns the training record."""
    torch.manual_seed(args.seed)
    vae, te, tok, unet, sched = load_base()
    cn = make_controlnet(unet)
    cn.train()
    t0 = time.time()
    specs, lat, hints = build_pool(vae, args.pool, args.seed)
    log(f"pool of {args.pool} in {time.time() - t0:.0f}s; controlnet params {sum(p.numel() for p in cn.parameters()):,}")
    deadline = t0 + args.minutes * 60
    acp = sched.alphas_cumprod
    snr = acp / (1 - acp)
    opt = torch.optim.AdamW(cn.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed + 1)
    step, seen, acc, n_acc = 0, 0, 0.0, 0
    while time.time() < deadline:
        idx = rng.integers(0, len(lat), args.batch)
        x0, hint = lat[idx], hints[idx]
        caps = [shapes.random_caption(specs[i], rng) if rng.random() >= args.cond_drop else "" for i in idx]
        with torch.no_grad():
            emb = encode(te, tok, caps)
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),))
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t)
        down, mid = cn(xt, t, encoder_hidden_states=emb, controlnet_cond=hint, return_dict=False)
        pred = unet(xt, t, emb, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        w = (torch.clamp(snr[t], max=5.0) / (snr[t] + 1)).float()
        loss = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
        opt.step()
        step += 1
        seen += len(idx)
        acc += loss.item()
        n_acc += 1
        if step % 50 == 0:
            log(f"step {step} loss {acc / n_acc:.4f} images {seen} ({seen / (time.time() - t0):.1f} img/s overall)")
            acc, n_acc = 0.0, 0
    minutes = (time.time() - t0) / 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cn.eval().to(torch.float16).save_pretrained(out, safe_serialization=True)
    record = {"steps": step, "images_seen": seen, "batch": args.batch, "lr": args.lr, "pool": args.pool,
              "minutes": round(minutes, 1), "threads": args.threads, "seed": args.seed,
              "params": sum(p.numel() for p in cn.parameters()),
              "bytes": (out / "diffusion_pytorch_model.safetensors").stat().st_size}
    (out / "training_info.json").write_text(json.dumps(record, indent=1))
    log(f"exported to {out}: {record}")
    return record


def _centroid(img: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of the pixels clearly away from the background colour (median of the border)."""
    a = img.astype(np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]], 0)
    dist = np.sqrt(((a - np.median(border, 0)) ** 2).sum(-1))
    ys, xs = np.nonzero(dist > 0.5 * max(float(dist.max()), 1.0))
    return (float(xs.mean()), float(ys.mean())) if len(xs) else (shapes.IMAGE_SIZE / 2, shapes.IMAGE_SIZE / 2)


@torch.no_grad()
def evaluate(folder: Path, n: int = 24, seed: int = 4321, steps: int = 20, cfg: float = 4.0) -> dict:
    """Does the edge map steer? Prompts name colours and shape but no position; the hint's shape sits at a random
    place. Returns the mean distance (px at 64×64) from the hint's centre and the position-word and shape accuracy
    (pixel classifier), with and without the ControlNet, and with empty prompts (the shape then comes from the
    edges alone)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    from .classify import classify

    base = StableDiffusionPipeline.from_pretrained(BASE, safety_checker=None, requires_safety_checker=False)
    cn = ControlNetModel.from_pretrained(folder, torch_dtype=torch.float32)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=cn)
    for p in (base, pipe):
        p.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(seed)
    specs = [shapes.random_spec(rng) for _ in range(n)]
    prompts = [shapes.caption_for(s, "core") for s in specs]
    hints = control_images(specs)
    out = {}
    for label in ("controlnet", "none", "controlnet_empty_prompt", "none_empty_prompt"):
        g = torch.Generator().manual_seed(seed)
        kw = {"image": hints} if label.startswith("controlnet") else {}
        run = pipe if label.startswith("controlnet") else base
        texts = [""] * n if label.endswith("empty_prompt") else prompts
        imgs = run(texts, num_inference_steps=steps, guidance_scale=cfg, generator=g, output_type="np",
                   height=shapes.IMAGE_SIZE, width=shapes.IMAGE_SIZE, **kw).images
        imgs = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
        dist, pos_ok, shape_ok = [], 0, 0
        for img, s in zip(imgs, specs):
            cx, cy = _centroid(img)
            dist.append(float(np.hypot(cx - s.cx, cy - s.cy)))
            pos_ok += int(shapes.position_word(cx, cy) == s.position)
            shape_ok += int(classify(img)["shape"] == s.shape)
        out[label] = {"mean_distance_px": round(float(np.mean(dist)), 1), "position_accuracy": round(pos_ok / n, 3),
                      "shape_accuracy": round(shape_ok / n, 3)}
    out["n"] = n
    log(f"steering: {out}")
    return out


def main() -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--pool", type=int, default=6000)
    p.add_argument("--cond-drop", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--evaluate", action="store_true", help="only measure how the exported ControlNet steers")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.evaluate:
        train(args)
    result = evaluate(Path(args.out))
    info = Path(args.out) / "training_info.json"
    record = json.loads(info.read_text()) if info.exists() else {}
    record["steering"] = result
    info.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
