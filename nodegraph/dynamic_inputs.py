"""Dynamic inputs (ComfyUI's v3 ``Autogrow`` and ``DynamicCombo``): input groups that grow as the user connects,
and combos whose chosen option brings its own inputs.

In an API prompt the grown and selected inputs have dotted names, as ComfyUI v0.8.0 writes them: an ``Autogrow``
named ``images`` with prefix ``image`` takes ``images.image0``, ``images.image1``, …; a ``DynamicCombo`` named
``resize_type`` takes its choice under ``resize_type`` and the chosen option's inputs under ``resize_type.width``
etc. Validation checks each of them like an ordinary input (``expand``); ``execute`` receives them nested
(``nest``): ``images={"image0": v, "image1": v}`` and ``resize_type={"resize_type": choice, "width": 512, …}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from .inputs import ComboInput, ConstantError, InputSpec, LinkInput

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
#: ComfyUI's cap on the names of one input group.
MAX_NAMES = 100

#: ``report(kind, message, fix, input_name, received)``: how ``expand`` hands over a problem it finds.
Report = Callable[[str, str, str, str, Any], None]


def v3_entry(name: str, spec: InputSpec, config: Any = None) -> tuple[str, list[Any]]:
    """(group, entry) of an input nested in a dynamic one, spelled as ComfyUI's v3 schema writes it (a combo is
    ``["COMBO", {"multiselect": false, "options": [...]}]``)."""
    entry = spec.catalogue_entry(config)
    if isinstance(spec, ComboInput):
        opts = dict(entry[1])
        entry = ["COMBO", {**opts, "multiselect": False, "options": list(entry[0])}]
    return ("optional" if spec.optional else "required"), entry


def v1_dict(inputs: Mapping[str, InputSpec], config: Any = None) -> dict[str, Any]:
    """ComfyUI's ``create_input_dict_v1`` of nested inputs: ``{"required": {...}, "optional": {...}}``."""
    out: dict[str, Any] = {"required": {}}
    for name, spec in inputs.items():
        group, entry = v3_entry(name, spec, config)
        out.setdefault(group, {})[name] = entry
    return out


class AutogrowInput(InputSpec):
    """A group of link inputs that grows as the user connects (ComfyUI's ``io.Autogrow``)."""

    type: Literal["COMFY_AUTOGROW_V3"] = "COMFY_AUTOGROW_V3"
    template: InputSpec
    template_name: str
    prefix: str | None = None
    names: tuple[str, ...] = ()
    min: int = 1
    max: int = 10
    #: Report fewer than ``min`` connected as an error (ComfyUI's server accepts fewer: the editor saves
    #: templates with fewer connected, so by default only a required group with nothing connected is an error).
    strict_min: bool = False

    @property
    def is_widget(self) -> bool:
        return False

    def slot_names(self) -> list[str]:
        """The names the group may grow to, in order (``image0`` … ``image49``)."""
        return [f"{self.prefix}{i}" for i in range(self.max)] if self.prefix is not None else list(self.names)

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        template: dict[str, Any] = {"input": v1_dict({self.template_name: self.template}, config)}
        if self.prefix is not None:
            template.update(prefix=self.prefix, min=self.min, max=self.max)
        else:
            template.update(names=list(self.names), min=self.min)
        out["template"] = template
        return out

    def coerce(self, value: Any, config: Any = None) -> Any:
        raise ConstantError("invalid_input_type", "an input group takes links on its grown inputs, not a value",
                            f"connect {self.template.type} outputs to the group's inputs "
                            f"({', '.join(self.slot_names()[:2])}, …)")


class DynamicComboInput(InputSpec):
    """A combo whose chosen option brings its own inputs (ComfyUI's ``io.DynamicCombo``)."""

    type: Literal["COMFY_DYNAMICCOMBO_V3"] = "COMFY_DYNAMICCOMBO_V3"
    choices: tuple[tuple[str, Mapping[str, InputSpec]], ...] = ()
    default: str | None = None

    def option_keys(self) -> list[str]:
        """The option names, in order."""
        return [key for key, _ in self.choices]

    def inputs_of(self, key: str) -> Mapping[str, InputSpec]:
        """The inputs the option ``key`` brings."""
        return dict(self.choices).get(key, {})

    def options(self, config: Any = None) -> dict[str, Any]:
        out = super().options(config)
        out["options"] = [{"key": key, "inputs": v1_dict(inputs, config)} for key, inputs in self.choices]
        return out

    def json_schema(self, config: Any = None) -> dict[str, Any]:
        return {"type": "string", "enum": self.option_keys()}

    def coerce(self, value: Any, config: Any = None) -> Any:
        keys = self.option_keys()
        if not isinstance(value, str) or value not in keys:
            raise ConstantError("value_not_in_list", f"{value!r} is not among the options",
                                f"choose one of: {', '.join(keys)}")
        return value


