"""Resource limits that keep one prompt from exhausting the machine: node count, string sizes, pixels, text windows,
and the CPU pool that validates prompts off the server's event loop.

Every limit lives in :class:`Limits`, reachable as ``EngineConfig.limits``; change one with
``EngineConfig(limits=Limits(max_nodes=50_000))`` or ``dataclasses.replace(config.limits, ...)``. Validation checks
them before anything runs and answers with an error that names the node, the input, the limit and this field.
"""

from __future__ import annotations

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
    #: Pixels of all images the nodes of one prompt are asked to make (width × height × batch, summed; 64 MP).
    max_prompt_pixels: int = 64 * MEGAPIXEL
    #: Token windows (75 tokens plus start/end each) a text encoder processes for one text: 32 windows = 2,400
    #: tokens, far past what CLIP attends to; longer texts are refused with a message.
    max_text_chunks: int = 32
    #: Distinct unknown node types that get "did you mean …?" suggestions in one report (each costs a fuzzy search).
    max_suggestions: int = 32
    #: Threads that parse and validate prompts for the server (CPU work, kept off the event loop and apart from the
    #: threads that read the database and files, so the editor's polling stays fast).
    validation_threads: int = 2
    #: Prompts that may wait for a validation thread; one more is answered 503 (retry shortly).
    validation_waiting: int = 8

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


#: The defaults, for callers without an EngineConfig.
DEFAULT_LIMITS = Limits()


def limits_of(config: object) -> Limits:
    """The limits of an EngineConfig-like object, or the defaults when it carries none."""
    value = getattr(config, "limits", None)
    return value if isinstance(value, Limits) else DEFAULT_LIMITS
