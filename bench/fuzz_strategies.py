"""Hypothesis strategies for fuzzing the server: a request for an operation of its OpenAPI document, built from the
operation's path and query parameters and body schema (JSON, multipart or bytes), mixed with hostile values
(``fuzz_values``) and workflows (``fuzz_prompts``); a third of the requests use known-good URLs only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from fuzz_prompts import prompt_graph, runnable_graph
from fuzz_sandbox import Req, tiny_png
from fuzz_values import conforming, deep_json, dump_json, encode, hostile_json, hostile_text
from fuzz_ws import ws_request

#: Longest request target: aiohttp answers request lines over 8190 bytes by closing the connection (a transport
#: limit, not a route's), so generated URLs stay below it.
MAX_TARGET = 7500


def json_body(schema: dict[str, Any], catalogue: dict[str, Any], is_prompt: bool) -> st.SearchStrategy[bytes]:
    """Bodies for a JSON operation: documents from its schema (graphs for /prompt), or broken ones."""
    if is_prompt:
        props = dict(schema.get("properties", {}))
        props.pop("prompt", None)
        optional = {k: conforming(v) for k, v in props.items()}
        uuids = st.uuids().map(str)
        optional["prompt_id"] = st.one_of(uuids, uuids, uuids, st.sampled_from(["fuzz-1", "fuzz-2"]),
                                          optional.get("prompt_id", hostile_text()))
        doc = st.builds(lambda p, rest: {"prompt": p, **rest}, prompt_graph(catalogue),
                        st.fixed_dictionaries({}, optional=optional))
        clean = st.fixed_dictionaries({"prompt": runnable_graph(catalogue), "prompt_id": uuids},
                                      optional={"client_id": st.text(max_size=20), "front": st.booleans(),
                                                "extra_data": st.dictionaries(st.text(max_size=8), hostile_json(),
                                                                              max_size=2)})
        doc = st.one_of(doc, clean)
    else:
        doc = conforming(schema)
    broken = st.one_of(st.binary(max_size=40), deep_json().map(dump_json),
                       st.sampled_from([b"", b"{", b'{"a":', b"NaN", b"[1,2]", b'"x"', b"\xff\xfe{}",
                                        b'{"a": 1}' * 2, b"null"]))
    return st.one_of(doc.map(dump_json), doc.map(dump_json), doc.map(dump_json), broken)


GOOD_FIELDS: dict[str, list[str]] = {
    "type": ["input", "output", "temp"], "subfolder": ["", "sub", "new/deeper"], "overwrite": ["true", "false"],
    "original_ref": ['{"filename": "fuzz.png", "subfolder": "", "type": "input"}',
                     '{"filename": "fuzz.png", "subfolder": "sub", "type": "output"}']}


def multipart_body(schema: dict[str, Any]) -> st.SearchStrategy[tuple[bytes, str]]:
    """``(body, content type)`` for an upload: half well-formed (a real image, good fields, now and then one hostile
    value), half hostile (names, fields, images, boundaries, truncation)."""
    fields = {k: v for k, v in schema.get("properties", {}).items() if k != "image"}
    png = tiny_png()
    good_image = st.sampled_from([png, tiny_png(64)])
    image = st.sampled_from([png, png[:30], b"", b"GIF89a" + b"\0" * 20, tiny_png(64)]) | st.binary(max_size=64)
    good_name = st.sampled_from(["fuzz.png", "a.png", "b.jpg", "c.webp"])
    filename = st.sampled_from(["fuzz.png", "a.png", "b.jpg", "x.txt"]) | hostile_text()

    def field_text(value: Any) -> bytes:
        text = value if isinstance(value, str) else dump_json(value).decode("utf-8", "surrogatepass")
        return text.encode("utf-8", "surrogatepass")

    @st.composite
    def build(draw: Callable[..., Any]) -> tuple[bytes, str]:
        boundary = "fuzzBOUNDARY7d1"
        sane = draw(st.booleans())
        parts: list[bytes] = []
        if sane or draw(st.integers(0, 5)) > 0:
            name = draw(good_name if sane else filename).encode("utf-8", "surrogatepass")
            parts.append(b'Content-Disposition: form-data; name="image"; filename="' + name + b'"\r\n'
                         b"Content-Type: image/png\r\n\r\n" + draw(good_image if sane else image))
        hostile_field = draw(st.sampled_from(sorted(fields) + [""] * 3)) if sane else None
        for key, sub in fields.items():
            if sane and key != hostile_field:
                if key == "original_ref" or draw(st.booleans()):
                    value: Any = draw(st.sampled_from(GOOD_FIELDS.get(key, [""])))
                else:
                    continue
            elif sub.get("contentMediaType") == "application/json":  # a JSON document inside a form field
                value = draw(st.one_of(deep_json(), hostile_json(), st.sampled_from(GOOD_FIELDS.get(key, ["{}"]))))
            elif draw(st.booleans()):
                value = draw(conforming(sub) | hostile_text())
            else:
                continue
            parts.append(f'Content-Disposition: form-data; name="{key}"\r\n\r\n'.encode() + field_text(value))
        for _ in range(0 if sane else draw(st.integers(0, 2))):
            parts.append(b'Content-Disposition: form-data; name="' +
                         draw(hostile_text()).encode("utf-8", "surrogatepass") + b'"\r\n\r\nx')
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts) + \
            b"--" + boundary.encode() + b"--\r\n"
        good_ctype = f"multipart/form-data; boundary={boundary}"
        ctype = good_ctype if sane else draw(st.sampled_from([good_ctype] * 4 + [
            "multipart/form-data", "multipart/mixed; boundary=zzz", "application/json", "text/plain"]))
        if not sane and draw(st.integers(0, 9)) == 0:
            body = body[: draw(st.integers(0, len(body)))]
        return body, ctype
    return build()


def scalar_text(value: Any) -> str:
    """A query or path value as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return dump_json(value).decode("utf-8", "surrogatepass")
    return str(value)


