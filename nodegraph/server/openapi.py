"""The API as an OpenAPI 3.1 document, generated from the application's route table (never kept by hand).

Every route the router holds (core, plugin and static, at ``/`` and ``/api``) becomes an operation; path parameters
come from the route patterns, summaries from the handlers' docstrings. What a pattern cannot tell (query parameters,
request bodies) comes from ``OPERATIONS``, keyed by method and path without the ``/api`` prefix; a route missing from
it gets the generic description (any JSON body for POST/PUT/PATCH, no documented query parameters).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from .. import __version__
from .routes import API_PREFIX

OPENAPI_VERSION = "3.1.0"
METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
#: aiohttp names path parameters ``{name}`` or ``{name:regex}``; its compiled patterns hold ``(?P<name>regex)``.
_GROUP = re.compile(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)")
_TEMPLATE = re.compile(r"\{(\w+)\}")
#: aiohttp's default parameter pattern (one path segment).
_SEGMENT = "[^{}/]+"

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
ID_LIST: dict[str, Any] = {"type": "array", "items": STRING}
ANY_JSON: dict[str, Any] = {}
OBJECT: dict[str, Any] = {"type": "object"}


def query(name: str, schema: dict[str, Any], description: str = "", required: bool = False) -> dict[str, Any]:
    """A query parameter object."""
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


def json_body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    """A requestBody object for a JSON body."""
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object schema with the given properties (others allowed, as the handlers ignore them)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


NODE = obj({"class_type": STRING, "inputs": OBJECT, "_meta": OBJECT}, ("class_type",))
PROMPT = obj({"prompt": {"type": "object", "additionalProperties": NODE},
              "client_id": STRING, "prompt_id": {"type": "string", "maxLength": 200}, "number": {"type": "number"},
              "front": BOOLEAN, "extra_data": OBJECT, "partial_execution_targets": ID_LIST}, ("prompt",))
CLEAR_DELETE = json_body(obj({"clear": BOOLEAN, "delete": ID_LIST}))
PAGE = [query("limit", INTEGER), query("offset", INTEGER)]
UPLOAD_FIELDS: dict[str, Any] = {
    "image": {"type": "string", "contentMediaType": "application/octet-stream"},
    "type": {"type": "string", "enum": ["input", "output", "temp"]},
    "subfolder": STRING, "overwrite": {"type": "string", "enum": ["true", "false"]}}
FILE_FLAGS = [query("overwrite", BOOLEAN), query("full_info", BOOLEAN)]
FOLDER_TYPE = {"type": "string", "enum": ["input", "output", "temp"]}

#: What the route patterns cannot tell, per (METHOD, path without /api): ``parameters`` (query) and ``requestBody``.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/prompt"): {"requestBody": json_body(PROMPT, required=True)},
    ("POST", "/queue"): {"requestBody": CLEAR_DELETE},
    ("GET", "/history"): {"parameters": [query("max_items", INTEGER, "the latest N entries"),
                                         query("offset", INTEGER, "skip this many from the oldest")]},
    ("POST", "/history"): {"requestBody": CLEAR_DELETE},
    ("POST", "/interrupt"): {"requestBody": json_body(obj({"prompt_id": STRING}))},
    ("POST", "/free"): {"requestBody": json_body(obj({"unload_models": BOOLEAN, "free_memory": BOOLEAN}))},
    ("GET", "/jobs"): {"parameters": [query("status", STRING, "comma-separated: pending, in_progress, completed, "
                                                              "failed, cancelled"), *PAGE]},
    ("GET", "/jobs/{job_id}/assets"): {"parameters": PAGE},
    ("POST", "/jobs/cancel"): {"requestBody": json_body(obj({"job_ids": ID_LIST}, ("job_ids",)), required=True)},
    ("POST", "/settings"): {"requestBody": json_body({"type": "object", "additionalProperties": ANY_JSON},
                                                     required=True)},
    ("POST", "/settings/{id}"): {"requestBody": json_body(ANY_JSON)},
    ("GET", "/userdata"): {"parameters": [query("dir", STRING, "folder under the user's folder", required=True),
                                          query("recurse", BOOLEAN), query("full_info", BOOLEAN),
                                          query("split", BOOLEAN)]},
    ("POST", "/userdata/{file}"): {
        "parameters": FILE_FLAGS,
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
            "type": "string", "contentMediaType": "application/octet-stream"}}}}},
    ("POST", "/userdata/{file}/move/{dest}"): {"parameters": FILE_FLAGS},
    ("GET", "/view"): {"parameters": [query("filename", STRING, required=True), query("subfolder", STRING),
                                      query("type", FOLDER_TYPE), query("preview", STRING, "e.g. webp;90"),
                                      query("channel", {"type": "string", "enum": ["rgba", "rgb", "a"]})]},
    ("POST", "/upload/image"): {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": obj(UPLOAD_FIELDS, ("image",))}}}},
    ("POST", "/upload/mask"): {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": obj({**UPLOAD_FIELDS, "original_ref": {"type": "string", "contentMediaType": "application/json"}},
                      ("image", "original_ref"))}}}},
    ("GET", "/ws"): {"parameters": [query("clientId", STRING)],
                     "description": "WebSocket: send Upgrade: websocket; a plain GET is refused with 400."},
}
GENERIC_BODY = json_body(ANY_JSON)
ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": obj({"type": STRING, "message": STRING, "details": STRING, "extra_info": OBJECT},
                 ("type", "message")),
    "node_errors": OBJECT}}


def _summary(handler: Any) -> str:
    doc = inspect.getdoc(getattr(handler, "__func__", handler)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _param_patterns(resource: web.AbstractResource) -> dict[str, str]:
    pattern = resource.get_info().get("pattern")
    if pattern is None:
        return {}
    return {name: regex for name, regex in _GROUP.findall(pattern.pattern)}


def _path_and_params(resource: web.AbstractResource) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path template of a resource and its path parameters."""
    if isinstance(resource, web.StaticResource):
        template = resource.canonical.rstrip("/") + "/{filename}"
        patterns = {"filename": ".+"}
    else:
        template = resource.canonical or "/"
        patterns = _param_patterns(resource)
    params = []
    for name in _TEMPLATE.findall(template):
        regex = patterns.get(name, _SEGMENT)
        param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": dict(STRING)}
        if regex != _SEGMENT:
            param["description"] = "may hold '/' (the rest of the path)" if regex == ".+" else f"matches {regex}"
            param["x-nodegraph-pattern"] = regex
        params.append(param)
    return template, params


