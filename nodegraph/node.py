"""The node contract: a class declaring typed inputs/outputs and metadata, with an ``execute`` method."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .inputs import ComboInput, InputSpec, Output

if TYPE_CHECKING:
    from .context import ExecutionContext

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.-]+)?$")


@dataclass
class NodeOutput:
    """What ``execute`` may return instead of a bare tuple: the output values plus a UI payload (images, text)."""

    values: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None
    #: A subgraph (API format) to splice in and run; ``values`` then hold ``[node_id, output_index]`` references
    #: into it (or plain values), ComfyUI's ``{"result": ..., "expand": graph}``.
    expand: dict[str, Any] | None = None


class NodeMeta(BaseModel):
    """Validated metadata of a node class (built by the registry from the class attributes)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-. ]*$")
    display_name: str
    category: str
    description: str = ""
    version: str
    output_node: bool = False
    deterministic: bool = True
    inputs: dict[str, InputSpec]
    outputs: tuple[Output, ...]
    python_module: str = "nodes"
    deprecated: bool = False

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"version {value!r} is not semver (MAJOR.MINOR.PATCH, e.g. '1.0.0')")
        return value

    @property
    def major(self) -> int:
        """The semver major version."""
        return int(self.version.split(".", 1)[0])


class Node:
    """Base class of every node.

    Subclasses set the class attributes below and implement ``execute(self, ctx, **inputs)`` returning a tuple of
    output values (or a ``NodeOutput`` when they also have a UI payload). The docstring's first paragraph is the
    description shown in the catalogue.
    """

    #: Catalogue name (ComfyUI's class_type); defaults to the class name.
    NAME: ClassVar[str | None] = None
    DISPLAY_NAME: ClassVar[str | None] = None
    CATEGORY: ClassVar[str] = "utils"
    VERSION: ClassVar[str] = "1.0.0"
    #: Output nodes (SaveImage, …) are what a run executes; everything else runs because an output needs it.
    OUTPUT_NODE: ClassVar[bool] = False
    #: Non-deterministic nodes are never cached (and neither is anything downstream of them).
    DETERMINISTIC: ClassVar[bool] = True
    INPUTS: ClassVar[Mapping[str, InputSpec]] = {}
    OUTPUTS: ClassVar[tuple[Output, ...]] = ()
    #: Take whole lists: every input arrives as a list (ComfyUI's INPUT_IS_LIST) and the node runs once.
    INPUT_IS_LIST: ClassVar[bool] = False

    def execute(self, ctx: ExecutionContext, **inputs: Any) -> tuple[Any, ...] | NodeOutput:
        """Do the node's work; inputs arrive as keyword arguments (optional ones only when given)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def check_lazy_status(self, ctx: ExecutionContext, **available: Any) -> list[str]:
        """Names of lazy inputs still needed given the values so far (unevaluated ones are ``None``); default all."""
        return [name for name, spec in self.INPUTS.items() if spec.lazy and available.get(name) is None]

    @classmethod
    def fingerprint(cls, config: Any, **constants: Any) -> Any:
        """Extra cache-key material beyond the inputs (e.g. a file's mtime); ``None`` when the inputs say it all."""
        return None

    @classmethod
    def model_files(cls, config: Any, **constants: Any) -> list[str]:
        """Paths of the model files this node reads with these constants (hashed into provenance manifests)."""
        return []

    @classmethod
    def validate_inputs(cls, config: Any, **constants: Any) -> list[tuple[str, str]]:
        """Custom checks across constants; return ``(input_name, message)`` pairs, empty when all is well."""
        return []

    @classmethod
    def migrate(cls, from_version: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Turn inputs saved by an older major version into current ones; ``None`` when it cannot."""
        return None


def describe(cls: type[Node], module: str | None = None) -> NodeMeta:
    """Build and validate the metadata of a node class; raises ``TypeError``/``ValueError`` naming the problem."""
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise TypeError(f"{cls!r} is not a nodegraph.Node subclass")
    if cls.execute is Node.execute:
        raise TypeError(f"{cls.__name__} does not implement execute()")
    doc = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
    name = cls.NAME or cls.__name__
    check_signature(cls, name)
    return NodeMeta(
        name=name,
        display_name=cls.DISPLAY_NAME or name,
        category=cls.CATEGORY,
        description=" ".join(doc.split()),
        version=cls.VERSION,
        output_node=cls.OUTPUT_NODE,
        deterministic=cls.DETERMINISTIC,
        inputs=dict(cls.INPUTS),
        outputs=tuple(cls.OUTPUTS),
        python_module=module or cls.__module__,
    )


def check_signature(cls: type[Node], name: str | None = None) -> None:
    """Raise ``TypeError`` when ``execute``'s parameters do not match ``INPUTS`` (naming what to change)."""
    name = name or cls.NAME or cls.__name__
    try:
        params = list(inspect.signature(cls.execute).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise TypeError(f"node {name}: execute must take (self, ctx, ...); declare it as "
                        f"def execute(self, ctx, {', '.join(cls.INPUTS) or '...'})")
    named = {p.name: p for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    inputs = dict(cls.INPUTS)
    missing = [n for n in inputs if n not in named and not takes_any]
    extra = [n for n, p in named.items() if n not in inputs and p.default is p.empty]
    no_default = [n for n, spec in inputs.items()
                  if spec.optional and n in named and named[n].default is named[n].empty]
    problems = []
    if missing:
        problems.append(f"INPUTS declares {', '.join(map(repr, missing))} but execute has no such parameter "
                        f"(add {', '.join(missing)} to execute, or accept **inputs)")
    if extra:
        problems.append(f"execute requires {', '.join(map(repr, extra))}, which INPUTS does not declare "
                        f"(declare them in INPUTS, give them defaults, or remove them)")
    if no_default:
        problems.append(f"optional input(s) {', '.join(map(repr, no_default))} are only passed when connected "
                        f"or set; give {'them' if len(no_default) > 1 else 'it'} a default in execute "
                        f"(e.g. {no_default[0]}=None)")
    if problems:
        raise TypeError(f"node {name}: execute's signature does not match INPUTS: " + "; ".join(problems))


@dataclass
class NodeDef:
    """A registered node: its class, validated metadata and the plugin that provided it."""

    cls: type[Node]
    meta: NodeMeta
    plugin: str
    plugin_version: str | None = None
    _widget_names: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The catalogue name (class_type)."""
        return self.meta.name

    def catalogue_entry(self, config: Any = None) -> dict[str, Any]:
        """The entry in the exact shape of ComfyUI's ``GET /object_info``."""
        required: dict[str, Any] = {}
        optional: dict[str, Any] = {}
        for name, spec in self.meta.inputs.items():
            (optional if spec.optional else required)[name] = spec.catalogue_entry(config)
        input_order: dict[str, list[str]] = {"required": list(required)}
        inputs: dict[str, Any] = {"required": required}
        if optional:
            inputs["optional"] = optional
            input_order["optional"] = list(optional)
        outs = self.meta.outputs
        return {
            "input": inputs,
            "input_order": input_order,
            "output": [o.type for o in outs],
            "output_is_list": [o.is_list for o in outs],
            "output_name": [o.display_name for o in outs],
            "output_tooltips": [o.tooltip or "" for o in outs],
            "name": self.meta.name,
            "display_name": self.meta.display_name,
            "description": self.meta.description,
            "python_module": self.meta.python_module,
            "category": self.meta.category,
            "output_node": self.meta.output_node,
            "deprecated": self.meta.deprecated,
            "experimental": False,
            "version": self.meta.version,
        }

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        """A JSON Schema for this node in an API-format workflow (constants typed, links as [id, index])."""
        link = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                "minItems": 2, "maxItems": 2}
        props: dict[str, Any] = {}
        required: list[str] = []
        for name, spec in self.meta.inputs.items():
            if spec.type == "COMFY_AUTOGROW_V3":  # its grown inputs (images.image0, …) are links
                continue
            if spec.is_widget:
                props[name] = {"anyOf": [spec.json_schema(config), link]}
            else:
                props[name] = dict(link, description=f"link to a {spec.type} output")
            if not spec.optional:
                required.append(name)
        return {
            "title": self.meta.display_name,
            "description": self.meta.description,
            "type": "object",
            "properties": {
                "class_type": {"const": self.meta.name},
                "inputs": {"type": "object", "properties": props, "required": required},
                "_meta": {"type": "object"},
            },
            "required": ["class_type", "inputs"],
        }

    @cached_property
    def exec_traits(self) -> Any:
        """What the executor needs beyond inputs and outputs (list and lazy traits), computed once."""
        from .execution_lists import traits_of
        return traits_of(self)

    @property
    def widget_names(self) -> tuple[str, ...]:
        """Names of inputs that take constants, in declaration order (the editor's widget order)."""
        if self._widget_names is None:
            self._widget_names = tuple(n for n, s in self.meta.inputs.items() if s.is_widget)
        return self._widget_names

    def combo_inputs(self) -> dict[str, ComboInput]:
        """The COMBO inputs of the node."""
        return {n: s for n, s in self.meta.inputs.items() if isinstance(s, ComboInput)}
