"""Selective Search ∪ MultiBox: merge order, exact and near-duplicate removal, the k x 2 recipe."""
import numpy as np
import pytest

from detect.errors import UserError
from detect.proposals.combined import CombinedProposer, merge_proposals


def test_merge_keeps_order_and_drops_exact_duplicates_keeping_the_first():
    learned = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    segmented = np.array([[1, 1, 8, 8], [0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    boxes, scores = merge_proposals([learned, segmented])
    assert boxes.tolist() == [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 8, 8], [30, 30, 40, 40]]
    assert scores.dtype == np.float32 and np.all(np.diff(scores) < 0)  # best first


def test_merge_with_iou_threshold_drops_near_duplicates_of_earlier_boxes():
    learned = np.array([[0, 0, 100, 100]], np.float32)
    segmented = np.array([[0, 0, 100, 99],      # IoU 0.99 with the first: dropped at 0.95
                          [0, 0, 100, 90],      # IoU 0.90: kept
                          [200, 200, 300, 300]], np.float32)
    boxes, _ = merge_proposals([learned, segmented], dedupe_iou=0.95)
    assert boxes.tolist() == [[0, 0, 100, 100], [0, 0, 100, 90], [200, 200, 300, 300]]
    boxes, _ = merge_proposals([learned, segmented], dedupe_iou=None)
    assert len(boxes) == 4


def test_merge_of_nothing_is_empty():
    boxes, scores = merge_proposals([np.zeros((0, 4)), np.zeros((0, 4))], dedupe_iou=0.9)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_bad_combined_settings_are_clear_errors():
    with pytest.raises(UserError, match="top_m"):
        CombinedProposer("unused.pth", top_m=-1)
    with pytest.raises(UserError, match="dedupe_iou"):
        CombinedProposer("unused.pth", dedupe_iou=1.5)
    with pytest.raises(UserError, match="strategy"):
        CombinedProposer("unused.pth", strategy="fastest")
