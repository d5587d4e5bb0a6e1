"""The node contract: declarations become ComfyUI catalogue entries and JSON Schemas."""

from __future__ import annotations

import pytest

from nodegraph import Boolean, Combo, Float, Int, Link, Node, Output, String
from nodegraph.node import NodeDef, describe


class Sampler(Node):
    """Denoise a latent.

    Longer text that is not part of the description.
    """

    DISPLAY_NAME = "My Sampler"
    CATEGORY = "sampling"
    VERSION = "1.2.3"
    INPUTS = {
        "model": Link("MODEL", tooltip="the model"),
        "seed": Int(0, min=0, max=2**64 - 1, control_after_generate=True),
        "cfg": Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        "sampler_name": Combo(["euler", "heun"]),
        "prompt": String("", multiline=True),
        "flag": Boolean(True, label_on="yes", label_off="no"),
        "files": Combo(lambda config: sorted(config or [])),
        "mask": Link("MASK", optional=True),
    }
    OUTPUTS = (Output("LATENT", tooltip="the result"),)

    def execute(self, ctx, **kw):
        return (None,)


def test_catalogue_entry_has_comfyui_shape():
    entry = NodeDef(Sampler, describe(Sampler), "test").catalogue_entry(config=["b.safetensors", "a.safetensors"])
    req = entry["input"]["required"]
    assert req["model"] == ["MODEL", {"tooltip": "the model"}]
    assert req["seed"] == ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "step": 1,
                                   "control_after_generate": True}]
    assert req["cfg"] == ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "round": 0.01, "step": 0.1}]
    assert req["sampler_name"] == [["euler", "heun"], {}]
    assert req["prompt"] == ["STRING", {"default": "", "multiline": True, "dynamicPrompts": False}]
    assert req["flag"] == ["BOOLEAN", {"default": True, "label_on": "yes", "label_off": "no"}]
    assert req["files"] == [["a.safetensors", "b.safetensors"], {}]  # computed when asked
    assert entry["input"]["optional"] == {"mask": ["MASK", {}]}
    assert entry["input_order"] == {"required": ["model", "seed", "cfg", "sampler_name", "prompt", "flag", "files"],
                                    "optional": ["mask"]}
    assert entry["output"] == ["LATENT"] and entry["output_is_list"] == [False]
    assert entry["output_name"] == ["LATENT"] and entry["output_tooltips"] == ["the result"]
    assert (entry["name"], entry["display_name"], entry["category"]) == ("Sampler", "My Sampler", "sampling")
    assert entry["description"] == "Denoise a latent."
    assert entry["python_module"] == __name__ and entry["output_node"] is False


def test_json_schema():
    schema = NodeDef(Sampler, describe(Sampler), "test").json_schema(config=["x"])
    props = schema["properties"]["inputs"]["properties"]
    assert props["seed"]["anyOf"][0] == {"type": "integer", "default": 0, "minimum": 0, "maximum": 2**64 - 1}
    assert props["files"]["anyOf"][0] == {"type": "string", "enum": ["x"]}
    assert props["model"]["minItems"] == 2
    assert "mask" not in schema["properties"]["inputs"]["required"]
    assert schema["properties"]["class_type"] == {"const": "Sampler"}


def test_widget_names_in_order():
    assert NodeDef(Sampler, describe(Sampler), "t").widget_names == ("seed", "cfg", "sampler_name", "prompt",
                                                                      "flag", "files")


@pytest.mark.parametrize("attrs, message", [
    ({"VERSION": "1.0"}, "semver"),
    ({"NAME": "bad/name"}, "pattern"),
])
def test_invalid_declarations(attrs, message):
    bad = type("Bad", (Sampler,), attrs)
    with pytest.raises(ValueError, match=message):
        describe(bad)


def test_execute_is_required():
    class NoExec(Node):
        pass

    with pytest.raises(TypeError, match="does not implement execute"):
        describe(NoExec)


def test_coercion():
    assert Int(0, min=0, max=10).coerce("7") == 7
    assert Int(0).coerce(3.0) == 3
    assert Float(0.0).coerce(2) == 2.0
    assert String().coerce(5) == "5"
    assert Boolean().coerce("true") is True


# ---- execute's signature is checked against INPUTS at registration -----------------------------------------------

class _Base(Node):
    INPUTS = {"a": Int(1), "b": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("INT"),)


def _node(execute, name="Mismatch"):
    return type(name, (_Base,), {"execute": execute, "__doc__": "A node."})


@pytest.mark.parametrize("execute", [
    lambda self, ctx, a, b=None: (a,),
    lambda self, ctx, a, b=None, extra=3: (a,),  # an extra parameter with a default is harmless
    lambda self, ctx, **inputs: (inputs["a"],),
    lambda self, ctx, a, **rest: (a,),
])
def test_matching_signatures_register(execute):
    assert describe(_node(execute)).name == "Mismatch"


def test_a_missing_parameter_is_a_registration_error_naming_node_parameter_and_fix():
    with pytest.raises(TypeError) as err:
        describe(_node(lambda self, ctx, b=None: (1,), name="NoA"))
    text = str(err.value)
    assert "node NoA" in text and "'a'" in text and "add a to execute" in text


def test_an_undeclared_required_parameter_is_a_registration_error():
    with pytest.raises(TypeError) as err:
        describe(_node(_extra_execute, name="Extra"))
    text = str(err.value)
    assert "node Extra" in text and "'seed'" in text and "declare them in INPUTS" in text


def _extra_execute(self, ctx, a, seed, b=None):
    return (a,)


def test_an_optional_input_without_a_default_is_a_registration_error():
    with pytest.raises(TypeError) as err:
        describe(_node(lambda self, ctx, a, b: (a,), name="NoDefault"))
    assert "'b'" in str(err.value) and "b=None" in str(err.value)


def test_execute_without_ctx_is_a_registration_error():
    with pytest.raises(TypeError, match="execute must take \\(self, ctx"):
        describe(_node(lambda self: (1,), name="NoCtx"))


def test_the_registry_reports_a_mismatched_node_and_loads_the_rest(make_registry):
    good = type("GoodNode", (_Base,), {"execute": lambda self, ctx, a, b=None: (a,), "__doc__": "ok"})
    bad = _node(lambda self, ctx, b=None: (1,), name="BadNode")
    reg = make_registry(good, bad, builtins=())
    assert "GoodNode" in reg.nodes and "BadNode" not in reg.nodes
    assert any("BadNode" in e and "'a'" in e for _, e in reg.errors)
