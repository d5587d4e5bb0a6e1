"""Concurrent traffic during fuzzing: threads that loop over well-formed requests touching the same files, settings,
queue and history the fuzzer touches, so races (a file moved between a check and its use, a history cleared while
listed) show up as failures too."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from fuzz_sandbox import Req, ServerProcess, tiny_png

_JSON = {"Content-Type": "application/json"}


def _upload() -> Req:
    boundary = "noiseB0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"fuzz.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + tiny_png() + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    return Req("POST", "/upload/image", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
               body=body)


def cycle(worker: int) -> list[tuple[str, Req]]:
    """One round of well-formed requests (named ``NOISE METHOD path`` in the report)."""
    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": worker}},
              "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    reqs = [
        Req("POST", "/userdata/workflows%2Fa.json", "overwrite=true", _JSON, b'{"nodes": []}'),
        Req("POST", "/userdata/workflows%2Fa.json/move/workflows%2Fb.json", "overwrite=true"),
        Req("GET", "/userdata", "dir=workflows&recurse=true&full_info=true"),
        Req("DELETE", "/userdata/workflows%2Fb.json"),
        Req("POST", "/settings", headers=_JSON, body=json.dumps({f"noise.{worker}": worker}).encode()),
        _upload(),
        Req("GET", "/view", "filename=fuzz.png&type=input&preview=webp%3B50"),
        Req("POST", "/prompt", headers=_JSON, body=json.dumps({"prompt": prompt,
                                                                "prompt_id": str(uuid.uuid4())}).encode()),
        Req("GET", "/history", "max_items=5"),
        Req("GET", "/jobs", "limit=5"),
        Req("POST", "/history", headers=_JSON, body=b'{"clear": true}'),
    ]
    return [(f"NOISE {r.method} {r.path}", r) for r in reqs]


class Noise:
    """``threads`` threads looping over ``cycle`` until stopped; each answer goes through ``check``."""

    def __init__(self, server: ServerProcess, threads: int, check: Any) -> None:
        self.server, self.check = server, check
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Noise:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _loop(self, worker: int) -> None:
        while not self._stop.is_set():
            for name, req in cycle(worker):
                if self._stop.is_set():
                    return
                self.check(name, req)
