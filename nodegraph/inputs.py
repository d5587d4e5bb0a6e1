"""Typed input and output declarations for nodes (pydantic v2), and how constants are coerced and checked."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

ANY = "*"
# Link types used by the built-in packs; plugins may add their own (any upper-case name works).
LINK_TYPES = ("MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "UPSCALE_MODEL", "INT", "FLOAT",
              "STRING", "BOOLEAN", ANY)

OptionsProvider = Callable[[Any], Sequence[str]]
#: The output type of a ComfyUI v3 MatchType node (its concrete type is that of the matched input).
MATCH_TYPE = "COMFY_MATCHTYPE_V3"


def types_compatible(output_type: str, input_type: str) -> bool:
    """True when a value of ``output_type`` may feed an input declared as ``input_type`` (``*`` matches anything)."""
    if output_type == ANY or input_type == ANY or output_type == input_type:
        return True
    if MATCH_TYPE in (output_type, input_type):  # ComfyUI's MatchType: the editor matches the concrete type
        return True
    # ComfyUI allows comma-separated unions such as "IMAGE,MASK".
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


class ConstantError(ValueError):
    """A constant input failed validation; ``kind`` is the ComfyUI error type."""

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details


class InputSpec(BaseModel):
    """Common fields of every input declaration."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: str
    optional: bool = False
    tooltip: str | None = None
    force_input: bool = False
    #: Lazy inputs are evaluated only when the node's ``check_lazy_status`` asks for them (ComfyUI's ``lazy``).
    lazy: bool = False

    @property
    def is_widget(self) -> bool:
        """Whether the input takes a constant in the editor (a widget) rather than only a link."""
        return not self.force_input

    def options(self, config: Any = None) -> dict[str, Any]:
        """The ``/object_info`` options dict for this input."""
        out: dict[str, Any] = {}
        if self.tooltip:
            out["tooltip"] = self.tooltip
        if self.force_input:
            out["forceInput"] = True
        if self.lazy:
            out["lazy"] = True
        return out

    def catalogue_entry(self, config: Any = None) -> list[Any]:
        """``[TYPE, options]`` as ComfyUI's ``/object_info`` lists it."""
        return [self.type, self.options(config)]

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        """JSON Schema of the constant this input accepts (links are described by the workflow schema)."""
        return {"description": self.tooltip or ""}

    def coerce(self, value: Any, config: Any = None) -> Any:
        """Validate and coerce a constant; raise ConstantError with a ComfyUI error type on failure."""
        raise ConstantError("invalid_input_type", f"{self.type} input only accepts a link from another node",
                            f"connect an output of type {self.type}")


class LinkInput(InputSpec):
    """An input fed only by another node's output (MODEL, LATENT, …)."""

    @property
    def is_widget(self) -> bool:
        return False


