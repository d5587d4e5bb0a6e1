"""More of ComfyUI's image, mask and latent nodes on tiny tensors, with values worked out by hand from ComfyUI's
definitions: ImageFlip, ImageRotate, ImageAddNoise, ImageScaleToMaxDimension, ResizeAndPadImage,
PorterDuffImageComposite, MaskPreview and the latent operations."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from nodegraph.nodes import batches as b
from nodegraph.nodes import compositing as c
from nodegraph.nodes import image_ops as io
from nodegraph.nodes import latent_ops as lo


def run(cls, **inputs):
    """The first output of one node run without an engine."""
    return cls().execute(None, **inputs)[0]


def _grid() -> torch.Tensor:
    """A 1 × 2 × 3 image whose red channel numbers the pixels row by row (0..5)."""
    img = torch.zeros(1, 2, 3, 3)
    img[..., 0] = torch.arange(6.0).reshape(2, 3)
    return img


def test_flip_and_rotate() -> None:
    img = _grid()
    assert run(io.ImageFlip, image=img, flip_method="x-axis: vertically")[0, ..., 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    assert run(io.ImageFlip, image=img, flip_method="y-axis: horizontally")[0, ..., 0].tolist() == [[2, 1, 0],
                                                                                                  [5, 4, 3]]
    # clockwise: the left column (0, 3) read bottom to top becomes the top row
    assert run(io.ImageRotate, image=img, rotation="90 degrees")[0, ..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert run(io.ImageRotate, image=img, rotation="180 degrees")[0, ..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert run(io.ImageRotate, image=img, rotation="270 degrees")[0, ..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert torch.equal(run(io.ImageRotate, image=img, rotation="none"), img)


def test_add_noise_is_the_seeds_gaussian_clipped() -> None:
    img = torch.full((2, 4, 5, 3), 0.5)
    out = run(io.ImageAddNoise, image=img, seed=3, strength=0.25)
    noise = torch.randn((2, 4, 5, 3), generator=torch.manual_seed(3))
    assert torch.allclose(out, (0.5 + 0.25 * noise).clamp(0, 1))
    assert torch.equal(out, run(io.ImageAddNoise, image=img, seed=3, strength=0.25))
    assert not torch.equal(out, run(io.ImageAddNoise, image=img, seed=4, strength=0.25))
    assert torch.equal(run(io.ImageAddNoise, image=img, seed=3, strength=0.0), img)


def test_scale_to_max_dimension() -> None:
    wide = torch.rand(1, 30, 60, 3)
    assert run(io.ImageScaleToMaxDimension, image=wide, upscale_method="area", largest_size=20).shape == (1, 10, 20, 3)
    tall = torch.rand(1, 45, 20, 3)  # 20 / 45 * 18 = 8
    assert run(io.ImageScaleToMaxDimension, image=tall, upscale_method="bilinear",
               largest_size=18).shape == (1, 18, 8, 3)
    square = torch.rand(2, 8, 8, 3)
    assert run(io.ImageScaleToMaxDimension, image=square, upscale_method="nearest-exact",
               largest_size=16).shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="largest_size"):
        run(io.ImageScaleToMaxDimension, image=square, upscale_method="area", largest_size=0)


def test_resize_and_pad_centres_the_fitted_image() -> None:
    img = torch.full((1, 10, 20, 3), 0.25)  # fits 8 × 4 inside 8 × 8: 2 rows of padding above and below
    out = run(io.ResizeAndPadImage, image=img, target_width=8, target_height=8, padding_color="white",
              interpolation="area")
    assert out.shape == (1, 8, 8, 3)
    assert torch.allclose(out[0, 2:6], torch.tensor(0.25)) and out[0, :2].eq(1).all() and out[0, 6:].eq(1).all()
    out = run(io.ResizeAndPadImage, image=img, target_width=10, target_height=4, padding_color="black",
              interpolation="bilinear")  # scale min(0.5, 0.4) = 0.4: 8 × 4, one column each side
    assert out.shape == (1, 4, 10, 3) and out[0, :, 0].eq(0).all() and out[0, :, 9].eq(0).all()
    assert torch.allclose(out[0, :, 1:9], torch.tensor(0.25))


def _pd(mode: str, src: float, src_mask: float, dst: float, dst_mask: float) -> tuple[float, float]:
    image, mask = run_both(mode, src, src_mask, dst, dst_mask)
    return float(image[0, 0, 0, 0]), float(mask[0, 0, 0])


def run_both(mode, src, src_mask, dst, dst_mask):
    def full(v, *shape):
        return torch.full(shape, float(v))

    return c.PorterDuffImageComposite().execute(None, source=full(src, 1, 2, 2, 3),
                                                source_alpha=full(src_mask, 1, 2, 2),
                                                destination=full(dst, 1, 2, 2, 3),
                                                destination_alpha=full(dst_mask, 1, 2, 2), mode=mode)


@pytest.mark.parametrize("mode,expected", [
    # source colour 0.8 at alpha 0.5 (mask 0.5), destination 0.2 at alpha 1 (mask 0)
    ("SRC_OVER", ((0.4 + 0.5 * 0.2) / 1.0, 0.0)),   # alpha 0.5 + 0.5 * 1 = 1
    ("DST_OVER", (0.2, 0.0)),                        # opaque destination hides the source
    ("SRC", (0.8, 0.5)),
    ("DST", (0.2, 0.0)),
    ("SRC_IN", (0.8, 0.5)),                          # alpha 0.5 * 1; colour 0.4 * 1 / 0.5
    ("DST_OUT", (0.2, 0.5)),                         # alpha (1 - 0.5) * 1; colour 0.5 * 0.2 / 0.5
    ("XOR", (0.2, 0.5)),                             # alpha 0 * 0.5 + 0.5 * 1; colour 0.5 * 0.2 / 0.5
    ("MULTIPLY", (0.4 * 0.2 / 0.5, 0.5)),
    ("SCREEN", (0.4 + 0.2 - 0.08, 0.0)),
    ("ADD", (0.6, 0.0)),
    ("CLEAR", (0.0, 1.0)),
])
def test_porter_duff_modes(mode: str, expected: tuple[float, float]) -> None:
    assert _pd(mode, 0.8, 0.5, 0.2, 0.0) == pytest.approx(expected, abs=1e-6)


def test_porter_duff_resizes_source_and_masks_to_the_destination() -> None:
    image, mask = c.PorterDuffImageComposite().execute(
        None, source=torch.ones(2, 4, 4, 3), source_alpha=torch.zeros(1, 4, 4), destination=torch.zeros(3, 8, 6, 3),
        destination_alpha=torch.ones(3, 2, 2), mode="SRC_OVER")
    assert image.shape == (1, 8, 6, 3) and mask.shape == (1, 8, 6)  # the shortest batch (1) sets the count
    assert torch.allclose(image, torch.ones(1, 8, 6, 3)) and torch.allclose(mask, torch.zeros(1, 8, 6))
    with pytest.raises(ValueError, match="channels"):
        c.PorterDuffImageComposite().execute(None, source=torch.ones(1, 2, 2, 4), source_alpha=torch.zeros(1, 2, 2),
                                             destination=torch.ones(1, 2, 2, 3),
                                             destination_alpha=torch.zeros(1, 2, 2), mode="SRC")


def test_mask_preview_saves_grey_images(config, run_graph) -> None:
    from nodegraph.testing import build_engine, build_registry

    engine = build_engine(config, build_registry())
    graph = {"m": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 8, "height": 6}},
             "p": {"class_type": "MaskPreview", "inputs": {"mask": ["m", 0]}}}
    result = run_graph(engine, graph)
    (entry,) = result.outputs["p"]["images"]
    assert entry["type"] == "temp" and entry["filename"].endswith(".png")
    path = engine.config.temp_dir / entry["subfolder"] / entry["filename"]
    with Image.open(path) as saved:
        assert saved.size == (8, 6) and saved.convert("RGB").getpixel((3, 3)) == (128, 128, 128)


# ---- latents --------------------------------------------------------------------------------------------------------


def _lat(t: torch.Tensor, **extra) -> dict:
    return {"samples": t, **extra}


def test_latent_interpolate_blends_direction_and_length() -> None:
    s1 = torch.zeros(1, 2, 1, 1)
    s1[0, 0] = 2.0  # length 2 along channel 0
    s2 = torch.zeros(1, 2, 1, 1)
    s2[0, 1] = 4.0  # length 4 along channel 1
    out = run(lo.LatentInterpolate, samples1=_lat(s1, batch_index=[3]), samples2=_lat(s2), ratio=0.5)
    # direction (1, 1) / sqrt(2), length 0.5 * 2 + 0.5 * 4 = 3
    assert out["samples"].flatten().tolist() == pytest.approx([3 / 2 ** 0.5, 3 / 2 ** 0.5])
    assert out["batch_index"] == [3]
    assert torch.allclose(run(lo.LatentInterpolate, samples1=_lat(s1), samples2=_lat(s2), ratio=1.0)["samples"], s1)
    zero = run(lo.LatentInterpolate, samples1=_lat(torch.zeros(1, 2, 1, 1)), samples2=_lat(torch.zeros(1, 2, 1, 1)),
               ratio=0.3)
    assert torch.equal(zero["samples"], torch.zeros(1, 2, 1, 1))  # 0/0 reads as 0, not NaN


def test_latent_concat_cut_and_cut_to_batch() -> None:
    a = torch.arange(8.0).reshape(1, 1, 2, 4)
    bb = -torch.ones(1, 1, 2, 2)
    assert run(lo.LatentConcat, samples1=_lat(a), samples2=_lat(bb), dim="x")["samples"].shape == (1, 1, 2, 6)
    before = run(lo.LatentConcat, samples1=_lat(a), samples2=_lat(bb), dim="-x")["samples"]
    assert before[0, 0, 0].tolist() == [-1, -1, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="differ outside"):
        run(lo.LatentConcat, samples1=_lat(a), samples2=_lat(bb), dim="y")
    assert run(lo.LatentCut, samples=_lat(a), dim="x", index=1, amount=2)["samples"][0, 0].tolist() == [[1, 2], [5, 6]]
    assert run(lo.LatentCut, samples=_lat(a), dim="x", index=-1, amount=5)["samples"][0, 0].tolist() == [[3], [7]]
    assert run(lo.LatentCut, samples=_lat(a), dim="x", index=9, amount=3)["samples"][0, 0].tolist() == [[3], [7]]
    assert run(lo.LatentCut, samples=_lat(a), dim="y", index=0, amount=1)["samples"].shape == (1, 1, 1, 4)
    cut = run(lo.LatentCutToBatch, samples=_lat(a), dim="x", slice_size=2)["samples"]
    assert cut.shape == (2, 1, 2, 2) and cut[1, 0].tolist() == [[2, 3], [6, 7]]
    odd = run(lo.LatentCutToBatch, samples=_lat(torch.rand(1, 1, 2, 5)), dim="x", slice_size=2)["samples"]
    assert odd.shape == (2, 1, 2, 2)  # the fifth column is dropped
    video = torch.rand(1, 4, 6, 2, 2)  # [B, C, t, h, w]: t is the third dimension from the end
    assert run(lo.LatentCutToBatch, samples=_lat(video), dim="t", slice_size=3)["samples"].shape == (2, 4, 3, 2, 2)
    same = _lat(a)
    assert run(lo.LatentCutToBatch, samples=same, dim="t", slice_size=1) is same  # t is the channel axis of 4-D


def test_latent_batch_seed_behavior() -> None:
    lat = _lat(torch.zeros(3, 4, 2, 2), batch_index=[5, 6, 7])
    assert run(lo.LatentBatchSeedBehavior, samples=lat, seed_behavior="fixed")["batch_index"] == [5, 5, 5]
    assert "batch_index" not in run(lo.LatentBatchSeedBehavior, samples=lat, seed_behavior="random")
    assert run(lo.LatentBatchSeedBehavior, samples=_lat(torch.zeros(2, 4, 2, 2)),
               seed_behavior="fixed")["batch_index"] == [0, 0]
    assert lat["batch_index"] == [5, 6, 7]


def test_latent_operations() -> None:
    torch.manual_seed(0)
    lat = torch.randn(2, 4, 6, 6)
    op = run(lo.LatentOperationTonemapReinhard, multiplier=1.0)
    out = run(lo.LatentApplyOperation, samples=_lat(lat), operation=op)["samples"]
    length = torch.linalg.vector_norm(lat, dim=1, keepdim=True)
    top = length.std(dim=(1, 2, 3), keepdim=True) * 5 + length.mean(dim=(1, 2, 3), keepdim=True)
    new_length = torch.linalg.vector_norm(out, dim=1, keepdim=True)
    assert torch.allclose(new_length, length / (length / top + 1.0), atol=1e-5)  # Reinhard: L / (1 + L / top)
    assert torch.allclose(out / new_length, lat / length, atol=1e-5)  # directions kept
    sharpen = run(lo.LatentOperationSharpen, sharpen_radius=2, sigma=1.0, alpha=0.0)
    assert torch.allclose(run(lo.LatentApplyOperation, samples=_lat(lat), operation=sharpen)["samples"], lat,
                          atol=1e-5)  # alpha 0: the identity kernel
    flat = torch.ones(1, 4, 8, 8)
    strong = run(lo.LatentOperationSharpen, sharpen_radius=2, sigma=1.0, alpha=1.0)
    assert torch.allclose(run(lo.LatentApplyOperation, samples=_lat(flat), operation=strong)["samples"], flat,
                          atol=1e-4)  # a sharpening kernel sums to 1: flat stays flat
    edged = flat.clone()
    edged[..., 4:] = 2.0
    result = run(lo.LatentApplyOperation, samples=_lat(edged), operation=strong)["samples"]
    assert torch.allclose(result, edged, atol=1e-4)  # lengths kept, directions equal everywhere: unchanged
    mixed = torch.zeros(1, 2, 8, 8)
    mixed[:, 0, :, :4], mixed[:, 1, :, 4:] = 1.0, 1.0
    sharp = run(lo.LatentApplyOperation, samples=_lat(mixed), operation=strong)["samples"]
    assert sharp[0, 0, 4, 3] > 1.0 and sharp[0, 1, 4, 3] < 0.0  # overshoot at the edge: sharpened
    with pytest.raises(ValueError, match="image latents"):
        run(lo.LatentApplyOperation, samples=_lat(torch.zeros(1, 4, 2, 2, 2)), operation=strong)


def test_rebatch_latents_groups_by_size_and_keeps_indices_and_masks() -> None:
    small = [_lat(torch.full((2, 4, 2, 2), float(i))) for i in range(2)]
    masked = _lat(torch.zeros(1, 4, 2, 2), noise_mask=torch.zeros(1, 16, 16))
    big = _lat(torch.ones(3, 4, 3, 3))
    (out,) = b.RebatchLatents().execute(None, latents=[*small, masked, big], batch_size=[3])
    assert [o["samples"].shape[0] for o in out] == [3, 2, 3]
    assert [o["batch_index"] for o in out] == [[0, 1, 2], [3, 4], [5, 6, 7]]
    assert "noise_mask" not in out[0] and out[1]["noise_mask"].shape == (2, 1, 16, 16)
    assert out[1]["noise_mask"][0].eq(1).all() and out[1]["noise_mask"][1].eq(0).all()
    assert out[2]["samples"].shape[-1] == 3 and "noise_mask" not in out[2]


def test_replace_video_latent_frames() -> None:
    dest = _lat(torch.zeros(1, 2, 5, 2, 2), batch_index=[4])
    src = _lat(torch.ones(1, 2, 2, 2, 2))
    node = b.ReplaceVideoLatentFrames()
    (out,) = node.execute(None, destination=dest, index=-2, source=src)
    assert out["samples"][0, 0, :, 0, 0].tolist() == [0, 0, 0, 1, 1] and "batch_index" not in out  # source's keys
    (out,) = node.execute(None, destination=dest, index=1, source=src)
    assert out["samples"][0, 0, :, 0, 0].tolist() == [0, 1, 1, 0, 0] and dest["samples"].eq(0).all()
    assert node.execute(None, destination=dest, index=4, source=src)[0] is dest  # does not fit: unchanged
    assert node.execute(None, destination=dest, index=0)[0] is dest
    with pytest.raises(ValueError, match="video latents"):
        node.execute(None, destination=_lat(torch.zeros(1, 4, 8, 8)), index=0, source=_lat(torch.zeros(1, 4, 8, 8)))
