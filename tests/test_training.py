"""Fast checks of the procedural shapes dataset and the pixel classifier (no torch needed)."""

from __future__ import annotations

import numpy as np

from nodegraph.training import shapes
from nodegraph.training.classify import classify, score


def test_generate_is_deterministic():
    a, sa = shapes.generate(40, seed=7)
    b, sb = shapes.generate(40, seed=7)
    c, _ = shapes.generate(40, seed=8)
    assert a.shape == (40, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)


def test_specs_and_captions_are_consistent():
    rng = np.random.default_rng(3)
    seen_shapes, seen_fg = set(), set()
    for _ in range(300):
        s = shapes.random_spec(rng)
        assert s.fg != s.bg
        assert s.shape in shapes.SHAPES and s.fg in shapes.COLORS and s.bg in shapes.COLORS
        assert s.r - 1e-6 <= s.cx <= shapes.IMAGE_SIZE - s.r and s.r - 1e-6 <= s.cy <= shapes.IMAGE_SIZE - s.r
        assert s.position == shapes.position_word(s.cx, s.cy)
        lo, hi = shapes.SIZE_RANGES[s.size]
        assert lo <= s.r <= hi
        seen_shapes.add(s.shape)
        seen_fg.add(s.fg)
        for mode in shapes.CAPTION_MODES:
            cap = shapes.caption_for(s, mode)
            assert set(cap.split()) <= set(shapes.VOCAB_WORDS)
            p = shapes.parse_caption(cap)
            assert (p["shape"], p["fg"], p["bg"]) == (s.shape, s.fg, s.bg), cap
            assert p["size"] == (s.size if mode in ("size", "full") else None)
            assert p["position"] == (s.position if mode in ("position", "full") else None)
    assert seen_shapes == set(shapes.SHAPES)
    assert len(seen_fg) >= 6
    assert shapes.caption_for(s, "core") == shapes.core_caption(s.shape, s.fg, s.bg)


def test_full_caption_example():
    s = shapes.ShapeSpec("circle", "red", "blue", "small", "top left", 12.0, 12.0, 9.0)
    assert shapes.caption_for(s) == "a small red circle at the top left on a blue background"
    s2 = shapes.ShapeSpec("square", "red", "blue", "large", "center", 32.0, 32.0, 16.0)
    assert shapes.caption_for(s2) == "a large red square in the center on a blue background"


def test_render_colours():
    s = shapes.ShapeSpec("square", "red", "blue", "large", "center", 32.0, 32.0, 16.0)
    img = shapes.render(s)
    assert tuple(img[0, 0]) == shapes.COLORS["blue"]
    assert tuple(img[32, 32]) == shapes.COLORS["red"]


def test_classifier_on_clean_renders():
    imgs, specs = shapes.generate(400, seed=11)
    acc = score(imgs, [(s.shape, s.fg, s.bg) for s in specs])
    assert acc["all"] >= 0.95, acc
    c = classify(imgs[0])
    assert {"fg", "bg", "shape", "fill"} <= set(c)