@dataclass
class Operation:
    """One operation of the OpenAPI document."""

    method: str
    path: str
    spec: dict[str, Any]

    @property
    def key(self) -> str:
        """The path without the /api prefix (as the FILE_ROUTES and OPERATIONS tables name it)."""
        return self.path[4:] if self.path.startswith("/api/") else self.path

    @property
    def name(self) -> str:
        """``METHOD path``."""
        return f"{self.method} {self.path}"


def operations(document: dict[str, Any], only: str | None = None) -> list[Operation]:
    """Every operation of the document (HEAD only where no GET shares the path: it runs the same handler)."""
    out = []
    for path, item in document["paths"].items():
        for method, spec in item.items():
            if method == "head" and "get" in item:
                continue
            op = Operation(method.upper(), path, spec)
            if only is None or only in op.name:
                out.append(op)
    return out


PATH_EXAMPLES = {"folder": ["checkpoints", "loras", "embeddings", "vae"], "module": ["nodegraph"],
                 "file": ["workflows%2Fa.json", "a.json", "txt2img.json", "workflows%2Fb.json"],
                 "dest": ["workflows%2Fb.json", "c.json"], "name": ["index.json", "nodegraph.js"],
                 "plugin": ["server_test_nodes", "nodegraph_example"], "filename": ["index.html", "assets/x.js"],
                 "job_id": ["fuzz-1", "fuzz-2"], "prompt_id": ["fuzz-1", "fuzz-2"]}


HEADER_VALUES = ["127.0.0.1", "localhost:1", "evil.example", "[::1]", "", "null", "http://evil.example",
                 "http://127.0.0.1", "Bearer ", "Bearer x", "nodegraph_token=x", "a=b; c", "[", "http://[::1", "%",
                 "multipart/form-data; boundary=", "application/json; charset=latin-1"]
