"""Overhead of the Python API (``nodegraph.Graph``) over ``Engine``, and the wall time of a 24-image sweep.

1. On bench/executor_overhead.py's graphs (a 1,000-node chain and a 1,000-node wide graph of trivial nodes), the
   median of ``g.run()`` against ``engine.run(engine.prepare(api))`` on the same engine, cold (new constants: every
   node executes) and cached, measured interleaved in one run as CPU time of this process (``process_time``: other
   processes' load does not count); the ratio is the overhead (goal < 5%). Building the
   graph with node calls (each checked against the catalogue) is reported separately, in µs per node.
2. ``Workflow.load("workflows/txt2img.json").sweep({"3.seed": range(8), "3.cfg": [3, 5, 7]})`` on the embedded
   model (64×64, ``--steps`` steps): 24 images, loader and text encoders from the cache after the first; prints the
   wall time and writes the contact sheet (``--sheet``).

Run: python bench/pyapi_overhead.py [--nodes 1000] [--repeat 15] [--steps 8] [--sheet sweep.png] [--skip-sweep]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "core"))
sys.path.insert(0, str(ROOT / "bench"))

import testnodes
from executor_overhead import chain, wide

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.pyapi import Graph, Workflow
from nodegraph.registry import Registry


def build(engine: Engine, api: dict) -> Graph:
    """The graph built with node calls, as a user would (``g.AddOne(x=prev)``), in the API's node order."""
    g = Graph(engine)
    handles: dict[str, object] = {}
    for nid, node in api.items():
        inputs = {k: (handles[v[0]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        handles[nid] = g.node(node["class_type"], _id=nid, **inputs)
    return g


def overhead(engine: Engine, make, n: int, repeat: int) -> dict[str, float]:
    """Medians (seconds) of engine and API runs, cold and cached, plus the build time per node (µs)."""
    times: dict[str, list[float]] = {k: [] for k in ("engine_cold", "engine_cached", "api_cold", "api_cached")}
    builds: list[float] = []
    for r in range(repeat):
        for path in (("engine", "api") if r % 2 == 0 else ("api", "engine")):  # alternate: load hits both alike
            api = make(n, start=(2 * r + (path == "api")) * 7 + 1)  # new constants: a cold run for each path
            if path == "api":
                t0 = time.process_time()
                g = build(engine, api)
                builds.append((time.process_time() - t0) / n * 1e6)
            for label in ("cold", "cached"):
                gc.collect()
                t0 = time.process_time()
                if path == "engine":
                    result = engine.run(engine.prepare(api))
                    assert result.status == "success"
                    executed = len(result.executed)
                else:
                    res = g.run()
                    executed = len(res.executed)
                times[f"{path}_{label}"].append(time.process_time() - t0)
                assert executed == (len(api) if label == "cold" else 0)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["build_us"] = statistics.median(builds)
    return out


def sweep(steps: int, sheet: Path | None) -> None:
    """The 24-image sweep on the embedded model, in-process."""
    with tempfile.TemporaryDirectory() as home:
        config = EngineConfig(home=Path(home))
        config.ensure_dirs()
        wf = Workflow.load(ROOT / "workflows" / "txt2img.json", Engine(config))
        t0, c0 = time.perf_counter(), time.process_time()
        result = wf.sweep({"3.seed": range(8), "3.cfg": [3, 5, 7]}, set={"3.steps": steps})
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ok = sum(row.result.ok for row in result)
        first = result.rows[0].result.wall
        rest = [row.result.wall for row in result.rows[1:]]
        print(f"sweep: {len(result)} images ({ok} ok) at 64x64, {steps} steps, in {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"(first run {first:.1f} s with model load, then median {statistics.median(rest):.2f} s per image; "
              f"cached nodes per later run: {min(r['cached'] for r in result.table()[1:])})")
        if sheet is not None:
            result.contact_sheet().save(sheet)
            print(f"contact sheet: {sheet}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sheet", type=Path, default=None)
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        registry = Registry.load(builtins=(), entry_points=False, source_plugins=False, extra=[testnodes])
        engine = Engine(EngineConfig(home=Path(home), cache_max_entries=100_000), registry=registry)
        for name, make in (("chain", chain), ("wide", wide)):
            m = overhead(engine, make, args.nodes, args.repeat)
            cold = m["api_cold"] / m["engine_cold"] - 1
            cached = m["api_cached"] / m["engine_cached"] - 1
            print(f"{name:>5} {args.nodes} nodes | engine: cold {m['engine_cold'] * 1e3:6.1f} ms, cached "
                  f"{m['engine_cached'] * 1e3:5.1f} ms | Graph.run: cold {m['api_cold'] * 1e3:6.1f} ms "
                  f"({cold:+.1%}), cached {m['api_cached'] * 1e3:5.1f} ms ({cached:+.1%}) (goal < +5%) | "
                  f"building with node calls: {m['build_us']:.1f} µs/node")
    if not args.skip_sweep:
        sweep(args.steps, args.sheet)


if __name__ == "__main__":
    main()
