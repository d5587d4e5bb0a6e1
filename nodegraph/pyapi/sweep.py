"""Parameter sweeps: run a workflow over the product (or zip) of input values; a table and a contact sheet."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .result import Result

MODES = ("product", "zip")


def plan(axes: Mapping[str, Iterable[Any]], mode: str = "product") -> list[dict[str, Any]]:
    """The override dicts of a sweep: every combination (``product``, last axis fastest) or the values side by
    side (``zip``, all axes the same length)."""
    if mode not in MODES:
        raise ValueError(f"sweep mode {mode!r}: use 'product' or 'zip'")
    if not axes:
        raise ValueError("a sweep needs at least one axis, e.g. {'3.seed': range(4)}")
    names = list(axes)
    values = [list(v) for v in axes.values()]
    for name, vals in zip(names, values):
        if not vals:
            raise ValueError(f"sweep axis {name!r} has no values")
    if mode == "zip":
        lengths = {len(v) for v in values}
        if len(lengths) > 1:
            shown = ", ".join(f"{n}: {len(v)}" for n, v in zip(names, values))
            raise ValueError(f"zip sweeps need axes of one length ({shown}); use mode='product' or trim them")
        combos: Iterable[tuple[Any, ...]] = zip(*values)
    else:
        combos = itertools.product(*values)
    return [dict(zip(names, combo)) for combo in combos]


@dataclass
class SweepRow:
    """One run of a sweep: its parameters and its Result."""

    params: dict[str, Any]
    result: Result


@dataclass
class SweepResult:
    """The runs of a sweep in plan order, the axes, and the sweep's wall time."""

    axes: dict[str, list[Any]]
    mode: str
    rows: list[SweepRow] = field(default_factory=list)
    wall: float = 0.0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Any:
        return iter(self.rows)

    def table(self) -> list[dict[str, Any]]:
        """One dict per run: the parameters, status, wall seconds, executed/cached counts and output files."""
        out = []
        for row in self.rows:
            r = row.result
            files = [ref["filename"] for nid in r.outputs for ref in r.refs(nid)]
            out.append({**row.params, "status": r.status, "seconds": round(r.wall, 3), "executed": len(r.executed),
                        "cached": len(r.cached), "files": files})
        return out

    def images(self) -> list[Any]:
        """The first image of each run (None where a run made none)."""
        out = []
        for row in self.rows:
            imgs = row.result.images() if row.result.ok else []
            out.append(imgs[0] if imgs else None)
        return out

    def contact_sheet(self, cell: int | None = None, label_px: int = 14) -> Any:
        """A Pillow image of every run's first image in a grid with labels: with two or more axes of a product
        sweep, rows are the combinations of the leading axes and columns the last axis; otherwise one row."""
        from PIL import Image, ImageDraw

        images = self.images()
        names = list(self.axes)
        if self.mode == "product" and len(names) >= 2:
            cols = len(self.axes[names[-1]])
            col_labels = [f"{_short(names[-1])}={_fmt(v)}" for v in self.axes[names[-1]]]
            row_labels = [", ".join(f"{_short(n)}={_fmt(row.params[n])}" for n in names[:-1])
                          for row in self.rows[::cols]]
        else:
            cols = len(images)
            col_labels = [", ".join(f"{_short(n)}={_fmt(v)}" for n, v in row.params.items()) for row in self.rows]
            row_labels = [""]
        rows = max(1, (len(images) + cols - 1) // cols)
        found = [im for im in images if im is not None]
        size = cell or (max(im.width for im in found) if found else 64)
        font = _font(label_px)
        draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left = max((int(draw_probe.textlength(t, font=font)) for t in row_labels), default=0) + (8 if any(
            row_labels) else 0)
        top = label_px + 8
        sheet = Image.new("RGB", (left + cols * size, top + rows * size), "white")
        draw = ImageDraw.Draw(sheet)
        for c, text in enumerate(col_labels[:cols]):
            draw.text((left + c * size + 2, 2), _fit(draw, text, size - 4, font), fill="black", font=font)
        for r, text in enumerate(row_labels[:rows]):
            draw.text((2, top + r * size + size // 2 - label_px // 2), text, fill="black", font=font)
        for i, img in enumerate(images):
            r, c = divmod(i, cols)
            box = (left + c * size, top + r * size)
            if img is None:
                draw.rectangle([box, (box[0] + size - 1, box[1] + size - 1)], outline="red")
                continue
            sheet.paste(img.convert("RGB").resize((size, size)), box)
        return sheet


def _short(name: str) -> str:
    """``3.seed`` → ``seed`` (labels stay short)."""
    return name.split(".", 1)[-1]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _font(px: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: Any, text: str, width: int, font: Any) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def run_sweep(workflow: Any, axes: Mapping[str, Iterable[Any]], mode: str = "product", *, client: Any = None,
              base: Any = None, concurrency: int | None = None, **kwargs: Any) -> SweepResult:
    """Run a workflow's sweep in-process, one after another so cached nodes are reused, or on ``client``'s server
    with up to ``concurrency`` prompts in flight (default: the client's)."""
    from .workflow import override_key, override_strings

    fixed = axes if isinstance(axes, Mapping) else dict(axes)
    frozen = {override_key(name): list(values) for name, values in fixed.items()}
    combos = plan(frozen, mode)
    out = SweepResult(frozen, mode)
    start = time.perf_counter()
    kwargs.setdefault("raise_on_error", False)
    base_strings = override_strings(base)
    if client is None:
        for params in combos:
            result = workflow.run(set=base_strings + override_strings(params), **kwargs)
            out.rows.append(SweepRow(params, result))
    else:
        prompts = [workflow.with_set(base_strings + override_strings(params)) for params in combos]
        results = client.run_many(prompts, concurrency=concurrency, **kwargs)
        out.rows.extend(SweepRow(p, r) for p, r in zip(combos, results))
    out.wall = time.perf_counter() - start
    return out
