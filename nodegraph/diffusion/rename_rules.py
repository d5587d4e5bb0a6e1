"""Renaming a transformer's tensors by an ordered table of (regex, target) rules (Mochi, HunyuanVideo).

A rule's regex matches the start of a name (without the file's prefix), what follows must be ``""``, ``weight`` or
``bias``; its first group (a block index, if any) fills the target's ``{}``. A target that starts with ``*``
(``*kind:pattern``) is a fused or reordered tensor: the family's ``special`` turns it into the diffusers tensors.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from .detect import UnknownModelError

#: A compiled rule: (regex, target).
Rule = tuple[re.Pattern, str]


def compile_rules(rules: tuple[tuple[str, str], ...]) -> tuple[Rule, ...]:
    """The rules with their regexes compiled."""
    return tuple((re.compile(pattern), target) for pattern, target in rules)


def rename_by_rules(state: dict[str, Any], prefix: str, rules: tuple[Rule, ...],
                    special: Callable[[str, Any, str | None, str], list[tuple[str, Any]]], unknown: str,
                    rewrite: Callable[[str], str] | None = None) -> dict[str, Any]:
    """New names for ``state``'s tensors under ``prefix`` by the first matching rule (``state`` is emptied; names
    outside ``prefix`` are dropped); ``rewrite`` renames first; a name no rule takes raises UnknownModelError
    "<name> <unknown>"."""
    out: dict[str, Any] = {}
    for key in list(state):
        tensor = state.pop(key)
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if rewrite is not None:
            name = rewrite(name)
        for rx, target in rules:
            m = rx.match(name)
            tail = name[m.end():] if m is not None else None
            if tail not in ("", "weight", "bias"):
                continue
            group = m.group(1) if m.groups() else None
            if target.startswith("*"):
                out.update(special(target, tensor, group, tail))
            else:
                out[target.format(group) + tail] = tensor
            break
        else:
            raise UnknownModelError(f"{key} {unknown}")
    return out


__all__ = ["Rule", "compile_rules", "rename_by_rules"]
