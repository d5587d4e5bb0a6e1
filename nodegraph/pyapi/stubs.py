"""Type stubs of the installed catalogue: ``nodegraph stubs`` writes ``typings/nodegraph_catalogue.pyi``.

``Graph`` derives from the stub's ``NodeMethods`` when a type checker finds the module (pyright and Pylance look in
``typings/`` by default; for mypy set ``mypy_path = typings``), so editors complete node names, inputs and combo
options, and a CLIP wired into a MODEL input is a type error. Without the stub every node call is ``Any``.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .catalogue import Catalogue, combo_options, input_specs
from .dynamic import AUTOGROW, DYNAMIC_COMBO, MATCH_TYPE
from .dynamic import template_spec as autogrow_template

#: The module name ``Graph`` imports under TYPE_CHECKING; the file written is ``<name>.pyi``.
STUB_MODULE = "nodegraph_catalogue"
#: Where ``nodegraph stubs`` writes by default (pyright's default ``stubPath``).
DEFAULT_DIR = Path("typings")
_RESERVED = {"Any", "Literal", "Path", "Image", "Output", "NodeHandle", "Upload", "NodeMethods", "Graph", "self"}
_SCALARS = {"INT": "int", "FLOAT": "float", "STRING": "str", "BOOLEAN": "bool"}


def _ident(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


class _Types:
    """Link type names → stub class names (``MODEL``), declared once each in the stub."""

    def __init__(self, supertypes: Mapping[str, set[str]]) -> None:
        self.names: dict[str, str] = {}
        self.supertypes = supertypes

    def cls(self, link_type: str) -> str:
        if link_type == "*":
            return "Output"
        if link_type not in self.names:
            base = link_type if _ident(link_type) and link_type not in _RESERVED else \
                "T_" + "".join(c if c.isalnum() else "_" for c in link_type)
            self.names[link_type] = base
            for parent in sorted(self.supertypes.get(link_type, ())):
                self.cls(parent)
        return self.names[link_type]

    def accepts(self, declared: str) -> str:
        """The annotation of an input declared as ``declared`` (``IMAGE,MASK`` unions; ``*`` any handle)."""
        return " | ".join(self.cls(t) for t in declared.split(",")) if declared != "*" else "Output"

    def declarations(self) -> list[str]:
        out = []
        for link_type, name in sorted(self.names.items(), key=lambda kv: kv[1]):
            parents = [self.names[p] for p in sorted(self.supertypes.get(link_type, ())) if p in self.names]
            out.append(f"class {name}({', '.join(parents) or 'Output'}):\n    \"\"\"A {link_type} output.\"\"\"\n")
        return out


def _annotation(types: _Types, kind: Any, opts: Mapping[str, Any]) -> str:
    if kind == AUTOGROW:  # nested: {name: value}, [values] or one value; dotted names go through **dotted
        item = _annotation(types, *autogrow_template(opts))
        return f"Mapping[str, {item}] | list[{item}] | {item}"
    if kind == DYNAMIC_COMBO:
        keys = [o.get("key") for o in opts.get("options") or ()]
        return f"Literal[{', '.join(repr(k) for k in keys)}] | Mapping[str, Any]" if keys else "Mapping[str, Any]"
    if kind == MATCH_TYPE:
        return types.accepts(str((opts.get("template") or {}).get("allowed_types", "*")))
    options = combo_options(kind, opts)
    if options is not None:
        literal = f"Literal[{', '.join(repr(o) for o in options)}]" if options else "str"
        return f"{literal} | str | Path | Upload | Image" if opts.get("image_upload") else literal
    if kind in _SCALARS:
        return f"{_SCALARS[kind]} | {types.cls(kind)}"
    return types.accepts(str(kind))


def _returns(types: _Types, entry: Mapping[str, Any]) -> str:
    outs = [str(t) for t in entry.get("output", [])]
    if not outs:
        return "NodeHandle"
    names = ["Any" if t == "*" else types.cls(t) for t in outs]
    return names[0] if len(names) == 1 else f"tuple[{', '.join(names)}]"


def _method(types: _Types, name: str, entry: Mapping[str, Any]) -> str:
    specs = input_specs(entry)
    params: list[str] = []
    # A node with dynamic inputs also takes the API's dotted names (**{"images.image0": image}): its dynamic
    # inputs may then be left out, and _id/_title are typed loosely so a dict of handles unpacks cleanly.
    dynamic = any(s[0] in (AUTOGROW, DYNAMIC_COMBO) for s in specs.values())
    if all(_ident(n) and n not in ("self", "_id", "_title") for n in specs):
        required = [(n, s) for n, s in specs.items() if s[2] and not _has_default(s)
                    and not (dynamic and s[0] == AUTOGROW)]
        rest = [(n, s) for n, s in specs.items() if (n, s) not in required]
        params += [f"{n}: {_annotation(types, s[0], s[1])}" for n, s in required]
        params += [f"{n}: {_annotation(types, s[0], s[1])} = ..." for n, s in rest]
        params += ["_id: Any = ...", "_title: Any = ...", "**dotted: Any"] if dynamic else \
            ["_id: str | None = ...", "_title: str | None = ..."]
    else:
        params.append("**inputs: Any")
    doc = " ".join(str(entry.get("description") or entry.get("display_name") or name).split()).replace('"""', "'")
    signature = ", ".join(["self", "*", *params]) if "**inputs: Any" not in params else f"self, {params[0]}"
    return (f"    def {name}({signature}) -> {_returns(types, entry)}:\n"
            f"        \"\"\"{doc or name}\"\"\"\n")


