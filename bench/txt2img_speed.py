"""Wall time of workflows/txt2img.json on the embedded model: with model loading, and after it (seed changes).

Prints (median of 5 where repeated): the first run in a fresh engine (checkpoint load + text encoding + 20 sampling
steps + decode + PNG), a re-run with a new seed (loader and text encoding come from the cache), and the same through
the `nodegraph run` command in a new process (everything: Python start, imports, load, run).
Targets on 2 CPU cores: < 2 s after load, < 5 s including load.
Run: python bench/txt2img_speed.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "workflows" / "txt2img.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine

    import diffusers  # noqa: F401  (timed as part of the imports)

    imports = time.perf_counter() - t0
    api = json.loads(WORKFLOW.read_text())
    with tempfile.TemporaryDirectory() as home:
        firsts, reruns = [], []
        for r in range(args.repeat):
            engine = Engine(EngineConfig(home=Path(home)))
            t0 = time.perf_counter()
            engine.run(engine.prepare(api)).raise_for_status()
            firsts.append(time.perf_counter() - t0)
            api["3"]["inputs"]["seed"] = 1000 + r
            t0 = time.perf_counter()
            result = engine.run(engine.prepare(api)).raise_for_status()
            reruns.append(time.perf_counter() - t0)
            assert set(result.executed) == {"3", "8", "9"}, result.executed
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(WORKFLOW), "--home", home], check=True,
                       capture_output=True)
        cli = time.perf_counter() - t0
    print(f"torch threads {torch.get_num_threads()}; imports (torch, diffusers, nodegraph) {imports:.2f} s")
    print(f"first run incl. model load: {statistics.median(firsts):.2f} s (target < 5)")
    print(f"re-run, new seed (after load): {statistics.median(reruns):.2f} s (target < 2)")
    print(f"`nodegraph run` in a new process, everything: {cli:.2f} s")


if __name__ == "__main__":
    main()
