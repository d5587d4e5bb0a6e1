"""Workflows and WebSocket helpers shared by the server tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

#: The server test plugins (``nodegraph_plugins`` of these tests; ``--plugin-dir`` for real ``nodegraph serve``).
PLUGINS = Path(__file__).resolve().parent / "plugins"


def chain(value: int = 3, b: int = 4, op: str = "multiply") -> dict[str, Any]:
    """PrimitiveInt → IntMath → ShowValue."""
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
            "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": b, "operation": op}},
            "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}


def slow(steps: int = 5, step_ms: int = 20, tag: str = "", preview: bool = False,
         save: bool = False) -> dict[str, Any]:
    """One SlowSteps node."""
    return {"1": {"class_type": "SlowSteps", "inputs": {"steps": steps, "step_ms": step_ms, "preview": preview,
                                                        "tag": tag, "save": save}}}


async def receive_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str,
                             timeout: float = 20.0) -> list[Any]:
    """Messages (dicts; binary frames as bytes) up to and including ``executing`` with node null for the prompt."""
    out: list[Any] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            out.append(data)
            if data["type"] == "executing" and data["data"]["node"] is None and \
                    data["data"]["prompt_id"] == prompt_id:
                return out
        elif msg.type == aiohttp.WSMsgType.BINARY:
            out.append(msg.data)
        else:
            raise AssertionError(f"WebSocket ended: {msg!r}")
