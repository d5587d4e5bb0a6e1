"""ComfyUI's list semantics: list outputs, running a node once per element (longest list wins), per-element keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .node import NodeDef

_PLAIN = (str, int, float, bool)


class ValueList(list):
    """A list-valued output: downstream nodes run once per element; ``keys`` are the elements' cache keys."""

    __slots__ = ("keys",)

    def __init__(self, items: Any = (), keys: list[str] | None = None) -> None:
        super().__init__(items)
        self.keys = keys


@dataclass(frozen=True)
class Traits:
    """What the executor needs to know about a node class beyond its plain inputs and outputs."""

    input_is_list: bool
    list_outputs: tuple[int, ...]
    lazy: frozenset[str]
    n_outputs: int


def traits_of(definition: NodeDef) -> Traits:
    """The list and laziness traits of a registered node."""
    meta = definition.meta
    return Traits(bool(getattr(definition.cls, "INPUT_IS_LIST", False)),
                  tuple(i for i, o in enumerate(meta.outputs) if o.is_list),
                  frozenset(n for n, s in meta.inputs.items() if getattr(s, "lazy", False)), len(meta.outputs))


def digest(material: Any) -> str:
    """A 128-bit content hash of ``repr(material)``."""
    return hashlib.blake2b(repr(material).encode(), digest_size=16).hexdigest()


def own_key(node: Any, config: Any) -> str:
    """The key material of a node without its links: class, version, constants and fingerprint."""
    meta = node.definition.meta
    consts = sorted((k, v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                    for k, v in node.constants.items())
    return digest((meta.name, meta.version, consts, node.definition.cls.fingerprint(config, **node.constants)))


def has_list(kwargs: dict[str, Any]) -> bool:
    """Whether any input value is a list output."""
    return any(type(v) is ValueList for v in kwargs.values())


def as_lists(kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """Every input as a plain list (what an ``INPUT_IS_LIST`` node receives)."""
    return {k: list(v) if type(v) is ValueList else [v] for k, v in kwargs.items()}


def element_calls(kwargs: dict[str, Any], link_keys: dict[str, str],
                  own: str) -> list[tuple[dict[str, Any], str]]:
    """One ``(inputs, cache key)`` per call: as many calls as the longest list, shorter lists repeat their last element.

    An empty list input means no call at all. Each call's key hashes the node's own key with the keys of the elements
    it receives, so an unchanged element keeps its cached result when others change.
    """
    lists = {k: v for k, v in kwargs.items() if type(v) is ValueList}
    count = 0 if any(len(v) == 0 for v in lists.values()) else max(len(v) for v in lists.values())
    calls = []
    for i in range(count):
        call: dict[str, Any] = {}
        material = []
        for name, value in kwargs.items():
            if name in lists:
                j = min(i, len(value) - 1)
                call[name] = value[j]
                keys = value.keys
                material.append((name, keys[j] if keys else f"{link_keys.get(name, '')}#{j}"))
            else:
                call[name] = value
                if name in link_keys:
                    material.append((name, link_keys[name]))
        calls.append((call, digest((own, sorted(material)))))
    return calls


def list_output(items: Any, key: str, index: int, node: str, output: str) -> ValueList:
    """Wrap what a node returned for a list output, checking it is a list or tuple."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{node}: output {index} ({output}) is declared is_list=True, so execute must return a list "
                        f"or tuple for it, not {type(items).__name__}")
    return ValueList(items, [element_key(v, f"{key}/{index}/{j}") for j, v in enumerate(items)])


def element_key(value: Any, positional: str) -> str:
    """A list element's cache key: its content for plain values (equal seeds, prompts hit), else its position."""
    if value is None or type(value) in _PLAIN:
        return digest(("value", type(value).__name__, value))
    return positional


def gather(results: list[tuple[tuple[Any, ...], str]], list_outputs: tuple[int, ...], n_outputs: int,
           collapse: bool) -> tuple[Any, ...]:
    """Join per-call results into one value per output: list outputs concatenate, others collect one per call.

    With ``collapse`` a single call's non-list outputs stay plain values (a one-element list means the same).
    """
    out: list[Any] = []
    for o in range(n_outputs):
        if o in list_outputs:
            items: list[Any] = []
            keys: list[str] = []
            for vals, _ in results:
                part = vals[o]
                items.extend(part)
                keys.extend(part.keys if type(part) is ValueList and part.keys else
                            [f"?{j}" for j in range(len(part))])
            out.append(ValueList(items, keys))
        elif collapse and len(results) == 1:
            out.append(results[0][0][o])
        else:
            out.append(ValueList([vals[o] for vals, _ in results], [f"{key}/{o}" for _, key in results]))
    return tuple(out)


def merge_ui(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Join the UI payloads of several calls: list entries concatenate, other entries keep the last value."""
    merged: dict[str, Any] = {}
    for ui in parts:
        for k, v in (ui or {}).items():
            if isinstance(v, list) and isinstance(merged.get(k), list):
                merged[k] = merged[k] + v
            else:
                merged[k] = list(v) if isinstance(v, list) else v
    return merged or None
