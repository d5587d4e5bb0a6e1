"""Link types: the built-in ones plus those plugins declare with ``nodegraph_types``, and which type may feed which."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .inputs import LINK_TYPES, types_compatible


class LinkTypes:
    """Declared link types and their ``subtype_of`` relation; validation asks ``compatible``."""

    def __init__(self) -> None:
        self._descriptions: dict[str, str] = {t: "built-in" for t in LINK_TYPES}
        self._parents: dict[str, set[str]] = {}

    def declare(self, plugin: str, declared: Any) -> list[str]:
        """Add the types a plugin's ``nodegraph_types`` returned; the problems found, each saying the fix."""
        if not isinstance(declared, Mapping):
            return [f"nodegraph_types() returned {type(declared).__name__}; return {{TYPE_NAME: description}}"]
        problems: list[str] = []
        for name, value in declared.items():
            if not isinstance(name, str) or not name or "," in name or name.split() != [name]:
                problems.append(f"link type {name!r} is not a valid name: use one word such as 'MY_TYPE' "
                                "(no commas or spaces)")
                continue
            if name in LINK_TYPES:
                problems.append(f"link type {name!r} is built in and cannot be redeclared: remove it from "
                                "nodegraph_types() or choose another name")
                continue
            description, parents = (value, []) if isinstance(value, str) else _long_form(value)
            if description is None or parents is None:
                problems.append(f"link type {name!r}: declare it as a one-line description or as "
                                "{'description': str, 'subtype_of': [TYPE, ...]}")
                continue
            self._descriptions.setdefault(name, description)
            self._parents.setdefault(name, set()).update(p for p in parents if p != name)
        return problems

    def descriptions(self) -> dict[str, str]:
        """``{TYPE: description}``; built-in types are described as ``"built-in"``."""
        return dict(self._descriptions)

    def supertypes(self, name: str) -> set[str]:
        """Every type ``name`` is declared a subtype of, transitively (cycles are harmless)."""
        seen: set[str] = set()
        todo = list(self._parents.get(name, ()))
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                todo += self._parents.get(t, ())
        return seen

    def compatible(self, output_type: str, input_type: str) -> bool:
        """True when an output of ``output_type`` may feed an input of ``input_type``: the same type, ``*``, a
        shared member of a comma-separated union, or a declared supertype."""
        if types_compatible(output_type, input_type):
            return True
        wanted = set(input_type.split(","))
        return any(self.supertypes(part) & wanted for part in output_type.split(","))


def _long_form(value: Any) -> tuple[str | None, list[str] | None]:
    if not isinstance(value, Mapping):
        return None, None
    description, parents = value.get("description", ""), value.get("subtype_of", [])
    if not isinstance(description, str) or isinstance(parents, str) or not isinstance(parents, (list, tuple)) \
            or not all(isinstance(p, str) and p for p in parents):
        return None, None
    return description, list(parents)