class MatchTypeInput(LinkInput):
    """A link whose type the editor matches to the node's output (ComfyUI's ``io.MatchType``); ``type`` lists the
    allowed types, as ``"IMAGE,MASK"``."""

    template_id: str = "T"

    def catalogue_entry(self, config: Any = None) -> list[Any]:
        return [MATCH_TYPE, {**self.options(config),
                             "template": {"template_id": self.template_id, "allowed_types": self.type}}]


class FreeComboInput(ComboInput):
    """A combo whose options the editor defines (ComfyUI's CustomCombo): any text is accepted."""

    def coerce(self, value: Any, config: Any = None) -> Any:
        if not isinstance(value, str):
            raise ConstantError("invalid_input_type", f"expected the chosen text, got {value!r}",
                                "choose one of the options you wrote on the node")
        return value


def Autogrow(template: InputSpec, *, prefix: str | None = None, names: tuple[str, ...] | list[str] = (),
             min: int = 1, max: int = 10, template_name: str | None = None, optional: bool = False,
             tooltip: str | None = None, strict_min: bool = False) -> AutogrowInput:
    """A group of inputs that grows as the user connects: ``Autogrow(Link("IMAGE"), prefix="image", min=2,
    max=50)`` takes ``image0`` … ``image49`` (or the given ``names``); ``execute`` gets ``{name: value}``."""
    if isinstance(template, (AutogrowInput, DynamicComboInput)):
        raise TypeError("an Autogrow template cannot be a dynamic input; use Link(...), Int(...), …")
    if (prefix is None) == (not names):
        raise ValueError("give Autogrow either prefix= (names prefix0, prefix1, …) or names=[...]")
    if not 0 <= min or not 1 <= max <= MAX_NAMES:
        raise ValueError(f"Autogrow needs min >= 0 and 1 <= max <= {MAX_NAMES}")
    if template.is_widget:  # grown inputs are sockets (ComfyUI forces forceInput on a widget template)
        template = template.model_copy(update={"force_input": True})
    return AutogrowInput(template=template, template_name=template_name or prefix or "input", prefix=prefix,
                         names=tuple(names)[:MAX_NAMES], min=min, max=max, optional=optional, tooltip=tooltip,
                         strict_min=strict_min)


def DynamicCombo(options: Mapping[str, Mapping[str, InputSpec]], *, default: str | None = None,
                 optional: bool = False, tooltip: str | None = None) -> DynamicComboInput:
    """A combo whose chosen option brings its inputs: ``DynamicCombo({"scale width": {"width": Int(512)}, …})``;
    ``execute`` gets ``{<combo name>: choice, **the option's values}``."""
    for key, inputs in options.items():
        if any(isinstance(s, (AutogrowInput, DynamicComboInput)) for s in inputs.values()):
            raise TypeError(f"DynamicCombo option {key!r}: nested dynamic inputs are not supported")
    keys = [str(k) for k in options]
    if not keys or (default is not None and default not in keys):
        raise ValueError(f"DynamicCombo needs at least one option, and a default among them (got {default!r})")
    return DynamicComboInput(choices=tuple((str(k), dict(v)) for k, v in options.items()), default=default or keys[0],
                             optional=optional, tooltip=tooltip)


def MatchType(allowed: str = "*", *, template_id: str = "T", optional: bool = False, tooltip: str | None = None,
              lazy: bool = False) -> MatchTypeInput:
    """A link of any of the ``allowed`` types (``"IMAGE,MASK"``) whose output has the same type (ComfyUI's
    MatchType; pair it with ``Output(MATCH_TYPE)``)."""
    return MatchTypeInput(type=allowed, template_id=template_id, optional=optional, tooltip=tooltip, lazy=lazy)


