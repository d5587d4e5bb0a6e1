"""Extra ``/object_info`` options on an input declaration (ComfyUI's newer editor hints: ``advanced``,
``socketless``, ``display_name``, ``control_after_generate: "fixed"``), without a new input class per hint."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .inputs import InputSpec

_SUBCLASSES: dict[type, type] = {}


class _ExtraOptions(InputSpec):
    """Mixin: options added to, or dropped from, the base declaration's catalogue entry."""

    extra_add: dict[str, Any] = {}
    extra_drop: tuple[str, ...] = ()

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        for key in self.extra_drop:
            out.pop(key, None)
        out.update(self.extra_add)
        return out


def with_options(spec: InputSpec, add: Mapping[str, Any] | None = None, drop: Sequence[str] = ()) -> InputSpec:
    """A copy of ``spec`` whose catalogue entry also lists ``add`` and omits ``drop`` (validation is unchanged)."""
    base = type(spec)
    sub = _SUBCLASSES.get(base)
    if sub is None:
        sub = _SUBCLASSES[base] = type(f"{base.__name__}WithOptions", (_ExtraOptions, base), {"__module__": __name__})
    fields = {name: getattr(spec, name) for name in type(spec).model_fields}
    fields.update(extra_add=dict(add or {}), extra_drop=tuple(drop))
    return sub(**fields)


def advanced(spec: InputSpec) -> InputSpec:
    """The input shown in the editor's collapsed "advanced" section (ComfyUI's ``advanced=True``)."""
    return with_options(spec, {"advanced": True})


class DisplayWidgetInput(InputSpec):
    """A widget the editor draws and the node ignores (ComfyUI's IMAGECOMPARE): any value, or none, is accepted."""

    default: Any = None
    extra: dict[str, Any] = {}

    def options(self, config: Any = None) -> dict[str, Any]:
        return {**super().options(config), **self.extra}

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        return {"description": self.tooltip or "display only; the node ignores the value"}

    def coerce(self, value: Any, config: Any = None) -> Any:
        return value


def DisplayWidget(type: str, default: Any = None, **options: Any) -> DisplayWidgetInput:
    """A display-only widget of ``type`` listed with ``options`` (``socketless=True``, …); its ``default`` is what
    an editor workflow that saved no value for it gets."""
    return DisplayWidgetInput(type=type, default=default, extra=dict(options))
