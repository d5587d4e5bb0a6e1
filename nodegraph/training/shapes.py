"""Seeded procedural dataset: one coloured shape on a plain coloured background.

Pure numpy + Pillow, deterministic from a seed.  Every sample carries its attributes
(shape, foreground colour, background colour, size, position) and a caption such as
``"a small red circle at the top left on a blue background"``.

The core attributes (foreground colour, shape, background colour) are always in the
caption; the size and position words are optional (see :func:`caption_for`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Corners of the RGB cube: maximally separated, so both the model and the pixel
# classifier can tell them apart.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 200, 25),
    "blue": (25, 45, 230),
    "yellow": (240, 230, 25),
    "cyan": (25, 225, 235),
    "magenta": (225, 30, 225),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
# a colour and a shape the embedded model was never shown, for teaching it a new word with a LoRA
# (workflows/train_lora.json); not in COLORS/SHAPES, so the original dataset, vocabulary and classifier are
# unchanged. Its VAE decodes only the 8 palette colours (orange comes back black), so the taught word is "star".
EXTRA_COLORS: dict[str, tuple[int, int, int]] = {"orange": (245, 130, 20)}
EXTRA_SHAPES: tuple[str, ...] = ("star",)
STAR_INNER = 0.5  # inner/outer radius of the five-pointed star


def rgb_of(name: str) -> tuple[int, int, int]:
    """The RGB of a palette colour or an extra colour."""
    return COLORS[name] if name in COLORS else EXTRA_COLORS[name]

SIZES: tuple[str, ...] = ("small", "large")
# half-extent in pixels (at 64x64) for each size word: [lo, hi]
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (8.0, 12.0), "large": (14.0, 20.0)}

# vertical and horizontal thirds -> words
_ROW_WORDS = ("top", "", "bottom")
_COL_WORDS = ("left", "", "right")
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)

# every word that can appear in a caption (the tokenizer's vocabulary is built from it)
VOCAB_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["a", "an", "on", "at", "the", "in", "background", "of", "and", "with", "shape"]
        + list(SHAPES) + list(COLOR_NAMES) + list(SIZES)
        + ["top", "bottom", "left", "right", "center", "middle", "big", "tiny", "medium"]
    )
)


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    fg: str
    bg: str
    size: str
    position: str
    cx: float  # centre, pixels at IMAGE_SIZE
    cy: float
    r: float  # half-extent, pixels at IMAGE_SIZE

    def as_dict(self) -> dict:
        return asdict(self)


def position_word(cx: float, cy: float, size: int = IMAGE_SIZE) -> str:
    col = min(2, max(0, int(cx / (size / 3.0))))
    row = min(2, max(0, int(cy / (size / 3.0))))
    if row == 1 and col == 1:
        return "center"
    return " ".join(w for w in (_ROW_WORDS[row], _COL_WORDS[col]) if w)


def random_spec(rng: np.random.Generator, size: int = IMAGE_SIZE) -> ShapeSpec:
    shape = SHAPES[rng.integers(len(SHAPES))]
    fg_i = int(rng.integers(len(COLOR_NAMES)))
    bg_i = int(rng.integers(len(COLOR_NAMES) - 1))
    if bg_i >= fg_i:
        bg_i += 1
    sz = SIZES[rng.integers(len(SIZES))]
    lo, hi = SIZE_RANGES[sz]
    scale = size / IMAGE_SIZE
    r = float(rng.uniform(lo, hi)) * scale
    margin = r + 1.0 * scale
    cx = float(rng.uniform(margin, size - margin))
    cy = float(rng.uniform(margin, size - margin))
    return ShapeSpec(shape, COLOR_NAMES[fg_i], COLOR_NAMES[bg_i], sz, position_word(cx, cy, size), cx, cy, r)


def render(spec: ShapeSpec, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render a spec to an (size, size, 3) uint8 array, anti-aliased by supersampling."""
    s = SUPERSAMPLE
    big = size * s
    img = Image.new("RGB", (big, big), rgb_of(spec.bg))
    d = ImageDraw.Draw(img)
    cx, cy, r = spec.cx * s, spec.cy * s, spec.r * s
    fg = rgb_of(spec.fg)
    if spec.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif spec.shape == "square":
        q = r * 0.9  # a square of the same half-extent looks bigger than the circle
        d.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fg)
    elif spec.shape == "triangle":
        # upright isosceles triangle filling its (2r x 2r) box: apex top-centre
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fg)
    elif spec.shape == "star":
        # five-pointed star filling its circle of radius r, one point straight up
        pts = [(cx + rr * math.sin(k * math.pi / 5), cy - rr * math.cos(k * math.pi / 5))
               for k, rr in zip(range(10), [r, r * STAR_INNER] * 5)]
        d.polygon(pts, fill=fg)
    else:  # pragma: no cover
        raise ValueError(spec.shape)
    img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8)


def core_caption(shape: str, fg: str, bg: str) -> str:
    return f"a {fg} {shape} on a {bg} background"


def caption_for(spec: ShapeSpec, mode: str = "full") -> str:
    """Caption in one of the modes: "core", "size", "position", "full"."""
    parts = ["a"]
    if mode in ("size", "full"):
        parts.append(spec.size)
    parts += [spec.fg, spec.shape]
    if mode in ("position", "full"):
        if spec.position == "center":
            parts += ["in", "the", "center"]
        else:
            parts += ["at", "the", spec.position]
    parts += ["on", "a", spec.bg, "background"]
    return " ".join(parts)


CAPTION_MODES = ("core", "size", "position", "full")
CAPTION_MODE_P = (0.35, 0.15, 0.15, 0.35)


def random_caption(spec: ShapeSpec, rng: np.random.Generator) -> str:
    mode = CAPTION_MODES[rng.choice(len(CAPTION_MODES), p=CAPTION_MODE_P)]
    return caption_for(spec, mode)


def parse_caption(caption: str) -> dict[str, str | None]:
    """Recover attributes named in a caption (None where absent)."""
    words = caption.lower().split()
    out: dict[str, str | None] = {"shape": None, "fg": None, "bg": None, "size": None, "position": None}
    for i, w in enumerate(words):
        if w in SHAPES:
            out["shape"] = w
        elif w in SIZES:
            out["size"] = w
    if "background" in words:
        j = words.index("background")
        if j > 0 and words[j - 1] in COLORS:
            out["bg"] = words[j - 1]
    if out["shape"] is not None:
        k = words.index(out["shape"])
        if k > 0 and words[k - 1] in COLORS:
            out["fg"] = words[k - 1]
    for marker in ("at the", "in the"):
        i = caption.find(marker + " ")
        if i >= 0:
            rest = caption[i + len(marker) + 1:].split(" on ")[0].strip()
            out["position"] = rest
    return out


def generate(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[ShapeSpec]]:
    """n images (n, size, size, 3) uint8 and their specs, deterministic from seed."""
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng, size) for _ in range(n)]
    imgs = np.stack([render(s, size) for s in specs]) if n else np.zeros((0, size, size, 3), np.uint8)
    return imgs, specs


def iter_samples(seed: int = 0, size: int = IMAGE_SIZE) -> Iterator[tuple[np.ndarray, ShapeSpec, str]]:
    """Endless (image, spec, caption) stream, deterministic from seed."""
    rng = np.random.default_rng(seed)
    while True:
        spec = random_spec(rng, size)
        yield render(spec, size), spec, random_caption(spec, rng)


def random_prompt(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """A random core prompt and its (shape, fg, bg)."""
    spec = random_spec(rng)
    return core_caption(spec.shape, spec.fg, spec.bg), spec.shape, spec.fg, spec.bg
