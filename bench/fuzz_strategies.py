"""Hypothesis strategies for fuzzing the server: requests for each operation of its OpenAPI document, from the
operation's parameters and body schemas mixed with hostile values (traversal, absolute, NUL, over-long and Windows
names; NaN, 1e400 and huge integers; lone surrogates; deep nesting; wrong types; broken JSON and multipart)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fuzz_sandbox import Req, tiny_png
from hypothesis import strategies as st

#: Nodes cheap enough to run whatever their inputs; any other class always misses a required input (no heavy runs).
CHEAP_NODES = frozenset({"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                         "PrimitiveBoolean", "IntMath", "FloatMath", "IntToFloat", "StringFormat",
                         "StringConcatenate", "RandomInt", "ShowValue", "ExampleGreeting", "ReverseText"})
#: Longest encoded URL part and request target: aiohttp answers request lines over 8190 bytes by closing the
#: connection (a transport limit, not a route's), so generated URLs stay below it.
MAX_URL_PART = 1500
MAX_TARGET = 7500

class Raw(str):
    """JSON text inserted verbatim into a generated document (NaN, 1e400, deep nesting)."""


NASTY = ["", " ", ".", "..", "../", "../../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "C:\\Windows\\win.ini",
         "C:x", "\\\\server\\share", "\x00", "a\x00b.png", "x" * 300, "a/" * 150 + "b.png", "%00", "%2e%2e%2f",
         "..%2f..%2fx", "~", "$HOME", "\n", "a\r\nX-Injected: 1", "\ud800", "\udfff.png", "😀.png", "\u202egnp.exe",
         "NaN", "Infinity", "-1", "1e400", "99999999999999999999", "true", "null", "{}", "[]", "nul.png", "CON",
         "fuzz.png", "sub", "sub/fuzz.png", "input", "output", "temp", "workflows/a.json", "a.json",
         "../user/canary.json", "../../canary.txt", "../../../cwd/canary.txt", "queue.sqlite3", "../queue.sqlite3",
         "../server.lock", "txt2img.json", "index.json", "checkpoints", "nodegraph", "server_test_nodes"]
SEGMENTS = ["..", ".", "", "a", "fuzz.png", "sub", "\x00", "..\\..", "user", "default", "x" * 255, "canary.txt"]
RAW_NUMBERS = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e400"), Raw("1e-400"),
               Raw("123456789012345678901234567890"), Raw("-0")]


def hostile_text() -> st.SearchStrategy[str]:
    """Strings that have broken path handling and parsers before, plus random text."""
    return st.one_of(st.sampled_from(NASTY), st.text(max_size=20),
                     st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map("/".join),
                     st.integers(250, 5000).map(lambda n: "y" * n))


def _deep(n: int, kind: str) -> Raw:
    return Raw(("[" * n + "]" * n) if kind == "list" else ('{"a":' * n + "1" + "}" * n))


def hostile_json() -> st.SearchStrategy[Any]:
    """Any JSON-ish value: hostile scalars, non-finite numbers, small nested containers."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(RAW_NUMBERS),
                        hostile_text())
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(hostile_text(), c, max_size=4),
                        max_leaves=8)


def deep_json() -> st.SearchStrategy[Raw]:
    """Lists or objects nested past any sane depth (63 to 100,000 levels)."""
    return st.builds(_deep, st.sampled_from([63, 65, 900, 5000, 100_000]), st.sampled_from(["list", "dict"]))