#: Known query values; the last of each list is a wrong one (left out of the known-good requests).
QUERY_EXAMPLES = {"filename": ["fuzz.png", "fuzz.png"], "subfolder": ["", "sub", "../.."],
                  "type": ["input", "output", "temp", "user"], "preview": ["webp;90", "jpeg;50", "png", "gif"],
                  "channel": ["rgb", "a", "rgba", "x"], "dir": ["workflows", "", "sub", "../.."],
                  "status": ["pending,completed", "failed", "bogus"], "max_items": ["1", "0", "5", "-1"],
                  "offset": ["0", "1", "-5"], "limit": ["1", "0", "50", "-1"], "recurse": ["true", "false", "x"],
                  "full_info": ["true", "false", "x"], "split": ["true", "false", "x"],
                  "overwrite": ["true", "false", "x"], "clientId": ["fuzz", "fuzz", ""]}


def request_strategy(op: Operation, catalogue: dict[str, Any]) -> st.SearchStrategy[Req]:
    """Requests for one operation, generated from its parameters and request body."""
    params = op.spec.get("parameters", [])
    body_spec = op.spec.get("requestBody", {}).get("content", {})

    @st.composite
    def build(draw: Callable[..., Any]) -> Req:
        sane = draw(st.integers(0, 2)) == 0  # a third: URL and headers from known-good values only
        path = op.path
        for p in (p for p in params if p["in"] == "path"):
            slashes = p.get("x-nodegraph-pattern") == ".+"
            examples = PATH_EXAMPLES.get(p["name"], []) + (sorted(catalogue)[:5] if p["name"] == "node_class" else [])
            if sane and examples:
                choice = draw(st.sampled_from(examples))
            else:
                choice = draw(st.one_of(*(st.sampled_from(examples),) * bool(examples), hostile_text().map(
                    lambda v, s=slashes: encode(v, s)), conforming(p["schema"]).map(lambda v: encode(scalar_text(v)))))
            path = path.replace("{" + p["name"] + "}", choice or "x")
        query = []
        for p in (p for p in params if p["in"] == "query"):
            if p.get("required") or draw(st.booleans()):
                known = QUERY_EXAMPLES.get(p["name"])
                examples = st.sampled_from(known or ["fuzz.png", "sub", "input"])
                value = draw(st.sampled_from(known[: max(1, len(known) - 1)]) if sane and known else
                             st.one_of(examples, examples, conforming(p["schema"]), hostile_text()))
                query.append(f"{encode(p['name'])}={encode(scalar_text(value))}")
        for _ in range(0 if sane else draw(st.integers(0, 1))):
            query.append(f"{encode(draw(hostile_text()))}={encode(draw(hostile_text()))}")
        while query and len(path) + sum(len(q) + 1 for q in query) > MAX_TARGET:
            query.pop()
        headers: dict[str, str] = {}
        if not sane and draw(st.integers(0, 7)) == 0:  # the middlewares' inputs: Host, Origin, token carriers
            name = draw(st.sampled_from(["Host", "Origin", "Authorization", "Cookie", "Content-Type"]))
            headers[name] = draw(st.sampled_from(HEADER_VALUES) | st.text(
                st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=40))
        body = None
        if "application/json" in body_spec:
            body = draw(json_body(body_spec["application/json"]["schema"], catalogue, op.key == "/prompt"))
            headers["Content-Type"] = draw(st.sampled_from(["application/json"] * 3 + ["text/plain"]))
        elif "multipart/form-data" in body_spec:
            body, headers["Content-Type"] = draw(multipart_body(body_spec["multipart/form-data"]["schema"]))
        elif "application/octet-stream" in body_spec:
            body = draw(st.binary(max_size=64) | hostile_json().map(dump_json))
        elif op.method in ("POST", "PUT", "PATCH", "DELETE") and draw(st.booleans()):
            body = draw(hostile_json().map(dump_json))
        return Req(op.method, path, "&".join(query), headers, body)
    if op.key == "/ws" and op.method == "GET":  # plain GETs and real WebSocket sessions
        return st.one_of(build(), ws_request(op.path), ws_request(op.path))
    return build()