def _has_default(spec: tuple[Any, dict[str, Any], bool]) -> bool:
    kind, opts, _ = spec
    options = combo_options(kind, opts)
    if options is not None or kind == DYNAMIC_COMBO:  # a DynamicCombo defaults to its first option
        return bool(options) or kind == DYNAMIC_COMBO
    return opts.get("default") is not None


def render(catalogue: Catalogue, supertypes: Mapping[str, set[str]] | None = None) -> str:
    """The text of ``nodegraph_catalogue.pyi`` for ``catalogue``."""
    types = _Types(supertypes or {})
    methods = []
    skipped = []
    for name in catalogue.names:
        entry = catalogue.entry(name)
        if entry is None:
            continue
        if not _ident(name) or name in _RESERVED or name.startswith("_"):
            skipped.append(name)
            continue
        methods.append(_method(types, name, entry))
    head = [('"""Node methods of nodegraph.Graph for this installation (generated by `nodegraph stubs`; rerun it '
             'after adding plugins or models)."""\n'),
            ("from collections.abc import Mapping\nfrom pathlib import Path\nfrom typing import Any, Literal\n\n"
             "from PIL.Image import Image\n\n"
             "from nodegraph.pyapi.graph import NodeHandle, Output, Upload\n")]
    if skipped:
        head.append(f"# not valid method names (use g.node(NAME, ...)): {', '.join(skipped)}\n")
    body = ["\nclass NodeMethods:\n"
            "    \"\"\"One method per node class; keyword inputs; returns output handles.\"\"\"\n\n"
            + "\n".join(methods)]
    return "\n".join(head) + "\n\n" + "\n\n".join(types.declarations()) + "\n" + "".join(body)


def write_stubs(engine: Any, output: Path | None = None) -> Path:
    """Write the stub for ``engine``'s catalogue (plugins included); ``output`` is a folder or a .pyi path."""
    target = Path(output) if output is not None else DEFAULT_DIR
    if target.suffix != ".pyi":
        target = target / f"{STUB_MODULE}.pyi"
    target.parent.mkdir(parents=True, exist_ok=True)
    types = engine.registry.types
    supertypes = {name: types.supertypes(name) for name in types.descriptions()}
    target.write_text(render(Catalogue.from_engine(engine), supertypes), encoding="utf-8")
    return target
