"""MultiBox priors: k-means centres of the training boxes in normalised coordinates."""
from pathlib import Path

import numpy as np
import pytest

from detect.data.dataset import DetectionDataset, ImageRecord
from detect.errors import UserError
from detect.proposals.multibox import dataset_normalised_boxes, kmeans_priors


def record(name, width, height, boxes, iscrowd=None):
    n = len(boxes)
    return ImageRecord(name, Path(f"/nonexistent/{name}.jpg"), width, height, np.array(boxes, dtype=np.float32),
                       np.ones(n), np.zeros(n, bool), np.zeros(n, bool) if iscrowd is None else np.array(iscrowd))


def test_training_boxes_are_divided_by_their_image_size_without_crowd_or_empty_boxes():
    dataset = DetectionDataset([
        record("a", 200, 100, [[20, 10, 100, 50], [0, 0, 200, 100]], iscrowd=[False, True]),
        record("b", 50, 50, [[5, 5, 5, 20], [10, 20, 30, 50]]),  # the first has zero width
    ], classes=["cell"])
    boxes = dataset_normalised_boxes(dataset)
    assert np.allclose(boxes, [[0.1, 0.1, 0.5, 0.5], [0.2, 0.4, 0.6, 1.0]])


def test_kmeans_centres_of_two_clusters_are_their_means():
    a = np.array([0.1, 0.1, 0.3, 0.3])
    b = np.array([0.5, 0.4, 0.9, 0.7])
    offsets = np.array([[0.01, -0.02, 0.0, 0.01], [0.02, 0.0, -0.01, 0.0], [0.0, 0.01, 0.02, -0.01]])
    # each cluster holds a +offset and -offset pair per row, so its mean is exactly the centre
    boxes = np.concatenate([a + offsets, a - offsets, b + offsets, b - offsets])
    priors = kmeans_priors(boxes, 2, seed=0)
    assert priors.dtype == np.float32 and priors.shape == (2, 4)
    assert np.allclose(priors, [a, b], atol=1e-6)  # sorted by (y1, x1): a first


def test_priors_are_deterministic_for_a_seed():
    boxes = np.random.default_rng(3).random((300, 4))
    assert np.array_equal(kmeans_priors(boxes, 16, seed=5), kmeans_priors(boxes, 16, seed=5))


def test_too_few_boxes_for_the_priors_is_a_clear_error():
    with pytest.raises(UserError, match="cannot cluster 3 training boxes into 8 priors"):
        kmeans_priors(np.random.default_rng(0).random((3, 4)), 8)
