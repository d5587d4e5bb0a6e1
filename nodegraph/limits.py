"""Resource limits that keep one prompt from exhausting the machine: node count, string sizes, pixels, text windows,
and the CPU pool that validates prompts off the server's event loop.

Every limit lives in :class:`Limits`, reachable as ``EngineConfig.limits``; change one with
``EngineConfig(limits=Limits(max_nodes=50_000))``, or for ``nodegraph serve``/``run`` with an environment variable
``NODEGRAPH_LIMIT_<FIELD>`` (``NODEGRAPH_LIMIT_MAX_NODES=50000``). Validation checks
them before anything runs and answers with an error that names the node, the input, the limit and this field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

KB = 1024
MEGAPIXEL = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The caps validation and the server enforce; defaults sit well above real workflows."""

    #: Nodes in one prompt (API format) or one editor workflow (UI format). Real workflows have tens to hundreds.
    max_nodes: int = 10_000
    #: Characters in one string input (a CLIPTextEncode text, a file name, …).
    max_string_chars: int = 64 * KB
    #: Characters of all string inputs of one prompt together.
    max_prompt_string_chars: int = 1024 * KB
    #: Pixels of one image a node is asked to make (width × height; 16 MP, e.g. 4096 × 4096).
    max_image_pixels: int = 16 * MEGAPIXEL
    #: Pixels of all images (and video frames) the nodes of one prompt are asked to make (width × height × batch ×
    #: frames, summed; 256 MP: the official Wan 2.2 5B template asks for 121 frames of 1280 × 704 = 104 MP).
    max_prompt_pixels: int = 256 * MEGAPIXEL
    #: Token windows (75 tokens plus start/end each) a text encoder processes for one text: 32 windows = 2,400
    #: tokens, far past what CLIP attends to; longer texts are refused with a message.
    max_text_chunks: int = 32
    #: Distinct unknown node types that get "did you mean …?" suggestions in one report (each costs a fuzzy search).
    max_suggestions: int = 32
    #: Threads that parse and validate prompts for the server (CPU work, kept off the event loop and apart from the
    #: threads that read the database and files, so the editor's polling stays fast). Validation is Python code
    #: holding the GIL, so a second thread adds no throughput but doubles the event loop's wait for the GIL.
    validation_threads: int = 1
    #: Prompts that may wait for a validation thread; one more is answered 503 (retry shortly).
    validation_waiting: int = 8

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            least = 0 if name == "validation_waiting" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Limits.{name} must be an integer of at least {least}, got {value!r}")


    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, each overridden by ``NODEGRAPH_LIMIT_<FIELD>`` when set (e.g. NODEGRAPH_LIMIT_MAX_NODES)."""
        environ = os.environ if environ is None else environ
        values = {}
        for name in cls.__dataclass_fields__:
            raw = environ.get(ENV_PREFIX + name.upper(), "").strip().replace("_", "")
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not an integer; unset it or give a "
                                     "whole number") from None
        return cls(**values)


#: Environment variables that override a limit: NODEGRAPH_LIMIT_ + the field name in capitals.
ENV_PREFIX = "NODEGRAPH_LIMIT_"
#: The defaults, for callers without an EngineConfig.
DEFAULT_LIMITS = Limits()


def limits_of(config: object) -> Limits:
    """The limits of an EngineConfig-like object, or the defaults when it carries none."""
    value = getattr(config, "limits", None)
    return value if isinstance(value, Limits) else DEFAULT_LIMITS


# ---- pixel estimate ------------------------------------------------------------------------------------------------

#: Constant inputs that name an image's size; a node class may set ``PIXEL_INPUTS = ("w", "h")`` or ``()`` to opt out.
SIZE_INPUTS = ("width", "height")
#: Constant inputs that multiply the number of images a node makes.
BATCH_INPUTS = ("batch_size", "length", "amount")
#: Constant inputs that scale the linked image's sides.
SCALE_INPUTS = ("scale_by", "upscale_by")

Problem = tuple[str, str, str, str]  # (node id, input name, message, fix)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _node_size(cls: type, constants: dict, upstream: tuple[int, int]) -> tuple[int, int, str | None]:
    """(pixels per image, images, the input that set the size, or None when the node only passes its input on)."""
    w_name, h_name = (tuple(getattr(cls, "PIXEL_INPUTS", SIZE_INPUTS)) + (None, None))[:2]
    per_image, count = upstream
    for name in BATCH_INPUTS:
        if (n := _int(constants.get(name))) is not None and n > 0:
            count *= n
    w, h = _int(constants.get(w_name)) if w_name else None, _int(constants.get(h_name)) if h_name else None
    if w and h and w > 0 and h > 0:
        return w * h, count, w_name
    for name in SCALE_INPUTS:
        scale = constants.get(name)
        if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 and per_image:
            return int(per_image * scale * scale), count, name
    return per_image, count, None


def pixel_problems(nodes: list[tuple[str, type, dict, list[str]]], limits: Limits) -> list[Problem]:
    """Check the images a prompt asks for against ``max_image_pixels`` and ``max_prompt_pixels``.

    ``nodes`` are ``(id, node class, constants, linked source ids)`` in topological order. A node whose constants
    include ``width`` and ``height`` (pixel units, latents included: their decoded size) makes images of that size,
    times ``batch_size``/``length``/``amount``; one with ``scale_by`` scales the size of what is linked to it;
    others pass the largest linked size on. The prompt total sums every node that sets a size.
    """
    sizes: dict[str, tuple[int, int]] = {}
    problems: list[Problem] = []
    total, reported = 0, False
    for nid, cls, constants, sources in nodes:
        known = [sizes[s] for s in sources if s in sizes]
        upstream = (max(k[0] for k in known), max(k[1] for k in known)) if known else (0, 1)
        per_image, count, by = _node_size(cls, constants, upstream)
        sizes[nid] = (per_image, count)
        if by is None:
            continue
        if per_image > limits.max_image_pixels:
            problems.append((nid, by, (f"'{by}' asks for images of {per_image:,} pixels; the limit is "
                                       f"{limits.max_image_pixels:,} per image"),
                             "make the image smaller, or raise EngineConfig.limits.max_image_pixels"))
            continue
        total += per_image * count
        if total > limits.max_prompt_pixels and not reported:
            reported = True
            problems.append((nid, by, (f"this node brings the prompt to {total:,} pixels ({count} image(s) of "
                                       f"{per_image:,}); the limit is {limits.max_prompt_pixels:,} per prompt"),
                             ("lower the batch size or the image size, split the work into several prompts, or "
                              "raise EngineConfig.limits.max_prompt_pixels")))
    return problems
