"""Shape-level helpers for the SD3 tests (no weights)."""

from __future__ import annotations

from typing import Any


def original_shapes(shapes: dict[str, Any]) -> dict[str, Any]:
    """Stability's names for diffusers SD3 shapes (what ``sd3_tiny.to_original`` does to tensors)."""
    import torch
    from sd3_tiny import to_original

    return {k: list(v.shape) for k, v in to_original({k: torch.empty(s, device="meta")
                                                       for k, s in shapes.items()}).items()}