def is_dynamic(spec: Any) -> bool:
    """Whether an input declaration is an Autogrow or a DynamicCombo."""
    return isinstance(spec, (AutogrowInput, DynamicComboInput))


def has_dynamic(inputs: Mapping[str, Any]) -> bool:
    """Whether any declared input is dynamic."""
    return any(is_dynamic(s) for s in inputs.values())


def expand(inputs: Mapping[str, InputSpec], given: Mapping[str, Any], report: Report) -> dict[str, InputSpec]:
    """The inputs a node has with these prompt inputs (dotted names for grown and selected ones), ComfyUI's
    ``get_finalized_class_inputs``; problems no single input's check sees go to ``report``."""
    out: dict[str, InputSpec] = {}
    for name, spec in inputs.items():
        if isinstance(spec, AutogrowInput):
            out.update(_grow(name, spec, given, report))
        elif isinstance(spec, DynamicComboInput):
            out[name] = spec
            choice = given.get(name)
            if isinstance(choice, list) and choice:
                report("invalid_input_type", f"input '{name}' chooses which inputs the node has, so it cannot be "
                       "linked", f"set '{name}' to one of: {', '.join(spec.option_keys())}", name, choice)
            elif isinstance(choice, str) and choice in spec.option_keys():
                out.update({f"{name}.{sub}": s for sub, s in spec.inputs_of(choice).items()})
        else:
            out[name] = spec
    return out


def _grow(name: str, spec: AutogrowInput, given: Mapping[str, Any], report: Report) -> dict[str, InputSpec]:
    slots = spec.slot_names()
    present = [s for s in slots if given.get(f"{name}.{s}") is not None]
    known = {f"{name}.{s}" for s in slots}
    for key in given:
        if key.startswith(name + ".") and key not in known:
            report("invalid_input", f"input '{key}' is not one of the group's inputs "
                   f"({name}.{slots[0]} … {name}.{slots[-1]}, at most {len(slots)})",
                   f"connect it to one of {name}.{slots[0]} … {name}.{slots[-1]}, or remove it", key, given[key])
    needed = spec.min if spec.strict_min else min(spec.min, 1)
    if len(present) < needed and not spec.optional:
        first = ", ".join(f"{name}.{s}" for s in slots[:max(needed, 1)])
        report("required_input_missing",
               f"input group '{name}' has {len(present)} {spec.template.type} input(s) connected; it needs at "
               f"least {needed}", f"connect {spec.template.type} outputs to {first}", name, None)
    return {f"{name}.{s}": spec.template for s in present}


def nest(inputs: Mapping[str, InputSpec], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn the flat dotted values into what ``execute`` takes: ``{group: {name: value}}`` for an Autogrow,
    ``{combo: {combo: choice, **option values}}`` for a DynamicCombo (ComfyUI's ``build_nested_inputs``)."""
    if not has_dynamic(inputs):
        return kwargs
    out = dict(kwargs)
    for name, spec in inputs.items():
        if isinstance(spec, AutogrowInput):
            group = {s: out.pop(f"{name}.{s}") for s in spec.slot_names() if f"{name}.{s}" in out}
            if group or not spec.optional:
                out[name] = group
        elif isinstance(spec, DynamicComboInput) and name in out:
            choice = out.pop(name)
            values = {sub: out.pop(f"{name}.{sub}") for sub in spec.inputs_of(choice) if f"{name}.{sub}" in out}
            out[name] = {name: choice, **values}
    return out


def widget_slots_of(name: str, spec: Any, value: Any) -> list[tuple[str, Any]]:
    """The editor's widgets that follow a DynamicCombo set to ``value`` in ``widgets_values`` (the option's
    widgets, dotted), or none for other inputs."""
    if not isinstance(spec, DynamicComboInput) or not isinstance(value, str):
        return []
    return [(f"{name}.{sub}", s) for sub, s in spec.inputs_of(value).items() if s.is_widget]


__all__ = ["AUTOGROW", "DYNAMIC_COMBO", "MATCH_TYPE", "Autogrow", "AutogrowInput", "DynamicCombo",
           "DynamicComboInput", "FreeComboInput", "MatchType", "MatchTypeInput", "expand", "has_dynamic", "is_dynamic",
           "nest", "widget_slots_of"]
