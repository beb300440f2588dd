"""Our Felzenszwalb segmentation (shared sorted edge graph, numba passes) against skimage's felzenszwalb."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.segmentation import felzenszwalb

from detect.proposals.graph_segmentation import EdgeGraph
from detect.proposals.selective_search import ColourSpaceImage, convert_colour_space, segment

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
BCCD_IMAGES = ["BloodImage_00007", "BloodImage_00016"]


def skimage_labels(image: np.ndarray, k: float, sigma: float = 0.8) -> np.ndarray:
    axis = None if image.shape[2] == 1 else -1
    pixels = image[:, :, 0] if axis is None else image
    return felzenszwalb(pixels, scale=k, sigma=sigma, min_size=int(k), channel_axis=axis)


@pytest.mark.parametrize("name", BCCD_IMAGES)
@pytest.mark.parametrize("space", ["HSV", "Lab", "I"])
def test_labels_equal_skimage_on_bccd_images(name, space):
    """Label for label, for every k of `fast` and `quality`, from one shared edge graph per image."""
    path = BCCD / "JPEGImages" / f"{name}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    image = convert_colour_space(rgb, space)
    graph = EdgeGraph.from_image(image, 0.8)
    for k in (50, 100, 150, 300):
        ours, theirs = graph.segment(k, k), skimage_labels(image, k)
        assert ours.dtype == np.int64 and ours.shape == theirs.shape
        assert theirs.max() > 5, "a real segmentation, not a trivial one"
        assert np.array_equal(ours, theirs), (name, space, k, ours.max() + 1, theirs.max() + 1,
                                              float((ours != theirs).mean()))


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (9, 1, 3), (2, 2, 3), (7, 11, 1), (40, 30, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_labels_equal_skimage_on_random_images_of_odd_shapes(shape, seed):
    """Thin and tiny images exercise every edge block (right, down, diagonals) and their ends."""
    image = np.random.default_rng(seed).random(shape).astype(np.float32)
    for k, sigma in ((1, 0.0), (5, 0.8), (50, 0.8), (5, 2.0)):
        graph = EdgeGraph.from_image(image, sigma)
        assert np.array_equal(graph.segment(k, k), skimage_labels(image, k, sigma)), (shape, k, sigma)


def test_min_size_is_enforced_and_k_changes_the_result():
    image = np.random.default_rng(2).random((60, 80, 3)).astype(np.float32)  # noise: many tiny segments
    graph = EdgeGraph.from_image(image, 0.8)
    small, large = graph.segment(5, 1), graph.segment(5, 40)
    assert np.bincount(large.ravel()).min() >= 40
    assert small.max() > large.max()
    assert not np.array_equal(graph.segment(50, 1), small)


def test_selective_search_segment_shares_a_graph_with_the_same_result():
    rgb = (np.random.default_rng(3).random((50, 64, 3)) * 255).astype(np.uint8)
    space = ColourSpaceImage.from_rgb(rgb, "Lab")
    graph = EdgeGraph.from_image(space.image, 0.8)
    for k in (50, 100):
        assert np.array_equal(segment(space, k, 0.8, graph), segment(space, k, 0.8))
        assert np.array_equal(segment(space, k, 0.8), skimage_labels(space.image, k))


def test_uint8_input_is_scaled_as_skimage_scales_it():
    image = (np.random.default_rng(4).random((30, 41, 3)) * 255).astype(np.uint8)
    for k in (10, 50):
        assert np.array_equal(EdgeGraph.from_image(image).segment(k, k), skimage_labels(image, k))
