"""GET /openapi.json: an OpenAPI 3.1 document generated from the router, covering every route at / and /api."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from nodegraph.server.openapi import build_openapi


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} in the document")


def _expected_template(resource: web.AbstractResource) -> str:
    """How the document must name a resource: its canonical path; a static folder as ``prefix/{filename}``."""
    if isinstance(resource, web.StaticResource):
        return resource.canonical.rstrip("/") + "/{filename}"
    return resource.canonical


async def _document(client: Any, path: str) -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return json.loads((await resp.read()).decode("utf-8"), parse_constant=_refuse)


@pytest.mark.asyncio
async def test_document_lists_every_route_and_validates(client: Any) -> None:
    doc = await _document(client, "/openapi.json")
    assert await _document(client, "/api/openapi.json") == doc
    validate(doc)
    assert doc["openapi"].startswith("3.")
    routes = [r for r in client.server.app.router.routes() if r.resource is not None]
    assert len(routes) > 80
    operations = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    expected = {(r.method, _expected_template(r.resource)) for r in routes}
    assert expected - operations == set(), "routes missing from the document"
    assert operations - expected == set(), "operations the router does not have"
    for prefix in ("", "/api"):  # core routes, the document itself and a plugin's route, at both prefixes
        for method, path in [("POST", "/prompt"), ("GET", "/queue"), ("GET", "/openapi.json"),
                             ("GET", "/server_test/ping"), ("DELETE", "/userdata/{file}")]:
            assert (method, prefix + path) in operations
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.asyncio
async def test_path_parameters_come_from_the_route_patterns(client: Any) -> None:
    doc = await _document(client, "/openapi.json")
    for path, item in doc["paths"].items():
        names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        for op in item.values():
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert params == names, (path, params)
    move = doc["paths"]["/api/userdata/{file}/move/{dest}"]["post"]
    assert [p["name"] for p in move["parameters"] if p["in"] == "path"] == ["file", "dest"]
    rest = next(p for p in doc["paths"]["/extensions/{plugin}/{path}"]["get"]["parameters"] if p["name"] == "path")
    assert rest["x-nodegraph-pattern"] == ".+"


@pytest.mark.asyncio
async def test_main_routes_describe_their_query_and_body(client: Any) -> None:
    doc = await _document(client, "/openapi.json")
    paths = doc["paths"]
    for prefix in ("", "/api"):
        prompt = paths[prefix + "/prompt"]["post"]["requestBody"]
        schema = prompt["content"]["application/json"]["schema"]
        assert prompt["required"] and schema["required"] == ["prompt"]
        assert {"prompt", "client_id", "prompt_id", "number", "front", "extra_data"} <= set(schema["properties"])
        view = {p["name"]: p for p in paths[prefix + "/view"]["get"]["parameters"]}
        assert view["filename"]["required"] and {"subfolder", "type", "preview", "channel"} <= set(view)
        assert {p["name"] for p in paths[prefix + "/history"]["get"]["parameters"]} == {"max_items", "offset"}
        assert "dir" in {p["name"] for p in paths[prefix + "/userdata"]["get"]["parameters"]}
        for upload in ("/upload/image", "/upload/mask"):
            form = paths[prefix + upload]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            assert "image" in form["required"]
        for body_route in ("/queue", "/history", "/interrupt", "/free", "/settings", "/jobs/cancel"):
            assert "application/json" in paths[prefix + body_route]["post"]["requestBody"]["content"]
        assert paths[prefix + "/object_info"]["get"].get("x-nodegraph-described") is False  # nothing to add
    # A route the table does not know gets the generic description (any JSON body).
    assert paths["/server_test/ping"]["get"]["x-nodegraph-described"] is False


def test_routes_added_to_the_router_appear_without_editing_a_table() -> None:
    async def handler(request: web.Request) -> web.Response:
        """A probe route."""
        return web.Response()

    app = web.Application()
    app.router.add_get("/probe/{a}/{rest:.+}", handler)
    app.router.add_post("/probe", handler)
    doc = build_openapi(app)
    validate(copy.deepcopy(doc))
    op = doc["paths"]["/probe/{a}/{rest}"]["get"]
    assert op["summary"] == "A probe route."
    assert [p["name"] for p in op["parameters"]] == ["a", "rest"]
    assert "head" in doc["paths"]["/probe/{a}/{rest}"]
    assert "application/json" in doc["paths"]["/probe"]["post"]["requestBody"]["content"]


def test_the_validator_refuses_a_broken_document() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/x/{a}", handler)
    doc = build_openapi(app)
    broken = copy.deepcopy(doc)
    del broken["paths"]["/x/{a}"]["get"]["parameters"]  # a path template without its parameter
    with pytest.raises(OpenAPIValidationError):
        validate(broken)
    broken = copy.deepcopy(doc)
    broken["paths"]["/x/{a}"]["get"]["parameters"][0]["in"] = "body"  # OpenAPI 2's body parameters are gone in 3
    with pytest.raises(OpenAPIValidationError):
        validate(broken)
