"""The `selectivesearch` package (pip) behind our proposer interface, to compare with what users know.

The package returns its regions in creation order (the initial segments first, then each merge)
as rects (x, y, w, h) of inclusive pixel extents; we keep that order as the rank, drop duplicates
and boxes under `min_box_size`, as our own implementation does. It is slow (per-pixel Python
loops and an all-pairs neighbour search): fine for comparisons on a few images.
"""
from __future__ import annotations

import numpy as np
import selectivesearch

from detect.errors import UserError
from detect.proposals.boxes import (as_rgb_image, dedupe_boxes_keep_first, downscale_to_max_side, filter_small_boxes,
                                    map_back, rank_scores)


class SelectiveSearchPackage:
    """`selectivesearch.selective_search(image, scale, sigma, min_size)` as a proposer."""

    method = "selectivesearch"

    def __init__(self, scale: float = 100, sigma: float = 0.8, min_size: int = 100, min_box_size: float = 20,
                 max_side: int | None = 1000, max_proposals: int | None = None) -> None:
        if scale <= 0 or sigma < 0 or min_size < 0:
            raise UserError(f"selectivesearch needs scale > 0, sigma >= 0, min_size >= 0; got {scale}, {sigma}, {min_size}")
        self.scale = float(scale)
        self.sigma = float(sigma)
        self.min_size = int(min_size)
        self.min_box_size = float(min_box_size)
        self.max_side = None if max_side in (None, 0) else int(max_side)
        self.max_proposals = None if max_proposals in (None, 0) else int(max_proposals)

    def params(self) -> dict:
        return {"scale": self.scale, "sigma": self.sigma, "min_size": self.min_size,
                "min_box_size": self.min_box_size, "max_side": self.max_side,
                "max_proposals": self.max_proposals,
                "package_version": getattr(selectivesearch, "__version__", "unknown")}

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = as_rgb_image(image)
        height, width = image.shape[:2]
        image = downscale_to_max_side(image, self.max_side)
        _, regions = selectivesearch.selective_search(image, scale=self.scale, sigma=self.sigma,
                                                      min_size=self.min_size)
        rects = np.array([r["rect"] for r in regions], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:] + 1], axis=1)  # inclusive -> xyxy
        boxes = boxes[dedupe_boxes_keep_first(boxes)]
        boxes = map_back(boxes, image.shape[:2], (height, width))
        boxes = boxes[filter_small_boxes(boxes, self.min_box_size)]
        if self.max_proposals is not None:
            boxes = boxes[: self.max_proposals]
        return boxes.astype(np.float32), rank_scores(np.arange(len(boxes)))
