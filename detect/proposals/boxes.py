"""What every proposer does to its raw boxes: check the input image, de-duplicate, drop tiny boxes, score."""
from __future__ import annotations

import numpy as np

from detect.data.images import to_rgb_uint8
from detect.errors import UserError


def as_rgb_image(image: np.ndarray) -> np.ndarray:
    """Grayscale / RGBA / [H,W,1] uint8 -> uint8 RGB [H,W,3]; anything else is a clear error."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(f"proposers take uint8 RGB images, got dtype {image.dtype} of shape {image.shape}")
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise UserError(f"proposers take images of shape [H,W,3] (or [H,W], [H,W,4]), got {image.shape}")
    try:
        return to_rgb_uint8(image)
    except ValueError as err:
        raise UserError(f"proposers take uint8 RGB images: {err}") from None


def dedupe_boxes_keep_first(boxes: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct box, in the original (rank) order."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(boxes, axis=0, return_index=True)
    return np.sort(first)


def filter_small_boxes(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Boolean mask of boxes at least `min_size` wide and high (R-CNN drops those under 20 px)."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


def rank_scores(values: np.ndarray) -> np.ndarray:
    """Ascending rank values (lower = better) -> float32 scores in (0, 1], descending."""
    return (1.0 / (1.0 + np.asarray(values, dtype=np.float64))).astype(np.float32)
