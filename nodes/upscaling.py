"""ImageUpscaleWithModel: run an upscale model (a spandrel ImageModelDescriptor) over images, in tiles if large."""

from __future__ import annotations

from typing import Any, Callable

from nodegraph.api import Link, Node, Output, hookimpl

TILE = 512
OVERLAP = 32


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _feather(h: int, w: int, ramp: int) -> Any:
    """A weight window rising linearly over ``ramp`` pixels at every edge (never zero)."""
    import torch

    def axis(n: int) -> Any:
        i = torch.arange(n, dtype=torch.float32)
        edge = torch.minimum(i + 1, n - i) / float(max(ramp, 1))
        return edge.clamp(max=1.0)

    return axis(h)[:, None] * axis(w)[None, :]


def upscale_tiled(run: Callable[[Any], Any], image: Any, scale: int, tile: int = TILE,
                  overlap: int = OVERLAP, check: Callable[[], None] | None = None) -> Any:
    """Apply ``run`` (NCHW → NCHW ×scale) over overlapping tiles of ``image``, blending the seams."""
    import torch

    _, c, h, w = image.shape
    if h <= tile and w <= tile:
        return run(image).float()
    out = None
    weight = torch.zeros(1, 1, h * scale, w * scale)
    for y in _starts(h, tile, overlap):
        for x in _starts(w, tile, overlap):
            if check is not None:
                check()
            patch = image[:, :, y:y + tile, x:x + tile]
            up = run(patch).float().cpu()
            if out is None:
                out = torch.zeros(image.shape[0], up.shape[1], h * scale, w * scale)
            win = _feather(up.shape[2], up.shape[3], overlap * scale)
            ys, xs = y * scale, x * scale
            out[:, :, ys:ys + up.shape[2], xs:xs + up.shape[3]] += up * win
            weight[:, :, ys:ys + up.shape[2], xs:xs + up.shape[3]] += win
    assert out is not None
    return out / weight


class ImageUpscaleWithModel(Node):
    """Upscale images with an upscale model (ESRGAN and the like), tile by tile for large images."""

    DISPLAY_NAME = "Upscale Image (using Model)"
    CATEGORY = "image/upscaling"
    INPUTS = {"upscale_model": Link("UPSCALE_MODEL"), "image": Link("IMAGE")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, upscale_model: Any, image: Any):
        devices = ctx.devices
        with ctx.models.use(upscale_model) as (upscale_model,):
            return self._upscale(ctx, devices, upscale_model, image)

    @staticmethod
    def _upscale(ctx: Any, devices: Any, upscale_model: Any, image: Any) -> tuple[Any]:
        import torch

        module = getattr(upscale_model, "model", None)
        scale = int(getattr(upscale_model, "scale", 1))
        half_ok = bool(getattr(upscale_model, "supports_half", True))
        with devices.use(module) if module is not None else _nullcontext(), torch.no_grad():
            if module is not None and not half_ok:
                module.to(dtype=torch.float32)
            dtype = next(module.parameters()).dtype if module is not None else torch.float32
            x = image[..., :3].movedim(-1, 1)

            def run(patch: Any) -> Any:
                return upscale_model(patch.to(devices.device, dtype))

            tile = TILE
            while True:
                try:
                    out = upscale_tiled(run, x, scale, tile, OVERLAP, ctx.check_interrupt)
                    break
                except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
                    if tile <= 128:
                        raise
                    devices.empty_cache()
                    tile //= 2
        return (out.clamp(0.0, 1.0).movedim(1, -1).contiguous(),)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


@hookimpl
def nodegraph_nodes():
    """The model upscaling node."""
    return [ImageUpscaleWithModel]
