"""Start-up cost of the command line and the server, as ratios against the bare ``import torch, diffusers``.

Measured in one run, interleaved (bare, then each command, repeated) so that load from other processes hits every
command alike; prints the median wall time of each and its ratio to the bare import.

- ``nodegraph --help``, ``validate``, ``nodes``, ``inspect``: must not import torch or diffusers (target < 0.5 s).
- ``nodegraph run workflows/txt2img.json``: imports what the graph uses, once (target <= 1.3x the bare import).
- ``nodegraph serve``: time until ``GET /object_info`` answers (target < 1 s).

Usage: ``python bench/startup.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "workflows" / "txt2img.json"


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _imports_torch(cmd: list[str], env: dict[str, str]) -> bool:
    """Whether a command imports torch or diffusers (read from ``-X importtime``)."""
    out = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True)
    return any(line.rstrip().endswith(("| torch", "| diffusers")) for line in out.stderr.splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_ready(home: str, env: dict[str, str]) -> float:
    """Seconds from starting ``nodegraph serve`` until ``GET /object_info`` answers 200."""
    port = _free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nodegraph.cli", "serve", "--home", home, "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=5) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("the server did not answer /object_info within 120 s")
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print a table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", NODEGRAPH_WARMUP=os.environ.get("NODEGRAPH_WARMUP", "1"))
    with tempfile.TemporaryDirectory(prefix="nodegraph-startup-") as home:
        env["NODEGRAPH_HOME"] = home
        ng = [sys.executable, "-m", "nodegraph.cli"]
        commands = {
            "bare import torch, diffusers": [sys.executable, "-c", "import torch, diffusers"],
            "nodegraph --help": [*ng, "--help"],
            "nodegraph validate": [*ng, "validate", str(WORKFLOW)],
            "nodegraph nodes": [*ng, "nodes"],
            "nodegraph run txt2img": [*ng, "run", str(WORKFLOW), "--output-dir", str(Path(home) / "out")],
        }
        times: dict[str, list[float]] = {name: [] for name in [*commands, "nodegraph serve → /object_info"]}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                times[name].append(_timed(cmd, env))
            times["nodegraph serve → /object_info"].append(_serve_ready(str(Path(home) / "srv"), env))
        light = {name: _imports_torch(cmd[1:], env) for name, cmd in commands.items()
                 if name.startswith("nodegraph") and "run" not in name}
    bare = statistics.median(times["bare import torch, diffusers"])
    print(f"{'command':<34} {'median s':>9} {'ratio':>7}  notes")
    for name, values in times.items():
        med = statistics.median(values)
        note = ""
        if name in light:
            note = "imports torch/diffusers!" if light[name] else "no torch/diffusers import"
        print(f"{name:<34} {med:>9.2f} {med / bare:>6.2f}x  {note}")
    print(f"(median of {args.repeat}; ratio = median / bare import; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
