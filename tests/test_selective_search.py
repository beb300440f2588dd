"""Our Selective Search: the paper's features and grouping, the proposer contract, and bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detect.errors import UserError
from detect.proposals import build_proposer
from detect.proposals.selective_search import (
    COLOUR_BINS, COLOUR_SPACES, ColourSpaceImage, InitialRegions, SelectiveSearch, adjacent_pairs,
    gaussian_derivative_kernels, group, segment,
)

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
RECTANGLES = [(8, 10, 40, 50), (50, 12, 90, 44), (20, 60, 84, 92)]  # x1, y1, x2, y2


def rectangles_image(noise: int = 6, seed: int = 0) -> np.ndarray:
    """A 100x96 image of three flat-coloured rectangles on grey, with a little noise."""
    rng = np.random.default_rng(seed)
    image = np.full((100, 96, 3), 128, np.int16)
    for (x1, y1, x2, y2), colour in zip(RECTANGLES, [(220, 30, 30), (30, 200, 40), (40, 50, 210)]):
        image[y1:y2, x1:x2] = colour
    image += rng.integers(-noise, noise + 1, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_proposals_follow_the_contract_and_find_the_objects():
    image = rectangles_image()
    boxes, scores = SelectiveSearch("fast", min_box_size=5).propose(image)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) == len(scores) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 100).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (np.diff(scores) <= 0).all(), "scores must be sorted descending (rank order)"
    assert len(np.unique(boxes, axis=0)) == len(boxes), "duplicates must be removed"
    best = box_iou(torch.tensor(RECTANGLES, dtype=torch.float32), torch.from_numpy(boxes)).max(dim=1).values
    assert (best > 0.95).all(), best
    assert ((boxes == [0, 0, 96, 100]).all(axis=1)).any(), "the last merge covers the whole image"


def test_seeded_ranking_is_deterministic_and_the_seed_matters():
    image = rectangles_image()
    a = SelectiveSearch("single", seed=3, min_box_size=1).propose(image)
    b = SelectiveSearch("single", seed=3, min_box_size=1).propose(image)
    c = SelectiveSearch("single", seed=4, min_box_size=1).propose(image)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert {tuple(x) for x in a[0]} == {tuple(x) for x in c[0]}, "the seed changes the order, not the set"


def test_colour_histograms_equal_per_region_numpy_histograms():
    image = rectangles_image(noise=40)
    space = ColourSpaceImage.from_rgb(image, "HSV")
    labels = segment(space, 50, 0.8)
    regions = InitialRegions.from_labels(labels, space)
    for region in range(0, labels.max() + 1, max(1, labels.max() // 5)):
        mask = labels == region
        expected = np.concatenate([np.histogram(space.image[:, :, c][mask], COLOUR_BINS, (0, 1))[0] for c in range(3)])
        np.testing.assert_allclose(regions.colour[region], expected / expected.sum(), atol=1e-6)
        ys, xs = np.nonzero(mask)
        assert regions.sizes[region] == mask.sum()
        assert list(regions.boxes[region]) == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_texture_histograms_equal_eight_orientation_histograms():
    """8 orientations = the positive and negative halves of sigma=1 Gaussian derivatives on 4 axes."""
    from scipy import ndimage

    image = rectangles_image(noise=40)
    space = ColourSpaceImage.from_rgb(image, "Lab")
    labels = segment(space, 50, 0.8)
    regions = InitialRegions.from_labels(labels, space)
    responses = []
    for c in range(3):
        channel = space.image[:, :, c].astype(np.float64)
        gx = ndimage.gaussian_filter(channel, 1.0, order=(0, 1), mode="reflect", truncate=4.0)
        gy = ndimage.gaussian_filter(channel, 1.0, order=(1, 0), mode="reflect", truncate=4.0)
        for angle in np.arange(4) * np.pi / 4:
            steered = np.cos(angle) * gx + np.sin(angle) * gy
            for half in (np.maximum(steered, 0), np.maximum(-steered, 0)):
                responses.append(half / half.max())
    for region in range(0, labels.max() + 1, max(1, labels.max() // 5)):
        mask = labels == region
        expected = np.concatenate([np.histogram(r[mask], 10, (0, 1))[0] for r in responses]).astype(float)
        got = regions.texture[region]
        assert got.shape == (3 * 8 * 10,)
        # bins may differ only for values within float error of a bin edge
        assert np.abs(got - expected / expected.sum()).sum() < 0.02


def test_gaussian_derivative_kernel_is_the_derivative_of_the_gaussian():
    smooth, derivative = gaussian_derivative_kernels(1.0)
    assert smooth.sum() == pytest.approx(1.0)
    ramp = np.arange(len(smooth), dtype=np.float64)  # d/dx of x is 1
    assert float(np.dot(derivative, ramp)) == pytest.approx(1.0, abs=1e-3)


def test_adjacency_pairs_equal_brute_force():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=(7, 9))
    expected = set()
    for y in range(7):
        for x in range(9):
            for dy, dx in ((0, 1), (1, 0)):
                if y + dy < 7 and x + dx < 9 and labels[y, x] != labels[y + dy, x + dx]:
                    a, b = labels[y, x], labels[y + dy, x + dx]
                    expected.add((min(a, b), max(a, b)))
    assert {tuple(p) for p in adjacent_pairs(labels).tolist()} == expected


def test_grouping_merges_everything_into_one_region():
    image = rectangles_image(noise=30)
    space = ColourSpaceImage.from_rgb(image, "RGB")
    regions = InitialRegions.from_labels(segment(space, 50, 0.8), space)
    for terms in ("CTSF", "TSF", "F", "S"):
        boxes = group(regions, terms, float(image.shape[0] * image.shape[1]))
        assert len(boxes) == 2 * len(regions.sizes) - 1
        assert list(boxes[-1]) == [0, 0, 95, 99]


def test_first_merge_is_the_most_similar_pair_under_colour():
    """Two grey halves and one red quarter: C alone must first merge the two identical greys."""
    image = np.full((40, 60, 3), 100, np.uint8)
    image[:, 20:40] = 102
    image[:, 40:] = (200, 0, 0)
    labels = np.zeros((40, 60), np.int64)
    labels[:, 20:40] = 1
    labels[:, 40:] = 2
    regions = InitialRegions.from_labels(labels, ColourSpaceImage.from_rgb(image, "RGB"))
    boxes = group(regions, "C", 2400.0)
    assert list(boxes[3]) == [0, 0, 39, 39]


@pytest.mark.parametrize("space", COLOUR_SPACES)
def test_every_colour_space_yields_proposals(space):
    boxes, _ = SelectiveSearch("single", color_spaces=[space], ks=[50], min_box_size=1).propose(rectangles_image())
    assert len(boxes) > 3


def test_quality_mode_uses_more_strategies_than_fast():
    image = rectangles_image(noise=30)
    fast = SelectiveSearch("fast", min_box_size=1)
    quality = SelectiveSearch("quality", min_box_size=1)
    assert len(fast.hierarchies(image)) == 8
    assert len(quality.hierarchies(image)) == 5 * 4 * 4
    assert len(quality.propose(image)[0]) >= len(fast.propose(image)[0])


def test_min_box_size_and_max_proposals():
    image = rectangles_image(noise=30)
    boxes, scores = SelectiveSearch("fast", min_box_size=30, max_proposals=5).propose(image)
    assert len(boxes) == 5 and len(scores) == 5
    assert ((boxes[:, 2] - boxes[:, 0]) >= 30).all() and ((boxes[:, 3] - boxes[:, 1]) >= 30).all()


def test_large_images_are_segmented_downscaled_and_boxes_mapped_back():
    image = np.kron(rectangles_image(), np.ones((4, 4, 1), np.uint8))  # 400x384
    boxes, _ = SelectiveSearch("single", max_side=96, min_box_size=5).propose(image)
    assert ((boxes == [0, 0, 384, 400]).all(axis=1)).any()
    scaled = torch.tensor(RECTANGLES, dtype=torch.float32) * 4
    assert (box_iou(scaled, torch.from_numpy(boxes)).max(dim=1).values > 0.9).all()


def test_scale_k_segments_a_downscaled_image_as_the_small_image_with_k_scaled():
    """A 4x blow-up shrunk back to 100x96 is the small image again: scale_k must then use k / 16."""
    small = rectangles_image(noise=30)
    big = np.kron(small, np.ones((4, 4, 1), np.uint8))  # 400x384
    scaled_boxes, scaled_scores = SelectiveSearch("fast", ks=[160, 320], max_side=100, scale_k=True,
                                                  min_box_size=4).propose(big)
    boxes, scores = SelectiveSearch("fast", ks=[10, 20], min_box_size=1).propose(small)
    unscaled_boxes, _ = SelectiveSearch("fast", ks=[160, 320], max_side=100, min_box_size=4).propose(big)
    np.testing.assert_array_equal(scaled_boxes, boxes * 4)
    np.testing.assert_array_equal(scaled_scores, scores)
    assert len(unscaled_boxes) < len(scaled_boxes), "without scale_k, k=160/320 segments the small image coarsely"


def test_scale_k_changes_nothing_without_downscaling_and_is_recorded_only_when_on():
    image = rectangles_image(noise=30)
    plain, scaled = SelectiveSearch("single"), SelectiveSearch("single", scale_k=True)
    assert all(np.array_equal(a, b) for a, b in zip(plain.propose(image), scaled.propose(image)))
    assert "scale_k" not in plain.params() and scaled.params()["scale_k"] is True


def test_too_large_image_without_resize_is_a_clear_error():
    with pytest.raises(UserError, match="too large.*max_side"):
        SelectiveSearch("single", max_side=None).propose(np.zeros((8000, 5001, 3), np.uint8))


@pytest.mark.parametrize("make", [
    lambda img: img[:, :, 0],  # grayscale [H,W]
    lambda img: img[:, :, :1],  # [H,W,1]
    lambda img: np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2),  # RGBA
], ids=["gray", "gray1", "rgba"])
def test_grayscale_and_rgba_images_give_valid_boxes(make):
    boxes, scores = SelectiveSearch("single", min_box_size=5).propose(make(rectangles_image()))
    assert len(boxes) > 0 and boxes.shape[1] == 4 and (boxes[:, 2:] <= [96, 100]).all()


def test_flat_image_yields_the_whole_image_box():
    boxes, scores = SelectiveSearch("fast").propose(np.full((50, 70, 3), 90, np.uint8))
    assert boxes.tolist() == [[0, 0, 70, 50]] and scores.shape == (1,)


def test_one_pixel_image_gives_valid_empty_or_whole_boxes():
    assert SelectiveSearch("fast").propose(np.zeros((1, 1, 3), np.uint8))[0].shape == (0, 4)
    boxes, _ = SelectiveSearch("fast", min_box_size=0).propose(np.zeros((1, 1, 3), np.uint8))
    assert boxes.tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize("image, message", [
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((0, 10, 3), np.uint8), "shape"),
    (np.zeros((10,), np.uint8), "shape"),
])
def test_bad_images_are_clear_errors(image, message):
    with pytest.raises(UserError, match=message):
        SelectiveSearch("single").propose(image)


@pytest.mark.parametrize("params, message", [
    ({"strategy": "fastest"}, "strategy"),
    ({"color_spaces": ["XYZ"]}, "colour space"),
    ({"similarities": ["CQ"]}, "similarity"),
    ({"ks": [0]}, "positive"),
    ({"colour_space": ["HSV"]}, "color_spaces"),
    ({"scale_k": "maybe"}, "scale_k must be true or false"),
])
def test_bad_parameters_are_clear_errors(params, message):
    with pytest.raises(UserError, match=message):
        build_proposer("selective_search", **params)


def test_params_record_every_setting():
    params = build_proposer("selective_search", strategy="fast", ks=[50, 150]).params()
    assert params["ks"] == [50.0, 150.0] and params["color_spaces"] == ["HSV", "Lab"]
    assert params["similarities"] == ["CTSF", "TSF"] and params["sigma"] == 0.8
    assert {"min_box_size", "max_side", "max_proposals", "seed", "texture"} <= set(params)


@pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD not found beside the repository")
def test_fast_mode_covers_bccd_cells():
    from detect.data.spec import build_dataset

    dataset = build_dataset(f"voc:{BCCD}:test")
    index = 0
    boxes, _ = SelectiveSearch("fast").propose(dataset.load_image(index))
    gt = dataset.target(index)["boxes"]
    recall = (box_iou(gt, torch.from_numpy(boxes[:2000])).max(dim=1).values >= 0.5).float().mean().item()
    assert 300 < len(boxes) <= 4000
    assert recall >= 0.75
