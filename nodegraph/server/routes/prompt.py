"""Prompt, queue and history routes: submit, list, delete, interrupt, free."""

from __future__ import annotations

import math
import uuid
from typing import Any

from aiohttp import web

from ...validation import ValidatedPrompt, ValidationCancelled, ValidationReport
from ...workflow import WorkflowFormatError
from ..http import (
    HTTPError,
    client_gone,
    compute,
    json_bytes,
    json_error,
    json_response,
    query_int,
    read_json,
)
from ..messages import status_message
from ..state import ServerState, state
from ..store import DuplicatePromptError, QueueFullError

routes = web.RouteTableDef()

#: extra_data keys that carry credentials; never stored nor shown in /queue or /history.
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")
#: Longest client_id / prompt_id accepted, and the largest |number| (integers are exact up to 2**53).
MAX_ID_CHARS = 200
MAX_NUMBER = 2**53


def _id_list(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise HTTPError(400, "invalid_request", f"'{key}' must be a list of prompt ids")
    return [str(v) for v in value]


def broadcast_status(st: ServerState) -> None:
    """Tell every client how many prompts remain."""
    st.broadcaster.send(status_message(st.store.remaining()))


def _parse_submission(data: dict[str, Any]) -> dict[str, Any]:
    prompt = data.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        raise HTTPError(400, "no_prompt", "No prompt provided",
                        "send {\"prompt\": {node_id: {class_type, inputs}}, \"client_id\": ...}")
    extra = data.get("extra_data", {})
    if not isinstance(extra, dict):
        raise HTTPError(400, "invalid_request", "'extra_data' must be a JSON object")
    extra = {k: v for k, v in extra.items() if k not in SENSITIVE_EXTRA_DATA}
    client_id = data.get("client_id", extra.get("client_id"))
    if client_id is not None:
        if isinstance(client_id, bool) or not isinstance(client_id, (str, int)) or len(str(client_id)) > MAX_ID_CHARS:
            raise HTTPError(400, "invalid_request", f"'client_id' must be a string of at most {MAX_ID_CHARS} "
                            "characters", "send the id your WebSocket connected with (/ws?clientId=...)")
        client_id = str(client_id)
        extra["client_id"] = client_id
    prompt_id = data.get("prompt_id") or str(uuid.uuid4())
    if not isinstance(prompt_id, str) or len(prompt_id) > MAX_ID_CHARS:
        raise HTTPError(400, "invalid_request", f"'prompt_id' must be a string of at most {MAX_ID_CHARS} characters")
    number = data.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                               or not math.isfinite(number) or abs(number) > MAX_NUMBER):
        raise HTTPError(400, "invalid_request", f"'number' must be a finite number between -{MAX_NUMBER} and "
                        f"{MAX_NUMBER}", "leave 'number' out to queue at the end, or send a small number")
    targets = data.get("partial_execution_targets")
    if targets is not None:
        targets = _id_list(data, "partial_execution_targets")
    return {"prompt": prompt, "extra_data": extra, "client_id": client_id, "prompt_id": prompt_id,
            "number": number, "front": bool(data.get("front")), "targets": targets}