def _unprefixed(path: str) -> str:
    return path[len(API_PREFIX):] if path.startswith(API_PREFIX + "/") else path


def _operation(method: str, path: str, handler: Any, path_params: list[dict[str, Any]]) -> dict[str, Any]:
    known = OPERATIONS.get((method, _unprefixed(path)))
    op: dict[str, Any] = {"operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_"),
                          "tags": ["api" if path.startswith(API_PREFIX + "/") else "root"]}
    summary = _summary(handler)
    if summary:
        op["summary"] = summary
    if known is None:
        op["x-nodegraph-described"] = False
    elif "description" in known:
        op["description"] = known["description"]
    parameters = [*path_params, *((known or {}).get("parameters") or [])]
    if parameters:
        op["parameters"] = parameters
    if known is not None and "requestBody" in known:
        op["requestBody"] = known["requestBody"]
    elif known is None and method in ("POST", "PUT", "PATCH"):
        op["requestBody"] = GENERIC_BODY
    op["responses"] = {"2XX": {"description": "success"},
                       "4XX": {"description": "refused: the answer says why and how to fix the request",
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
    return op


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``app.router`` (standard JSON-ready)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method.lower() not in METHODS:
            continue
        template, path_params = _path_and_params(resource)
        item = paths.setdefault(template, {})
        item.setdefault(route.method.lower(), _operation(route.method, template, route.handler, path_params))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "nodegraph", "version": __version__,
                 "description": "ComfyUI-compatible HTTP API of nodegraph, generated from the server's route table."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": {"Error": ERROR},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "required when the server has a token"}}},
        "security": [{}, {"bearer": []}],
    }

