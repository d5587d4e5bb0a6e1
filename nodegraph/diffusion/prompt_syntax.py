"""ComfyUI's prompt emphasis syntax: which parts of a prompt carry which weight.

Rules (the same as ComfyUI's ``token_weights`` in ``comfy/sd1_clip.py``, written here from its behaviour):

- ``(text)`` multiplies the weight of ``text`` by 1.1 (nested: ``((text))`` → 1.21);
- ``(text:1.3)`` sets the weight to 1.3 (not multiplied by the outer weight): the last ``:`` inside the parentheses
  (not its first character) introduces the number; when what follows is not a number, the ``:`` stays text and
  the weight is the outer one times 1.1;
- ``\\(`` and ``\\)`` are literal parentheses; square brackets have no meaning (they are text);
- unbalanced parentheses are text, grouped as ComfyUI's scanner groups them: a ``(`` never closed and a ``)`` never
  opened stay in the text (``"(a"`` is the text ``(a``), while ``"((a)"`` is ``(a`` at weight 1.1.

The scanner works on index ranges of the original string, so a huge prompt is never copied whole; words come out one
at a time (``weighted_words``) and the tokenizer can stop early. Nesting deeper than ``MAX_DEPTH`` is refused with a
ValueError (ComfyUI would overflow Python's recursion limit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

#: Deepest parenthesis nesting accepted.
MAX_DEPTH = 100
#: Weight of one level of parentheses without an explicit number.
PAREN_WEIGHT = 1.1

_PAREN = re.compile(r"[()]")
_WORD = re.compile(r"[^ \n]+")  # ComfyUI splits on spaces and newlines only (tabs stay inside words)
_NUMBER = re.compile(r"\s*(\S{1,256})\s*")


def _escaped(text: str, pos: int) -> bool:
    """Whether the parenthesis at ``pos`` is written ``\\(`` or ``\\)`` (a literal)."""
    return pos > 0 and text[pos - 1] == "\\"


def _items(text: str, lo: int, hi: int, depth: int) -> list[tuple[int, int]]:
    """Top-level pieces of ``text[lo:hi]``: runs of text and ``(...)`` groups, split as ComfyUI splits them."""
    items: list[tuple[int, int]] = []
    start, nesting = lo, 0
    for match in _PAREN.finditer(text, lo, hi):
        pos = match.start()
        if _escaped(text, pos):
            continue
        if text[pos] == "(":
            if nesting == 0:
                if pos > start:
                    items.append((start, pos))
                start = pos
            nesting += 1
            if nesting + depth > MAX_DEPTH:
                raise ValueError(f"the prompt nests parentheses more than {MAX_DEPTH} levels deep; write literal "
                                 "parentheses as \\( and \\)")
        else:
            nesting -= 1
            if nesting == 0:
                items.append((start, pos + 1))
                start = pos + 1
    if start < hi:
        items.append((start, hi))
    return items


def _explicit_weight(text: str, lo: int, hi: int) -> tuple[int, float] | None:
    """``(end of the text, weight)`` when ``text[lo:hi]`` ends in ``:<number>`` (colon not first), else None."""
    colon = text.rfind(":", lo, hi)
    if colon <= lo:
        return None
    found = _NUMBER.fullmatch(text, colon + 1, hi)
    if found is None:
        return None
    try:
        weight = float(found.group(1))
    except ValueError:
        return None
    if not math.isfinite(weight):
        raise ValueError(f"prompt weight {found.group(1)!r} is not a finite number; write a number such as 1.2")
    return colon, weight


def weighted_spans(text: str, weight: float = 1.0) -> Iterator[tuple[int, int, float]]:
    """``(start, end, weight)`` for each run of plain text in ``text``, in order (escapes not yet undone)."""
    stack: list[tuple[Iterator[tuple[int, int]], float, int]] = [(iter(_items(text, 0, len(text), 0)), weight, 0)]
    while stack:
        items, outer, depth = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        lo, hi = item
        is_group = (hi - lo >= 2 and text[lo] == "(" and text[hi - 1] == ")" and not _escaped(text, lo)
                    and not _escaped(text, hi - 1))
        if not is_group:
            yield lo, hi, outer
            continue
        inner_lo, inner_hi, inner = lo + 1, hi - 1, outer * PAREN_WEIGHT
        explicit = _explicit_weight(text, inner_lo, inner_hi)
        if explicit is not None:
            inner_hi, inner = explicit
        stack.append((iter(_items(text, inner_lo, inner_hi, depth + 1)), inner, depth + 1))


def unescape(text: str) -> str:
    """``\\(`` → ``(`` and ``\\)`` → ``)``."""
    return text.replace("\\(", "(").replace("\\)", ")")


def parse(text: str) -> list[tuple[str, float]]:
    """The prompt as ``(text, weight)`` pieces, escapes undone (ComfyUI's ``token_weights`` + unescaping)."""
    return [(unescape(text[lo:hi]), w) for lo, hi, w in weighted_spans(text)]


def weighted_words(text: str) -> Iterator[tuple[str, float]]:
    """Each word (split at spaces and newlines, as ComfyUI splits) with its weight, escapes undone, lazily."""
    for lo, hi, weight in weighted_spans(text):
        for match in _WORD.finditer(text, lo, hi):
            yield unescape(match.group()), weight
