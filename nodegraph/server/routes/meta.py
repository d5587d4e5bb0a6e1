"""Routes about the API itself: ``GET /openapi.json``, the OpenAPI 3 document generated from the route table."""

from __future__ import annotations

from aiohttp import web

from ..http import json_response

routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every route this server answers (generated from its router)."""
    from ..openapi import build_openapi

    return json_response(build_openapi(request.app))
