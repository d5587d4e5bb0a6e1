"""Model memory under a RAM budget: load N checkpoints in turn through the ModelManager, twice round.

Builds N random-weight SD1.x-shaped diffusers checkpoints from configs (about 40 MB each in float32; see
nodegraph/_tiny.py for the tiny ones the tests use) in a temporary models folder, then, in one process,
loads each in turn (pinned while its UNet runs one step), going round the list twice. The budget holds about two
of them, so the manager must evict (and reload on the second round). Printed, all measured in this one run: the
budget, process RSS before loading and at its peak (sampled every 2 ms), the peak growth against the budget, the
manager's own peak, loads, reloads and evictions.

Run: python bench/model_memory.py [--n 6] [--budget-mb 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                      ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error")):
    os.environ.setdefault(_name, _value)

UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(48, 96, 192),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=16)


def build(models: Path, n: int) -> list[Path]:
    """N diffusers checkpoints with different random weights under ``models/checkpoints``."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from nodegraph._tiny import make_components, make_tokenizer

    tok = make_tokenizer(models.parent / "tokenizer")
    out = []
    for i in range(n):
        parts = make_components(tok)
        torch.manual_seed(100 + i)
        parts["unet"] = UNet2DConditionModel(**UNET).eval()
        folder = models / "checkpoints" / f"bench-{i}"
        StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(str(folder), safe_serialization=True)
        out.append(folder)
    return out


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` is the highest seen."""

    def __init__(self, every: float = 0.002) -> None:
        from nodegraph.models.memory import process_rss

        self._rss = process_rss
        self.peak = process_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(every)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6, help="checkpoints to build")
    parser.add_argument("--budget-mb", type=float, default=100.0, help="the manager's RAM budget (MB)")
    parser.add_argument("--rounds", type=int, default=2, help="times round the list")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from nodegraph.config import EngineConfig
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.models import Budgets, ModelManager
    from nodegraph.models.memory import process_rss

    budget = int(args.budget_mb * 1e6)
    with tempfile.TemporaryDirectory(prefix="nodegraph-bench-") as tmp:
        config = EngineConfig(home=Path(tmp) / "home", models_dir=Path(tmp) / "models")
        config.ensure_dirs()
        t0 = time.perf_counter()
        paths = build(config.models_dir, args.n)
        built = time.perf_counter() - t0
        manager = ModelManager(Budgets(ram=budget), devices=DeviceManager(force_cpu=True))
        # warm up the libraries (imports, tokenizer files) on one load, then start from an empty manager
        manager.load_checkpoint(paths[0], config, name="warm-up")
        manager.release()
        manager = ModelManager(Budgets(ram=budget), devices=DeviceManager(force_cpu=True))
        sizes = []
        x = torch.randn(1, 4, 16, 16)
        text = torch.randn(1, 77, 32)
        baseline = process_rss()
        t0 = time.perf_counter()
        with PeakRSS() as rss:
            for _ in range(args.rounds):
                for path in paths:
                    model, _clip, _vae = manager.load_checkpoint(path, config, name=path.name)
                    sizes.append(model.size)
                    with manager.use(model) as (loaded,), torch.no_grad():
                        loaded.unet(x, 10, encoder_hidden_states=text)
                    del loaded
        elapsed = time.perf_counter() - t0
    mb = 1e6
    stats = manager.stats
    growth = rss.peak - baseline
    print(f"{args.n} checkpoints of {max(sizes) / mb:.1f} MB each (built in {built:.1f} s), {args.rounds} rounds, "
          f"{elapsed:.1f} s")
    print(f"budget {budget / mb:.0f} MB; manager peak {stats.peak_bytes / mb:.1f} MB")
    print(f"RSS before loading {baseline / mb:.0f} MB, peak {rss.peak / mb:.0f} MB: growth {growth / mb:.1f} MB "
          f"= {growth / budget:.2f}x the budget ({'within' if growth <= budget else 'OVER'} it)")
    print(f"loads {stats.loads}, reloads {stats.reloads}, evictions {stats.evictions}, hits {stats.hits}")


if __name__ == "__main__":
    main()
