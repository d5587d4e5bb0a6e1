"""Engine vs diffusers: the same small SD-shaped model and settings through the graph and StableDiffusionPipeline.

A model is built from configs (random weights, fixed seeds) in a temporary folder: UNet (64, 128, 256) with
cross-attention, a 4-block VAE (×8) and a small CLIP text encoder with the shipped CLIP vocabulary; 256×256,
20 Euler steps, CFG 7.5. Each repetition uses a new seed and a new prompt, so the graph re-runs text encoding,
KSampler and VAEDecode (the loader comes from the cache) while the pipeline does the same work; the median of
``--reps`` runs of each, interleaved, in one process. Then the graph re-runs changing only the seed (text encoding
from the cache). Prints the medians, the ratio (target ≤ 1.03) and the largest pixel difference of the images.

    python bench/engine_vs_diffusers.py [--size 256] [--steps 20] [--reps 5] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nodegraph import Link, Node, NodeOutput, hookimpl  # noqa: E402
from nodegraph.config import EngineConfig  # noqa: E402
from nodegraph.engine import Engine  # noqa: E402
from nodegraph.registry import BUILTIN_PACKS, Registry  # noqa: E402


class Keep(Node):
    """Bench output node: holds the decoded images (no file writing, which the pipeline does not do either)."""

    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"images": Link("IMAGE")}
    last = None

    def execute(self, ctx, images):
        Keep.last = images
        return NodeOutput((), {})


def build_model(folder: Path) -> None:
    """Save a small SD-shaped diffusers pipeline (random weights, seeded) into ``folder``."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodegraph.diffusion.loading import clip_tokenizer

    tok = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128, 256),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=128,
        attention_head_dim=8, norm_num_groups=32)
    torch.manual_seed(1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=32, sample_size=256)
    torch.manual_seed(2)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                                      num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   steps_offset=1, timestep_spacing="linspace", prediction_type="epsilon")
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=te.eval(), tokenizer=tok, unet=unet.eval(),
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)


def workflow(prompt: str, seed: int, size: int, steps: int, cfg: float) -> dict:
    """The graph: loader → two prompts → empty latent → KSampler (euler/normal) → VAEDecode → Keep."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "bench-sd"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "keep": {"class_type": "Keep", "inputs": {"images": ["dec", 0]}},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory(prefix="nodegraph-bench-") as tmp:
        home = Path(tmp)
        config = EngineConfig(home=home, models_dir=home / "models", force_cpu=args.device == "cpu")
        config.ensure_dirs()
        folder = config.model_dir("checkpoints") / "bench-sd"
        build_model(folder)
        plugin = types.ModuleType("bench_nodes")
        plugin.nodegraph_nodes = hookimpl(lambda: [Keep])  # type: ignore[attr-defined]
        engine = Engine(config, registry=Registry.load(builtins=BUILTIN_PACKS, entry_points=False,
                                                       source_plugins=False, extra=[plugin]))
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                       requires_safety_checker=False)
        if args.device == "cuda":
            pipe = pipe.to("cuda", torch.float16)
        pipe.set_progress_bar_config(disable=True)

        def sync() -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()

        def graph(prompt: str, seed: int) -> float:
            t = time.perf_counter()
            engine.run(engine.prepare(workflow(prompt, seed, args.size, args.steps, args.cfg))).raise_for_status()
            sync()
            return time.perf_counter() - t

        def diffusers_run(prompt: str, seed: int) -> tuple[float, object]:
            t = time.perf_counter()
            out = pipe(prompt, negative_prompt="blurry", height=args.size, width=args.size,
                       num_inference_steps=args.steps, guidance_scale=args.cfg, output_type="np",
                       generator=torch.Generator("cpu").manual_seed(seed)).images
            sync()
            return time.perf_counter() - t, out

        graph("warm up", 0)  # loads the checkpoint into the cache and onto the device
        diffusers_run("warm up", 0)
        ours, theirs, diffs = [], [], []
        for i in range(args.reps):
            prompt, seed = f"a photo of a red house number {i}", 100 + i
            ours.append(graph(prompt, seed))
            dt, ref = diffusers_run(prompt, seed)
            theirs.append(dt)
            diffs.append(float(abs(Keep.last.numpy() - ref).max()))  # type: ignore[union-attr]
        reseed = [graph(f"a photo of a red house number {args.reps - 1}", 1000 + i) for i in range(args.reps)]
    med_ours, med_theirs, med_seed = (statistics.median(x) for x in (ours, theirs, reseed))
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; {args.size}x{args.size}, {args.steps} euler steps, cfg {args.cfg}, median of {args.reps}")
    print(f"engine graph (new prompt + seed): {med_ours:.3f} s   runs: {', '.join(f'{t:.3f}' for t in ours)}")
    print(f"diffusers pipeline:               {med_theirs:.3f} s   runs: {', '.join(f'{t:.3f}' for t in theirs)}")
    print(f"ratio engine/diffusers: {med_ours / med_theirs:.3f} (target <= 1.03)")
    print(f"re-run changing only the seed:    {med_seed:.3f} s (loader and text encoding from the cache)")
    print(f"largest pixel difference engine vs pipeline: {max(diffs):.2e} ({max(diffs) * 255:.3f}/255)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
