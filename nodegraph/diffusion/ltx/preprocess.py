"""LTXVPreprocess: give a still image the look of a video frame (one H.264 encode/decode at a CRF), which LTX-Video
was trained on, so image-to-video starts from a frame it expects. PyAV's bundled FFmpeg (libx264) does the work."""

from __future__ import annotations

import io
from typing import Any


def _roundtrip(pixels: Any, crf: int) -> Any:
    """uint8 [H, W, 3] (even sizes) → the same frame after H.264 at ``crf`` (yuv420p, preset veryfast)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = int(pixels.shape[0]), int(pixels.shape[1])
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        stream = next(s for s in container.streams if s.type == "video")
        return next(container.decode(stream)).to_ndarray(format="rgb24")


def ltx_preprocess(image: Any, img_compression: int) -> Any:
    """IMAGE [B, H, W, C] → each image through one H.264 frame at CRF ``img_compression`` (0: unchanged); sizes
    are cropped to even numbers, as the codec needs."""
    import torch

    if int(img_compression) == 0:
        return image
    out = []
    for one in image:
        h, w = (one.shape[0] // 2) * 2, (one.shape[1] // 2) * 2
        if h == 0 or w == 0:
            raise ValueError(f"LTXVPreprocess: a {one.shape[1]}×{one.shape[0]} image is too small for H.264; use "
                             "an image of at least 2×2 pixels")
        pixels = (one[:h, :w, :3] * 255.0).byte().cpu().numpy()
        out.append(torch.from_numpy(_roundtrip(pixels, int(img_compression))).to(image.dtype) / 255.0)
    return torch.stack(out)


__all__ = ["ltx_preprocess"]
