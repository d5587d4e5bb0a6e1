"""Per-node overhead of the engine: a 1,000-node chain and a 1,000-node wide graph of trivial nodes.

Prints µs per node, median of 5, for a cold run (empty cache) and a fully cached run: the executor alone
(planning, cache keys, lookups, execution, events) and end to end (parsing + validation + executor).
Targets on a 2-core machine: < 50 µs per executed node, < 10 µs per cached node.
Run: python bench/executor_overhead.py [--nodes 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "core"))

import testnodes  # noqa: E402

from nodegraph.config import EngineConfig  # noqa: E402
from nodegraph.engine import Engine  # noqa: E402
from nodegraph.registry import Registry  # noqa: E402


def chain(n: int, start: int) -> dict:
    wf = {"c": {"class_type": "Const", "inputs": {"value": start}}}
    prev = "c"
    for i in range(n - 2):
        wf[str(i)] = {"class_type": "AddOne", "inputs": {"x": [prev, 0]}}
        prev = str(i)
    wf["out"] = {"class_type": "Sink", "inputs": {"value": [prev, 0]}}
    return wf


def wide(n: int, start: int) -> dict:
    wf = {"c": {"class_type": "Const", "inputs": {"value": -start}}}  # never the chain's constants
    for i in range((n - 1) // 2):
        wf[f"a{i}"] = {"class_type": "AddOne", "inputs": {"x": ["c", 0]}}
        wf[f"s{i}"] = {"class_type": "Sink", "inputs": {"value": [f"a{i}", 0]}}
    return wf


def measure(engine: Engine, make, n: int, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"cold": [], "cached": [], "cold_e2e": [], "cached_e2e": []}
    for r in range(repeat):
        wf = make(n, start=r * 7 + 1)  # a new start value makes every node's key new: a cold run
        for label in ("cold", "cached"):
            t0 = time.perf_counter()
            prompt = engine.prepare(wf)
            t1 = time.perf_counter()
            result = engine.run(prompt)
            t2 = time.perf_counter()
            assert result.status == "success"
            assert len(result.executed) == (len(wf) if label == "cold" else 0)
            times[label].append(t2 - t1)
            times[label + "_e2e"].append(t2 - t0)
    return {k: statistics.median(v) / n * 1e6 for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        registry = Registry.load(builtins=(), entry_points=False, source_plugins=False, extra=[testnodes])
        engine = Engine(EngineConfig(home=Path(home), cache_max_entries=100_000), registry=registry)
        for name, make in (("chain", chain), ("wide", wide)):
            m = measure(engine, make, args.nodes, args.repeat)
            print(f"{name:>5} {args.nodes} nodes | executor: cold {m['cold']:5.1f} µs/node (target < 50), "
                  f"cached {m['cached']:4.1f} µs/node (target < 10) | with parsing+validation: "
                  f"cold {m['cold_e2e']:5.1f}, cached {m['cached_e2e']:4.1f} µs/node")


if __name__ == "__main__":
    main()
