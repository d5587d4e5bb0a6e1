"""Throughput of the Ray backend on 1 and on 2 workers: a queue of small text-to-image runs (tiny SD model).

Each worker is an actor of ``--cpus-per-worker`` CPUs (Ray gives it as many torch threads). Every worker first runs
one warm-up prompt (imports, model load), then ``--runs`` prompts with different seeds are drained from a queue by
one thread per worker, as the server does. Prints runs/s for each worker count and their ratio, and an
in-process baseline with one worker's thread count (the difference to 1 worker is Ray's overhead).
Not a timed test: on a quiet 2-core machine expect a ratio above 1.5.
``--workload sleep`` runs test nodes that sleep instead of computing (step_ms per step): it measures the dispatch
alone, whatever else loads the CPUs.
Run: python bench/ray_scaling.py [--runs 20] [--steps 10] [--size 64] [--cpus-per-worker 1] [--workload sd|sleep]
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from nodegraph.config import EngineConfig  # noqa: E402
from nodegraph.engine import Engine  # noqa: E402


def txt2img(seed: int, steps: int, size: int) -> dict:
    """CheckpointLoaderSimple → CLIPTextEncode ×2 → EmptyLatentImage → KSampler → VAEDecode → SaveImage."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "bench/run"}},
    }


def sleeper(seed: int, steps: int, step_ms: int = 25) -> dict:
    """FakeCheckpoint → Generate (tests/ray/plugins): sleeps ``steps`` × ``step_ms``, no computing."""
    return {"1": {"class_type": "FakeCheckpoint", "inputs": {"name": "bench", "load_ms": 500}},
            "2": {"class_type": "Generate", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps,
                                                       "step_ms": step_ms, "preview": False, "tag": "",
                                                       "save": False}}}


def drain(backend, prompts: list, threads: int) -> tuple[float, dict[str, int]]:
    """Run every prompt with ``threads`` threads pulling from one queue; (seconds, runs per worker)."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for p in prompts:
        todo.put(p)
    per_worker: dict[str, int] = {}
    lock = threading.Lock()
    failures: list[str] = []

    def loop() -> None:
        while True:
            try:
                prompt = todo.get_nowait()
            except queue.Empty:
                return
            result = backend.run(prompt)
            with lock:
                if result.status != "success":
                    failures.append(f"{result.status}: {result.error}")
                for name in result.workers[-1:]:
                    per_worker[name] = per_worker.get(name, 0) + 1

    start = time.perf_counter()
    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed, first: {failures[0]}")
    return elapsed, per_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workload", choices=["sd", "sleep"], default="sd")
    args = parser.parse_args()

    import ray

    from nodegraph._tiny import build_tiny_sd
    from nodegraph.backends.ray_backend import RayBackend

    home = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    plugins = [Path(__file__).resolve().parent.parent / "tests" / "ray" / "plugins"] if args.workload == "sleep" else []
    if args.workload == "sd":
        build_tiny_sd(home)
    engine = Engine(EngineConfig(home=home, models_dir=home / "models", plugin_dirs=plugins))

    def graph(seed: int) -> dict:
        return txt2img(seed, args.steps, args.size) if args.workload == "sd" else sleeper(seed, args.steps)

    cpus = int(max(args.workers) * args.cpus_per_worker + 0.999)
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    what = f"{args.size}x{args.size}" if args.workload == "sd" else "sleep"
    print(f"ray.init: {time.perf_counter() - t0:.1f} s ({cpus} CPUs); {args.runs} runs of {what}, "
          f"{args.steps} steps, {args.cpus_per_worker:g} CPU(s) per worker")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(args.cpus_per_worker)))  # as one worker
    engine.run(engine.prepare(graph(99_999)))
    start = time.perf_counter()
    for seed in range(args.runs):
        engine.run(engine.prepare(graph(seed))).raise_for_status()
    local = args.runs / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    print(f"in-process baseline ({max(1, int(args.cpus_per_worker))} torch thread(s)): "
          f"{local:.2f} runs/s")
    rates: dict[int, float] = {}
    try:
        for n in args.workers:
            backend = RayBackend.for_engine(engine, workers=n, cpus_per_worker=args.cpus_per_worker)
            try:
                warm, _ = drain(backend, [engine.prepare(graph(10_000 + i)) for i in range(n)], n)
                prompts = [engine.prepare(graph(seed)) for seed in range(args.runs)]
                elapsed, per_worker = drain(backend, prompts, n)
            finally:
                backend.close()
            rates[n] = args.runs / elapsed
            print(f"{n} worker(s): {elapsed:.2f} s for {args.runs} runs = {rates[n]:.2f} runs/s "
                  f"(warm-up {warm:.1f} s; runs per worker {dict(sorted(per_worker.items()))})")
    finally:
        ray.shutdown()
    if len(rates) >= 2:
        lo, hi = min(rates), max(rates)
        print(f"throughput ratio {hi} vs {lo} worker(s): {rates[hi] / rates[lo]:.2f}x")


if __name__ == "__main__":
    main()