def _prepare(st: ServerState, prompt: Any, targets: list[str] | None,
             should_stop: Any) -> ValidatedPrompt | web.Response:
    """Validate on a CPU-pool thread; a failure becomes its 400 answer, serialised here rather than on the loop."""
    try:
        return st.engine.prepare(prompt, targets, should_stop=should_stop)
    except ValidationReport as exc:
        return json_bytes(exc.to_json(), status=400)
    except ValidationCancelled as exc:
        return json_error(400, "validation_cancelled", str(exc))
    except (WorkflowFormatError, ValueError) as exc:
        return json_error(400, "invalid_prompt", f"Invalid prompt: {str(exc)[:2000]}")


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    """Validate and queue a prompt: ``{prompt_id, number, node_errors: {}}`` or 400 with the report."""
    st = state(request)
    sub = _parse_submission(await read_json(request))
    if st.store.remaining() - (1 if st.worker.current() else 0) >= st.settings.max_pending:
        return json_error(429, "queue_full", "the queue is full", "wait for prompts to finish, then retry")
    outcome = await compute(request, _prepare, st, sub["prompt"], sub["targets"], client_gone(request))
    if isinstance(outcome, web.Response):
        return outcome
    prepared = outcome
    try:
        number = await st.blocking(st.store.add, sub["prompt_id"], prepared.raw, sub["extra_data"],
                                   prepared.outputs, sub["client_id"], sub["number"], sub["front"])
    except QueueFullError as exc:
        return json_error(429, "queue_full", str(exc), "wait for prompts to finish, then retry")
    except DuplicatePromptError as exc:
        return json_error(400, "duplicate_prompt_id", str(exc))
    st.worker.remember(sub["prompt_id"], prepared)  # validated once: the run uses this, not a second validation
    st.worker.notify()
    broadcast_status(st)
    shown = int(number) if float(number).is_integer() else number
    return json_response({"prompt_id": sub["prompt_id"], "number": shown, "node_errors": {}})


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    """``{exec_info: {queue_remaining}}``."""
    return json_response({"exec_info": {"queue_remaining": state(request).store.remaining()}})


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    """``{queue_running: [...], queue_pending: [...]}``, entries as ``[number, id, prompt, extra_data, outputs]``."""
    st = state(request)

    def build() -> web.Response:
        running, pending = st.store.queue()
        return json_bytes({"queue_running": [i.queue_entry() for i in running],
                           "queue_pending": [i.queue_entry() for i in pending]})
    return await st.blocking(build)


async def _clear_or_delete(st: ServerState, data: dict, delete: Any) -> None:
    """ComfyUI's ``{clear: true}`` (everything) and ``{delete: [ids]}`` bodies, applied with ``delete(ids|None)``."""
    if data.get("clear"):
        await st.blocking(delete, None)
    if "delete" in data:
        await st.blocking(delete, _id_list(data, "delete"))


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    """``{clear: true}`` drops every pending prompt; ``{delete: [ids]}`` drops those."""
    st = state(request)
    await _clear_or_delete(st, await read_json(request, allow_empty=True), st.store.delete_pending)
    broadcast_status(st)
    return web.Response(status=200)


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    """Finished prompts ``{prompt_id: entry}``, oldest first (``max_items`` latest; ``offset`` from the oldest)."""
    st = state(request)
    max_items = query_int(request, "max_items")
    offset = query_int(request, "offset", -1, minimum=-1)

    def build() -> web.Response:
        items = st.store.history(max_items, offset if offset is not None else -1)
        return json_bytes({i.prompt_id: i.history_entry() for i in items})
    return await st.blocking(build)


@routes.get("/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    """``{prompt_id: entry}`` once the prompt finished, ``{}`` before."""
    st = state(request)
    item = await st.blocking(st.store.get, request.match_info["prompt_id"])
    if item is None or item.state in ("pending", "running"):
        return json_response({})
    return json_response({item.prompt_id: item.history_entry()})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    """``{clear: true}`` or ``{delete: [ids]}``; output files stay."""
    st = state(request)
    await _clear_or_delete(st, await read_json(request, allow_empty=True), st.store.delete_history)
    return web.Response(status=200)


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    """Interrupt the running prompt; with ``{prompt_id}`` only when that one is running."""
    data = await read_json(request, allow_empty=True)
    prompt_id = data.get("prompt_id")
    state(request).worker.interrupt(str(prompt_id) if prompt_id else None)
    return web.Response(status=200)


@routes.post("/free")
async def post_free(request: web.Request) -> web.Response:
    """``{unload_models, free_memory}``: drop models and cached results before the next prompt."""
    data = await read_json(request, allow_empty=True)
    state(request).worker.request_free(bool(data.get("unload_models")), bool(data.get("free_memory")))
    return web.Response(status=200)