class _Scalar(InputSpec):
    """Base of constant inputs that pydantic coerces."""

    default: Any = None

    @cached_property
    def _adapter(self) -> TypeAdapter:
        return TypeAdapter(self._annotation())

    def _annotation(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        if self.default is not None:
            out["default"] = self.default
        return out

    def coerce(self, value: Any, config: Any = None) -> Any:
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            kind = {"greater_than_equal": "value_smaller_than_min", "less_than_equal": "value_bigger_than_max",
                    "literal_error": "value_not_in_list"}.get(err["type"], "invalid_input_type")
            bound = err.get("ctx") or {}
            fix = (f"use {bound['ge']} or more" if "ge" in bound else f"use {bound['le']} or less" if "le" in bound
                   else f"give a {self.type} value such as {self.default!r}")
            raise ConstantError(kind, f"{err['msg']} (got {value!r})", fix) from None


class IntInput(_Scalar):
    """An INT widget with default/min/max/step."""

    type: Literal["INT"] = "INT"
    default: int = 0
    min: int | None = None
    max: int | None = None
    #: None states no step (as ComfyUI's newer nodes; the editor then steps by 1).
    step: int | None = 1
    control_after_generate: bool = False

    def _annotation(self) -> Any:
        return Annotated[int, Field(ge=self.min, le=self.max)]

    def coerce(self, value: Any, config: Any = None) -> Any:
        if isinstance(value, bool):
            raise ConstantError("invalid_input_type", f"expected an integer, got the boolean {value!r}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super().coerce(value, config)

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        for key in ("min", "max"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.step is not None:
            out["step"] = self.step
        if self.control_after_generate:
            out["control_after_generate"] = True
        return out

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "default": self.default}
        if self.min is not None:
            schema["minimum"] = self.min
        if self.max is not None:
            schema["maximum"] = self.max
        return schema


class FloatInput(_Scalar):
    """A FLOAT widget with default/min/max/step/round."""

    type: Literal["FLOAT"] = "FLOAT"
    default: float = 0.0
    min: float | None = None
    max: float | None = None
    #: None states no step (as ComfyUI's newer nodes; the editor then picks its own).
    step: float | None = 0.01
    round: float | None = None

    def _annotation(self) -> Any:
        return Annotated[float, Field(ge=self.min, le=self.max)]

    def coerce(self, value: Any, config: Any = None) -> Any:
        if isinstance(value, bool):
            raise ConstantError("invalid_input_type", f"expected a number, got the boolean {value!r}")
        return super().coerce(value, config)

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        for key in ("min", "max", "round"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.step is not None:
            out["step"] = self.step
        return out

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number", "default": self.default}
        if self.min is not None:
            schema["minimum"] = self.min
        if self.max is not None:
            schema["maximum"] = self.max
        return schema


class StringInput(_Scalar):
    """A STRING widget, optionally multiline."""

    type: Literal["STRING"] = "STRING"
    default: str = ""
    multiline: bool = False
    placeholder: str | None = None
    dynamic_prompts: bool = False

    def _annotation(self) -> Any:
        return str

    def coerce(self, value: Any, config: Any = None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        return super().coerce(value, config)

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        if self.multiline:
            out["multiline"] = True
            out["dynamicPrompts"] = self.dynamic_prompts
        if self.placeholder:
            out["placeholder"] = self.placeholder
        return out

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        return {"type": "string", "default": self.default}


class BooleanInput(_Scalar):
    """A BOOLEAN toggle."""

    type: Literal["BOOLEAN"] = "BOOLEAN"
    default: bool = False
    label_on: str | None = None
    label_off: str | None = None

    def _annotation(self) -> Any:
        return bool

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        if self.label_on:
            out["label_on"] = self.label_on
        if self.label_off:
            out["label_off"] = self.label_off
        return out

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        return {"type": "boolean", "default": self.default}


class ComboInput(InputSpec):
    """A choice among options; ``options`` is a list or a callable ``(config) -> list`` computed when asked."""

    type: Literal["COMBO"] = "COMBO"
    choices: tuple[str, ...] | OptionsProvider = ()
    default: str | None = None
    image_upload: bool = False
    #: Further options for the editor, passed through to ``/object_info`` (e.g. ``image_folder``, ``remote``).
    widget_options: Mapping[str, Any] = Field(default_factory=dict)

    def values(self, config: Any = None) -> list[str]:
        """The current options (calls the provider for computed combos)."""
        return list(self.choices(config)) if callable(self.choices) else list(self.choices)

    def catalogue_entry(self, config: Any = None) -> list[Any]:
        opts = self.options(config)
        values = self.values(config)
        if self.default is not None and self.default in values:
            opts["default"] = self.default
        if self.image_upload:
            opts["image_upload"] = True
        opts.update(self.widget_options)
        return [values, opts]

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        return {"type": "string", "enum": self.values(config)}

    def coerce(self, value: Any, config: Any = None) -> Any:
        values = self.values(config)
        if not isinstance(value, str) or value not in values:
            shown = ", ".join(values[:12]) + (" …" if len(values) > 12 else "")
            raise ConstantError("value_not_in_list", f"{value!r} is not among the options",
                                f"choose one of: {shown}" if values else "there are no options (is the folder empty?)")
        return value


class Output(BaseModel):
    """One output slot of a node."""

    model_config = ConfigDict(frozen=True)

    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False

    def __init__(self, type: str, name: str | None = None, tooltip: str | None = None, is_list: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(type=type, name=name, tooltip=tooltip, is_list=is_list, **kwargs)

    @property
    def display_name(self) -> str:
        """Name shown on the slot (defaults to the type)."""
        return self.name or self.type


# Short constructors, so node declarations read like a catalogue page.
def Link(type: str, *, optional: bool = False, tooltip: str | None = None, lazy: bool = False) -> LinkInput:
    """An input fed by another node's output of ``type``; ``lazy`` ones run only when ``check_lazy_status`` asks."""
    return LinkInput(type=type, optional=optional, tooltip=tooltip, lazy=lazy)


def Int(default: int = 0, *, min: int | None = None, max: int | None = None, step: int | None = 1,
        optional: bool = False, tooltip: str | None = None, control_after_generate: bool = False,
        force_input: bool = False) -> IntInput:
    """An INT constant."""
    return IntInput(default=default, min=min, max=max, step=step, optional=optional, tooltip=tooltip,
                    control_after_generate=control_after_generate, force_input=force_input)


def Float(default: float = 0.0, *, min: float | None = None, max: float | None = None, step: float | None = 0.01,
          round: float | None = None, optional: bool = False, tooltip: str | None = None,
          force_input: bool = False) -> FloatInput:
    """A FLOAT constant."""
    return FloatInput(default=default, min=min, max=max, step=step, round=round, optional=optional, tooltip=tooltip,
                      force_input=force_input)


def String(default: str = "", *, multiline: bool = False, optional: bool = False, tooltip: str | None = None,
           placeholder: str | None = None, dynamic_prompts: bool = False, force_input: bool = False) -> StringInput:
    """A STRING constant."""
    return StringInput(default=default, multiline=multiline, optional=optional, tooltip=tooltip,
                       placeholder=placeholder, dynamic_prompts=dynamic_prompts, force_input=force_input)


def Boolean(default: bool = False, *, optional: bool = False, tooltip: str | None = None,
            label_on: str | None = None, label_off: str | None = None) -> BooleanInput:
    """A BOOLEAN constant."""
    return BooleanInput(default=default, optional=optional, tooltip=tooltip, label_on=label_on, label_off=label_off)


def Combo(choices: Sequence[str] | OptionsProvider, *, default: str | None = None, optional: bool = False,
          tooltip: str | None = None, image_upload: bool = False,
          widget_options: Mapping[str, Any] | None = None) -> ComboInput:
    """A COMBO: fixed options, or a callable ``(config) -> options`` evaluated when asked; ``widget_options`` are
    further editor options listed in ``/object_info`` as given (e.g. ``{"image_folder": "output"}``)."""
    return ComboInput(choices=choices if callable(choices) else tuple(choices), default=default, optional=optional,
                      tooltip=tooltip, image_upload=image_upload, widget_options=dict(widget_options or {}))
