"""Datasets for teaching the embedded model a new word: a shape it never saw ("star"), mixed with its own vocabulary.

The concept images are large stars (its VAE turns stars under ~12 px into blobs), with core captions
("a red star on a blue background"); a share of ordinary images from ``shapes.generate`` (prior preservation, as
DreamBooth does) keeps the LoRA from drifting the words the model already knows.
"""

from __future__ import annotations

import numpy as np

from .shapes import (COLOR_NAMES, EXTRA_SHAPES, IMAGE_SIZE, SIZE_RANGES, ShapeSpec, caption_for, core_caption,
                     position_word, random_spec, render)

CONCEPTS: tuple[str, ...] = EXTRA_SHAPES
STAR_RADIUS = (16.0, 22.0)  # half-extent at 64 px: large enough to stay a star through the VAE


def concept_spec(shape: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> ShapeSpec:
    """A random large ``shape`` with a random foreground and a different background colour."""
    fg_i = int(rng.integers(len(COLOR_NAMES)))
    bg_i = int(rng.integers(len(COLOR_NAMES) - 1))
    bg_i += int(bg_i >= fg_i)
    scale = size / IMAGE_SIZE
    r = float(rng.uniform(*STAR_RADIUS)) * scale
    margin = r + 1.0 * scale
    cx, cy = (float(rng.uniform(margin, size - margin)) for _ in range(2))
    return ShapeSpec(shape, COLOR_NAMES[fg_i], COLOR_NAMES[bg_i], "large", position_word(cx, cy, size), cx, cy, r)


def concept_dataset(shape: str = "star", count: int = 32, prior: int = 32, seed: int = 0,
                    size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str], list[ShapeSpec]]:
    """``count`` images of the new shape and ``prior`` ordinary ones, interleaved: (uint8 [N, H, W, 3], captions,
    specs), deterministic from ``seed``."""
    if shape not in CONCEPTS:
        raise ValueError(f"unknown concept {shape!r}; choose one of {', '.join(CONCEPTS)}")
    rng = np.random.default_rng(seed)
    new = [concept_spec(shape, rng, size) for _ in range(count)]
    old = [random_spec(rng, size) for _ in range(prior)]
    specs: list[ShapeSpec] = []
    for i in range(max(count, prior)):
        specs += ([new[i]] if i < count else []) + ([old[i]] if i < prior else [])
    captions = [core_caption(s.shape, s.fg, s.bg) if s.shape in CONCEPTS else caption_for(s, "core")
                for s in specs]
    images = np.stack([render(s, size) for s in specs]) if specs else np.zeros((0, size, size, 3), np.uint8)
    return images, captions, specs


def concept_prompts(shape: str, n: int, seed: int = 1234) -> list[tuple[str, str, str, str]]:
    """``n`` seeded prompts naming the new shape: (prompt, shape, fg, bg)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        spec = concept_spec(shape, rng)
        out.append((core_caption(shape, spec.fg, spec.bg), shape, spec.fg, spec.bg))
    return out


__all__ = ["CONCEPTS", "SIZE_RANGES", "concept_dataset", "concept_prompts", "concept_spec"]
