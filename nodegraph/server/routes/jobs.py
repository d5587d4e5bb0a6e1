"""The jobs API the editor lists its queue and history with: ``/jobs``, ``/jobs/{id}``, assets, and cancelling.

A job is a stored prompt: pending → ``pending``, running → ``in_progress``, success → ``completed``,
error → ``failed``, interrupted → ``cancelled``. Times are milliseconds since the epoch.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..http import HTTPError, json_bytes, json_response, query_int, read_json
from ..state import ServerState, state
from ..store import QueueItem
from .prompt import broadcast_status

routes = web.RouteTableDef()

STATUS = {"pending": "pending", "running": "in_progress", "success": "completed", "error": "failed",
          "interrupted": "cancelled"}
STATES = {v: k for k, v in STATUS.items()}
MEDIA_KEYS = ("images", "video", "audio")
MAX_LIMIT = 1000


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _media(item: QueueItem) -> list[dict[str, Any]]:
    """Every previewable output ``{filename, subfolder, type, nodeId, mediaType}`` in node order."""
    out = []
    for node_id, ui in item.outputs.items():
        for key in MEDIA_KEYS:
            for entry in (ui or {}).get(key) or []:
                if isinstance(entry, dict) and entry.get("filename"):
                    out.append({"filename": entry["filename"], "subfolder": entry.get("subfolder", ""),
                                "type": entry.get("type", "output"), "nodeId": str(node_id), "mediaType": key})
    return out


def _error(item: QueueItem) -> dict[str, Any] | None:
    for kind, data in item.messages:
        if kind == "execution_error" and isinstance(data, dict):
            tb = data.get("traceback") or []
            return {"prompt_id": item.prompt_id, "timestamp": data.get("timestamp"),
                    "node_id": str(data.get("node_id") or ""), "node_type": str(data.get("node_type") or ""),
                    "executed": [str(n) for n in data.get("executed") or []],
                    "exception_message": str(data.get("exception_message") or ""),
                    "exception_type": str(data.get("exception_type") or ""),
                    "traceback": [str(line) for line in (tb if isinstance(tb, list) else [tb])],
                    "current_inputs": data.get("current_inputs") or {}, "current_outputs": {}}
    return None


def job_summary(item: QueueItem, created: float, started: float | None, finished: float | None) -> dict[str, Any]:
    """The list entry of one job."""
    media = _media(item)
    status = STATUS.get(item.state, "failed")
    workflow_id = ((item.extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")
    job: dict[str, Any] = {
        "id": item.prompt_id, "status": status, "create_time": _ms(created),
        "execution_start_time": _ms(started), "execution_end_time": _ms(finished),
        "preview_output": media[0] if media else None,
        "outputs_count": sum(len(v) for ui in item.outputs.values() for v in (ui or {}).values()
                             if isinstance(v, list)),
        "previewable_outputs_count": len(media),
        "execution_error": _error(item) if status == "failed" else None,
        "workflow_id": workflow_id if isinstance(workflow_id, str) else None,
    }
    if status == "pending":
        job["priority"] = int(item.number) if float(item.number).is_integer() else item.number
    return job


def job_detail(item: QueueItem, created: float, started: float | None, finished: float | None) -> dict[str, Any]:
    """One job with its prompt, outputs and status messages."""
    job = job_summary(item, created, started, finished)
    job.update({"workflow": {"prompt": item.prompt, "extra_data": item.extra_data}, "outputs": item.outputs,
                "update_time": _ms(finished or started or created),
                "execution_status": {"status_str": "success" if item.state == "success" else "error",
                                     "completed": item.state == "success", "messages": item.messages}})
    return job


def _states(raw: str | None) -> list[str]:
    if not raw:
        return list(STATUS)
    states = []
    for name in raw.split(","):
        name = name.strip()
        if name not in STATES:
            raise HTTPError(400, "invalid_parameter", f"unknown job status {name!r}",
                            f"use a comma-separated list of {', '.join(STATES)}")
        states.append(STATES[name])
    return states


def _find(st: ServerState, job_id: str) -> tuple[QueueItem, float, float | None, float | None]:
    _total, rows = st.store.jobs(STATUS, 1, 0, prompt_id=job_id)
    if not rows:
        raise HTTPError(404, "not_found", f"no job {job_id!r}", "GET /api/jobs lists the jobs")
    return rows[0]


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """``?status=pending,in_progress,completed,failed,cancelled&limit=&offset=`` → ``{jobs, pagination}``."""
    st = state(request)
    states = _states(request.query.get("status"))
    limit = min(query_int(request, "limit", 100) or 0, MAX_LIMIT)
    offset = query_int(request, "offset", 0) or 0

    def build() -> web.Response:
        total, rows = st.store.jobs(states, limit, offset)
        return json_bytes({"jobs": [job_summary(*row) for row in rows],
                           "pagination": {"offset": offset, "limit": limit, "total": total,
                                          "has_more": offset + len(rows) < total}})
    return await st.blocking(build)


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """One job in detail; 404 when unknown."""
    st = state(request)
    row = await st.blocking(_find, st, request.match_info["job_id"])
    return await st.blocking(lambda: json_bytes(job_detail(*row)))


@routes.get("/jobs/{job_id}/assets")
async def job_assets(request: web.Request) -> web.Response:
    """The job's output files as assets ``{id, name, preview_url, mime_type, node_id, output_key, output_index}``."""
    st = state(request)
    item = (await st.blocking(_find, st, request.match_info["job_id"]))[0]
    media = _media(item)
    limit = min(query_int(request, "limit", 500) or 0, MAX_LIMIT)
    offset = query_int(request, "offset", 0) or 0
    assets = []
    for i, m in enumerate(media[offset:offset + limit], start=offset):
        query = urlencode({"filename": m["filename"], "subfolder": m["subfolder"], "type": m["type"]})
        mime = "image/png" if m["filename"].lower().endswith(".png") else None
        assets.append({"id": f"{item.prompt_id}:{i}", "name": m["filename"], "preview_url": f"/api/view?{query}",
                       "mime_type": mime, "node_id": m["nodeId"], "output_key": m["mediaType"], "output_index": i})
    return json_response({"job_id": item.prompt_id, "assets": assets,
                              "pagination": {"offset": offset, "limit": limit, "total": len(media),
                                             "has_more": offset + len(assets) < len(media)}})


def _cancel(st: ServerState, job_ids: list[str]) -> list[str]:
    """Drop pending jobs and interrupt the running one; returns the ids that were cancelled."""
    done = []
    for job_id in job_ids:
        if st.store.delete_pending([job_id]) or st.worker.interrupt(job_id):
            done.append(job_id)
    return done


@routes.post("/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Cancel one job (pending: removed; running: interrupted); 404 when it is neither."""
    st = state(request)
    job_id = request.match_info["job_id"]
    if not await st.blocking(_cancel, st, [job_id]):
        raise HTTPError(404, "not_found", f"job {job_id!r} is not pending or running")
    broadcast_status(st)
    return json_response({"cancelled": [job_id]})


@routes.post("/jobs/cancel")
async def cancel_jobs(request: web.Request) -> web.Response:
    """``{job_ids: [...]}``: cancel each that is pending or running."""
    st = state(request)
    ids = (await read_json(request)).get("job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise HTTPError(400, "invalid_request", "'job_ids' must be a list of job ids")
    done = await st.blocking(_cancel, st, ids)
    broadcast_status(st)
    return json_response({"cancelled": done})
