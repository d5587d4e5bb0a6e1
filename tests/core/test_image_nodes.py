"""Image tensor nodes (nodes/compositing.py, ImageBlend) on tiny tensors, values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from nodegraph.nodes import compositing as c
from nodegraph.nodes.image_io import ImageBlend


def run(cls, **inputs):
    """The outputs of one node run without an engine (a single output unwrapped)."""
    out = cls().execute(None, **inputs)
    return out[0] if len(out) == 1 else out


def grey(value: float, h: int = 2, w: int = 2, b: int = 1) -> torch.Tensor:
    return torch.full((b, h, w, 3), value)


@pytest.mark.parametrize("mode,expected", [("normal", 0.5), ("multiply", 0.125), ("screen", 0.625),
                                           ("overlay", 0.25), ("difference", 0.0), ("soft_light", 0.25)])
def test_blend_modes(mode: str, expected: float) -> None:
    # image1 = 0.25, image2 = 0.5, factor 1 → the mode's own value
    # overlay: 2ab = 0.25; soft_light with b = 0.5: a - 0 = 0.25; difference: a - b clamped at 0
    out = run(ImageBlend, image1=grey(0.25), image2=grey(0.5), blend_factor=1.0, blend_mode=mode)
    assert torch.allclose(out, torch.full_like(out, expected))


def test_blend_factor_and_resize() -> None:
    out = run(ImageBlend, image1=grey(0.0, 4, 4), image2=grey(1.0, 2, 2), blend_factor=0.25, blend_mode="normal")
    assert out.shape == (1, 4, 4, 3) and torch.allclose(out, torch.full_like(out, 0.25))


def test_crop_and_repeat() -> None:
    image = torch.arange(16.0).reshape(1, 4, 4, 1).expand(1, 4, 4, 3)
    out = run(c.ImageCrop, image=image, width=2, height=1, x=1, y=2)
    assert out[0, :, :, 0].tolist() == [[9.0, 10.0]]
    assert run(c.RepeatImageBatch, image=image, amount=3).shape == (3, 4, 4, 3)


def test_pad_for_outpaint_mask_and_feather() -> None:
    image, mask = run(c.ImagePadForOutpaint, image=grey(1.0, 6, 6), left=2, top=0, right=0, bottom=0, feathering=2)
    assert image.shape == (1, 6, 8, 3) and image[0, 0, 0, 0] == 0.5 and image[0, 0, 2, 0] == 1.0
    assert mask.shape == (1, 6, 8)
    assert mask[0, 0, :5].tolist() == [1.0, 1.0, 1.0, 0.25, 0.0]  # column 0 of the old image: ((2-0)/2)^2; 1: 0.25


def test_composite_masked_pastes_through_mask() -> None:
    dest, src = grey(0.0, 4, 4), grey(1.0, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    out = run(c.ImageCompositeMasked, destination=dest, source=src, x=1, y=1, resize_source=False, mask=mask)
    assert out[0, :, :, 0].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0.5, 1, 0], [0, 0, 0, 0]]
    assert torch.equal(dest, grey(0.0, 4, 4))  # input untouched


def test_total_pixels_and_size() -> None:
    out = run(c.ImageScaleToTotalPixels, image=grey(0.5, 2, 4), upscale_method="nearest-exact", megapixels=0.01)
    # 0.01 MP = 10485 px; sqrt(10485/8) = 36.2 → 145 x 72
    assert out.shape == (1, 72, 145, 3)
    assert run(c.GetImageSize, image=grey(0.0, 3, 5, b=2)) == (5, 3, 2)


def test_blur_keeps_flat_images_and_smooths_a_dot() -> None:
    assert torch.allclose(run(c.ImageBlur, image=grey(0.5, 5, 5), blur_radius=1, sigma=1.0), grey(0.5, 5, 5))
    dot = torch.zeros(1, 5, 5, 3)
    dot[0, 2, 2] = 1.0
    out = run(c.ImageBlur, image=dot, blur_radius=1, sigma=1.0)
    kernel = c.gaussian_kernel(3, 1.0)
    assert torch.allclose(out[0, 1:4, 1:4, 0], kernel.flip(0).flip(1)) and out.sum() == pytest.approx(3.0)


def test_sharpen_leaves_flat_images_and_boosts_edges() -> None:
    assert torch.allclose(run(c.ImageSharpen, image=grey(0.5, 5, 5), sharpen_radius=1, sigma=1.0, alpha=1.0),
                          grey(0.5, 5, 5), atol=1e-5)
    dot = torch.full((1, 5, 5, 3), 0.5)
    dot[0, 2, 2] = 0.6
    out = run(c.ImageSharpen, image=dot, sharpen_radius=1, sigma=1.0, alpha=1.0)
    assert out[0, 2, 2, 0] > 0.6 and out[0, 1, 2, 0] < 0.5


def test_quantize_to_two_colours() -> None:
    image = torch.zeros(1, 2, 2, 3)
    image[0, 0] = 1.0
    for dither in ("none", "floyd-steinberg", "bayer-2"):
        out = run(c.ImageQuantize, image=image, colors=2, dither=dither)
        assert sorted(set(out[0, :, :, 0].flatten().tolist())) == [0.0, 1.0]


def test_alpha_join_and_split() -> None:
    rgba = run(c.JoinImageWithAlpha, image=grey(0.5), alpha=torch.tensor([[[0.0, 1.0], [0.25, 0.5]]]))
    assert rgba.shape == (1, 2, 2, 4) and rgba[0, :, :, 3].tolist() == [[1.0, 0.0], [0.75, 0.5]]
    rgb, mask = run(c.SplitImageWithAlpha, image=rgba)
    assert rgb.shape == (1, 2, 2, 3) and mask[0].tolist() == [[0.0, 1.0], [0.25, 0.5]]
    assert run(c.SplitImageWithAlpha, image=grey(0.5))[1].eq(0).all()
    two = run(c.JoinImageWithAlpha, image=grey(0.5, b=2), alpha=torch.zeros(2, 2))  # one [H, W] mask for both
    assert two.shape == (2, 2, 2, 4) and two[..., 3].eq(1).all()


def test_blend_with_rgba_image2_keeps_rgb() -> None:
    rgba = torch.cat((grey(1.0), torch.zeros(1, 2, 2, 1)), dim=-1)
    out = run(ImageBlend, image1=grey(0.0), image2=rgba, blend_factor=0.5, blend_mode="normal")
    assert out.shape == (1, 2, 2, 3) and out.eq(0.5).all()


def test_image_stitch_directions_spacing_and_sizes() -> None:
    from nodegraph.nodes.image_ops import ImageStitch

    a, b = grey(0.25, 2, 3), grey(0.75, 2, 3, b=2)
    assert run(ImageStitch, image1=a, direction="right", match_image_size=True, spacing_width=0,
               spacing_color="white") is a  # no image2: image1 unchanged
    out = run(ImageStitch, image1=a, image2=b, direction="right", match_image_size=True, spacing_width=0,
              spacing_color="white")
    # image1's batch of 1 repeats to 2; image2 to the right
    assert out.shape == (2, 2, 6, 3) and out[:, :, :3].eq(0.25).all() and out[:, :, 3:].eq(0.75).all()
    out = run(ImageStitch, image1=a, image2=b, direction="up", match_image_size=False, spacing_width=3,
              spacing_color="red")
    # spacing widened to even (4 rows), red; image2 above image1
    assert out.shape == (2, 8, 3, 3)
    assert out[:, :2].eq(0.75).all() and out[:, 6:].eq(0.25).all()
    assert out[0, 2:6, :, 0].eq(1.0).all() and out[0, 2:6, :, 1:].eq(0.0).all()
    # without size matching, the smaller image is padded (centred) with the spacing grey
    tall = grey(0.5, 4, 2)
    out = run(ImageStitch, image1=a, image2=tall, direction="left", match_image_size=False, spacing_width=0,
              spacing_color="black")
    assert out.shape == (1, 4, 5, 3) and out[0, 0, 2:].eq(0.0).all() and out[0, 1, 2:].eq(0.25).all()
    # with size matching, image2 is scaled to image1's height keeping its aspect ratio
    out = run(ImageStitch, image1=a, image2=tall, direction="right", match_image_size=True, spacing_width=0,
              spacing_color="white")
    assert out.shape == (1, 2, 4, 3)
    # an RGBA image stitched to RGB: the RGB side gains an opaque alpha
    rgba = torch.cat([grey(0.5, 2, 3), torch.zeros(1, 2, 3, 1)], -1)
    out = run(ImageStitch, image1=a, image2=rgba, direction="down", match_image_size=True, spacing_width=0,
              spacing_color="white")
    assert out.shape == (1, 4, 3, 4) and out[0, :2, :, 3].eq(1.0).all() and out[0, 2:, :, 3].eq(0.0).all()