def conforming(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a (small subset of) JSON Schema, each part sometimes replaced by a hostile value."""
    kind = schema.get("type")
    if "enum" in schema:
        base: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        base = st.fixed_dictionaries({k: conforming(v) for k, v in props.items() if k in required},
                                     optional={k: conforming(v) for k, v in props.items() if k not in required})
        if "additionalProperties" in schema:
            extra = st.dictionaries(hostile_text(), conforming(schema["additionalProperties"]), max_size=3)
            base = st.builds(lambda a, b: {**b, **a}, base, extra)
    elif kind == "array":
        base = st.lists(conforming(schema.get("items", {})), max_size=4)
    elif kind == "string":
        base = st.text(max_size=schema.get("maxLength", 40)) | hostile_text()
    elif kind == "integer":
        base = st.integers(-5, 1000) | st.integers()
    elif kind == "number":
        base = st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    elif kind == "boolean":
        base = st.booleans()
    else:
        return hostile_json()
    return st.one_of(base, base, base, hostile_json())


def dump_json(value: Any) -> bytes:
    """Serialise with Raw parts verbatim and lone surrogates as \\u escapes (what a hostile client sends)."""
    raws: list[str] = []

    def walk(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(str(v))
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    text = json.dumps(walk(value))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def spec_value(spec: Any, link: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values an input spec of the catalogue accepts (``link`` for inputs that take another node's output)."""
    kind, opts = (spec + [{}])[:2] if isinstance(spec, list) and spec else (spec, {})
    opts = opts if isinstance(opts, dict) else {}
    if kind == "COMBO":
        kind = opts.get("options") or []
    if isinstance(kind, list):
        return st.sampled_from(kind) if kind else st.just("")
    if kind == "INT":
        return st.integers(int(opts.get("min", -(2**63))), int(opts.get("max", 2**63)))
    if kind == "FLOAT":
        return st.floats(float(opts.get("min", -1e300)), float(opts.get("max", 1e300)))
    if kind == "STRING":
        return st.text(max_size=30) | hostile_text()
    if kind == "BOOLEAN":
        return st.booleans()
    return link


def node_inputs(entry: dict[str, Any], ids: list[str], cheap: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Inputs for one node of the catalogue: values from the input specs, links, or hostile values."""
    inputs = entry.get("input", {})
    specs = {**inputs.get("required", {}), **inputs.get("optional", {})}
    link = st.builds(lambda i, s: [i, s], st.sampled_from(ids) | hostile_text(), st.integers(-1, 3) | hostile_json())
    fields = {}
    for name, spec in specs.items():
        value = spec_value(spec, link)
        fields[name] = st.one_of(value, value, value, link, hostile_json(), deep_json())
    required = list(inputs.get("required", {}))

    def drop(values: dict[str, Any], dropped: int) -> dict[str, Any]:
        if not cheap and required:  # a heavy node never runs: it always misses a required input
            values.pop(required[dropped % len(required)], None)
        return values
    return st.builds(drop, st.fixed_dictionaries({}, optional=fields), st.integers(0, 20))


def runnable_graph(catalogue: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A cheap node with in-spec values (now and then one hostile value) shown by ShowValue: graphs that run."""
    sources = sorted(c for c in CHEAP_NODES if c in catalogue and c != "ShowValue")

    @st.composite
    def graph(draw: Callable[..., Any]) -> dict[str, Any]:
        cls = draw(st.sampled_from(sources))
        required = catalogue[cls].get("input", {}).get("required", {})
        inputs = {name: draw(spec_value(spec, st.just(["9", 0]))) for name, spec in required.items()}
        if inputs and draw(st.integers(0, 3)) == 0:
            inputs[draw(st.sampled_from(sorted(inputs)))] = draw(hostile_json())
        return {"1": {"class_type": cls, "inputs": inputs},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    return graph() if sources and "ShowValue" in catalogue else st.just({})


def prompt_graph(catalogue: dict[str, Any]) -> st.SearchStrategy[Any]:
    """API-format graphs of catalogue nodes (cheap ones may run), UI-format and malformed graphs."""
    classes = sorted(c for c, e in catalogue.items()
                     if c in CHEAP_NODES or (e.get("input", {}).get("required")))

    @st.composite
    def graph(draw: Callable[..., Any]) -> dict[str, Any]:
        n = draw(st.integers(1, 4))
        ids = [str(i + 1) for i in range(n)] if draw(st.booleans()) else draw(
            st.lists(hostile_text(), min_size=1, max_size=4, unique=True))
        out: dict[str, Any] = {}
        for node_id in ids:
            cls = draw(st.sampled_from(classes) | hostile_text()) if classes else draw(hostile_text())
            entry = catalogue.get(cls, {})
            node: dict[str, Any] = {"class_type": cls,
                                    "inputs": draw(node_inputs(entry, ids, cls in CHEAP_NODES))}
            if draw(st.integers(0, 9)) == 0:
                node = draw(st.dictionaries(st.sampled_from(["class_type", "inputs", "_meta"]), hostile_json()))
            out[node_id] = node
        return out
    ui = st.fixed_dictionaries({"nodes": st.lists(hostile_json() | st.integers(), max_size=4)},
                               optional={"links": hostile_json(), "version": hostile_json()})
    runnable = runnable_graph(catalogue)
    return st.one_of(runnable, runnable, graph(), graph(), ui, editor_graph(catalogue), hostile_json(), deep_json())


def editor_graph(catalogue: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Editor (UI-format) workflows: nodes with ids, types, modes, widget values and input links, and links."""
    classes = sorted(CHEAP_NODES & set(catalogue)) or ["PrimitiveInt"]
    small = st.integers(-2, 6)
    node = st.fixed_dictionaries(
        {"id": small | hostile_json(), "type": st.sampled_from(classes) | hostile_text()},
        optional={"mode": st.sampled_from([0, 2, 4]) | hostile_json(),
                  "widgets_values": st.lists(hostile_json() | st.integers(-5, 5), max_size=4) | hostile_json(),
                  "inputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["value", "a", "b", "text"])},
                                                           optional={"link": small | hostile_json(),
                                                                     "type": st.sampled_from(["INT", "*"])}),
                                     max_size=3),
                  "outputs": st.lists(st.fixed_dictionaries({"links": st.lists(small, max_size=2) | st.none()}),
                                      max_size=2)})
    link = st.lists(small | hostile_json(), min_size=0, max_size=7)
    return st.fixed_dictionaries({"nodes": st.lists(node, max_size=4), "links": st.lists(link, max_size=3)},
                                 optional={"version": st.sampled_from([0.4, 1]), "extra": hostile_json(),
                                           "definitions": hostile_json()})


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


def encode(value: str, slashes: bool = False) -> str:
    """Percent-encode a path segment or query value (lone surrogates as their UTF-8-like bytes), capped in length."""
    quoted = quote(value.encode("utf-8", "surrogatepass"), safe="/" if slashes else "")
    while len(quoted) > MAX_URL_PART:
        value = value[: len(value) // 2]
        quoted = quote(value.encode("utf-8", "surrogatepass"), safe="/" if slashes else "")
    return quoted


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
QUERY_EXAMPLES = {"filename": ["fuzz.png"], "subfolder": ["", "sub"], "type": ["input", "output", "temp"],
                  "preview": ["webp;90", "jpeg;50", "png", "webp;x", "gif"], "channel": ["rgb", "a", "rgba", "x"],
                  "dir": ["workflows", "", "sub", "."], "status": ["pending,completed", "failed", "bogus"],
                  "max_items": ["1", "0", "-1", "99999999999999999999"], "offset": ["0", "1", "-5"],
                  "limit": ["1", "0", "-1", "1000000"]}


def request_strategy(op: Operation, catalogue: dict[str, Any]) -> st.SearchStrategy[Req]:
    """Requests for one operation, generated from its parameters and request body."""
    params = op.spec.get("parameters", [])
    body_spec = op.spec.get("requestBody", {}).get("content", {})

    @st.composite
    def build(draw: Callable[..., Any]) -> Req:
        path = op.path
        for p in (p for p in params if p["in"] == "path"):
            slashes = p.get("x-nodegraph-pattern") == ".+"
            examples = PATH_EXAMPLES.get(p["name"], []) + (sorted(catalogue)[:5] if p["name"] == "node_class" else [])
            choice = draw(st.one_of(*(st.sampled_from(examples),) * bool(examples), hostile_text().map(
                lambda v, s=slashes: encode(v, s)), conforming(p["schema"]).map(lambda v: encode(scalar_text(v)))))
            path = path.replace("{" + p["name"] + "}", choice or "x")
        query = []
        for p in (p for p in params if p["in"] == "query"):
            if p.get("required") or draw(st.booleans()):
                examples = st.sampled_from(QUERY_EXAMPLES.get(p["name"], ["fuzz.png", "sub", "input"]))
                value = draw(st.one_of(examples, examples, conforming(p["schema"]), hostile_text()))
                query.append(f"{encode(p['name'])}={encode(scalar_text(value))}")
        for _ in range(draw(st.integers(0, 1))):
            query.append(f"{encode(draw(hostile_text()))}={encode(draw(hostile_text()))}")
        while query and len(path) + sum(len(q) + 1 for q in query) > MAX_TARGET:
            query.pop()
        headers: dict[str, str] = {}
        if draw(st.integers(0, 7)) == 0:  # the middlewares' inputs: Host, Origin, token carriers
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
    return build()

