"""Auth: off loopback a token is required on every route and on the WebSocket."""

from __future__ import annotations

import aiohttp
import pytest
from server_helpers import chain

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.server.settings import ServerSettings, is_loopback, resolve_token

TOKEN = "s3cret-token"


def test_binding_off_loopback_needs_a_token(monkeypatch):
    monkeypatch.delenv("NODEGRAPH_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("::")
    with pytest.raises(ValueError, match="requires an auth token"):
        ServerSettings(listen="0.0.0.0")
    token, generated = resolve_token("0.0.0.0", None)
    assert generated and len(token) >= 32 and token != resolve_token("0.0.0.0", None)[0]
    assert resolve_token("127.0.0.1", None) == (None, False)
    assert resolve_token("0.0.0.0", "mine") == ("mine", False)
    monkeypatch.setenv("NODEGRAPH_TOKEN", "from-env")
    assert resolve_token("0.0.0.0", None) == ("from-env", False)


@pytest.mark.asyncio
async def test_every_route_and_the_websocket_require_the_token(make_client, engine, registry, tmp_path):
    client = await make_client(engine, listen="0.0.0.0", token=TOKEN)
    for method, path in [("GET", "/prompt"), ("POST", "/prompt"), ("GET", "/api/object_info"), ("GET", "/queue"),
                         ("GET", "/history"), ("POST", "/interrupt"), ("GET", "/view?filename=x.png"),
                         ("POST", "/upload/image"), ("GET", "/system_stats"), ("GET", "/server_test/ping"),
                         ("GET", "/api/server_test/ping"), ("GET", "/models")]:
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await client.get("/prompt", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect("/ws?clientId=a")
    assert exc.value.status == 401

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/prompt", headers=auth)).status == 200
    resp = await client.post("/prompt", json={"prompt": chain()}, headers=auth)
    assert resp.status == 200
    by_query = await client.get(f"/api/server_test/ping?token={TOKEN}")
    assert by_query.status == 200 and by_query.cookies["nodegraph_token"]["httponly"]
    assert (await client.get("/queue", headers={"Cookie": f"nodegraph_token={TOKEN}"})).status == 200
    ws = await client.ws_connect(f"/ws?clientId=a&token={TOKEN}")
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()
    ws = await client.ws_connect("/ws?clientId=b", headers=auth)
    assert (await ws.receive_json(timeout=5))["data"]["sid"] == "b"
    await ws.close()
    # Behind a reverse proxy the Host is the proxy's name: allowed once a token guards the server.
    proxied = await make_client(Engine(EngineConfig(home=tmp_path / "other"), registry=registry), token=TOKEN)
    assert (await proxied.get("/prompt", headers={**auth, "Host": "gen.example.org"})).status == 200
    assert (await proxied.get("/prompt", headers={"Host": "gen.example.org"})).status == 401
    # The token does not switch off the cross-site check.
    assert (await client.get("/prompt", headers={**auth, "Origin": "http://evil.example"})).status == 403
