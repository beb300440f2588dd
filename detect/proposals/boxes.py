"""What every proposer does to its raw boxes: check the input image, de-duplicate, drop tiny boxes, score."""
from __future__ import annotations

import cv2
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


def downscale_to_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (area interpolation) so the longer side is at most `max_side`; None keeps the size."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def map_back(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """xyxy boxes on an image of (height, width) `from_size` -> on `to_size`, clipped to it."""
    (fh, fw), (th, tw) = from_size, to_size
    scale = np.array([tw / fw, th / fh, tw / fw, th / fh])
    return np.clip(boxes * scale, 0, [tw, th, tw, th])
