"""Load benchmark of the server: N concurrent clients submit prompts over HTTP and listen on the WebSocket.

    python bench/server_load.py [--clients 50] [--prompts 200] [--url http://127.0.0.1:8188 --token T]

Without ``--url`` it starts its own server (``nodegraph serve``) on a free port with a temporary home folder.
Prints accepted, completed (seen finishing on the submitter's WebSocket), lost (must be 0), how many reached the
history, and the p50/p99 latency of ``GET /prompt`` sampled while the queue is busy (target p99 < 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]


def small_graph(i: int, image: bool) -> dict[str, Any]:
    """PrimitiveInt → IntMath → ShowValue (plus EmptyImage → SaveImage), unique per i so nothing is cached."""
    graph: dict[str, Any] = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": i}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "multiply"}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    if image:
        graph["4"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": i}}
        graph["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "load/bench"}}
    return graph


async def client_task(session: aiohttp.ClientSession, base: str, cid: str, numbers: list[int], image: bool,
                      stats: dict[str, Any], timeout: float) -> None:
    """Connect the WebSocket, submit this client's prompts, and wait until each one is seen finishing."""
    ws = await session.ws_connect(f"{base}/ws?clientId={cid}")
    await ws.receive_json(timeout=30)
    accepted: set[str] = set()
    done: set[str] = set()

    async def submit(i: int) -> None:
        async with session.post(f"{base}/prompt", json={"prompt": small_graph(i, image), "client_id": cid}) as r:
            body = await r.json()
            if r.status == 200:
                accepted.add(body["prompt_id"])
                stats["accepted"] += 1
            else:
                stats["refused"].append(r.status)

    submits = asyncio.gather(*(submit(i) for i in numbers))
    deadline = time.monotonic() + timeout
    while not (submits.done() and accepted <= done) and time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=0.5)
        except asyncio.TimeoutError:
            continue
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        data = msg.json()
        if data["type"] == "executing" and data["data"]["node"] is None:
            done.add(data["data"]["prompt_id"])
    await submits
    stats["completed"] += len(accepted & done)
    stats["ids"] |= accepted
    await ws.close()


def poll_latency(base: str, token: str | None, ready: Any, stop: Any, out: Any) -> None:
    """In its own process (so the load generator's loop does not skew it): GET /prompt every 10 ms, keeping the
    latencies measured while the queue is not empty."""
    import http.client
    import json
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    samples = []
    while not stop.is_set():
        t0 = time.perf_counter()
        conn.request("GET", "/prompt", headers=headers)
        body = json.loads(conn.getresponse().read())
        elapsed = time.perf_counter() - t0
        if body["exec_info"]["queue_remaining"] > 0:
            samples.append(elapsed)
        ready.set()
        time.sleep(0.01)
    out.put(samples)


async def run(base: str, token: str | None, clients: int, prompts: int, image: bool, timeout: float) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    stats: dict[str, Any] = {"accepted": 0, "completed": 0, "refused": [], "ids": set()}
    conn = aiohttp.TCPConnector(limit=clients + 10)
    async with aiohttp.ClientSession(headers=headers, connector=conn) as session:
        ctx = multiprocessing.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        poller = ctx.Process(target=poll_latency, args=(base, token, ready, stop, out), daemon=True)
        poller.start()
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
        t0 = time.monotonic()
        shares = [list(range(c, prompts, clients)) for c in range(clients)]
        await asyncio.gather(*(client_task(session, base, f"load-{c}", shares[c], image, stats, timeout)
                               for c in range(clients)))
        elapsed = time.monotonic() - t0
        stop.set()
        samples = await asyncio.get_running_loop().run_in_executor(None, out.get)
        poller.join(10)
        async with session.get(f"{base}/history") as r:
            history = await r.json()
    in_history = len(stats["ids"] & set(history))
    lost = stats["accepted"] - stats["completed"]
    print(f"clients {clients}, prompts {prompts}, graph {'chain+image' if image else 'chain'}")
    print(f"accepted {stats['accepted']}  refused {len(stats['refused'])} {sorted(set(stats['refused']))}")
    print(f"completed {stats['completed']}  lost {lost}  in history {in_history}")
    print(f"wall {elapsed:.2f} s  throughput {stats['completed'] / elapsed:.1f} prompts/s")
    if samples:
        ms = sorted(s * 1000 for s in samples)
        p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
        print(f"GET /prompt while busy: n={len(ms)}  p50 {statistics.median(ms):.1f} ms  p99 {p99:.1f} ms  "
              f"max {ms[-1]:.1f} ms  (target p99 < 100 ms)")
    else:
        print("GET /prompt while busy: no samples (the queue drained before the first poll)")
    return 0 if lost == 0 and in_history == stats["accepted"] else 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--url", help="an existing server; default: start one")
    parser.add_argument("--token", default=os.environ.get("NODEGRAPH_TOKEN"))
    parser.add_argument("--no-image", action="store_true", help="leave out EmptyImage → SaveImage")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.url:
        return asyncio.run(run(args.url.rstrip("/"), args.token, args.clients, args.prompts, not args.no_image,
                               args.timeout))
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        env = {**os.environ, "NODEGRAPH_TOKEN": ""}
        proc = subprocess.Popen([sys.executable, "-m", "nodegraph.cli", "serve", "--home", home, "--port", str(port)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_up(base, proc))
            return asyncio.run(run(base, None, args.clients, args.prompts, not args.no_image, args.timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_up(base: str, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            try:
                async with session.get(f"{base}/prompt") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not start")


if __name__ == "__main__":
    sys.exit(main())
