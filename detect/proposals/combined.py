"""Selective Search ∪ MultiBox: GoogLeNet's ILSVRC-2014 proposals (Szegedy et al., section 6).

Selective Search with doubled superpixel size (k x 2: half the proposals) plus the top-M MultiBox
boxes (M = 200): MultiBox adds the boxes the segmentation misses, at a fraction of the cost. The
union is ordered MultiBox first (ranked by learned confidence) then Selective Search (its seeded
pseudo-random ranking), exact duplicates dropped, and optionally any box overlapping an earlier one
by IoU > `dedupe_iou`.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from detect.errors import UserError
from detect.proposals.boxes import dedupe_boxes_keep_first, rank_scores
from detect.proposals.multibox import MultiBoxProposer
from detect.proposals.selective_search import STRATEGIES, SelectiveSearch


def merge_proposals(parts: list[np.ndarray], dedupe_iou: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ranked box arrays [N_i,4] in order -> (boxes [N,4], scores 1/(1+rank) [N]), deduplicated.

    A later box is dropped if it equals an earlier one, or (with dedupe_iou) overlaps a kept earlier
    one by IoU > dedupe_iou; the first occurrence wins, so the order of `parts` is the priority.
    """
    boxes = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1, 4) for p in parts])
    boxes = boxes[dedupe_boxes_keep_first(boxes)]
    if dedupe_iou is not None and len(boxes):
        priority = torch.arange(len(boxes), 0, -1, dtype=torch.float32)
        keep = np.sort(nms(torch.from_numpy(boxes), priority, float(dedupe_iou)).numpy())
        boxes = boxes[keep]
    return boxes, rank_scores(np.arange(len(boxes)))


class CombinedProposer:
    """`propose(image_uint8_rgb) -> (boxes [N,4], scores [N])`: the GoogLeNet recipe.

    Selective Search `strategy` with every k (the preset's, or `ks`) multiplied by `k_scale`, and
    the top_m boxes of the MultiBox model in `checkpoint` (after optional `multibox_nms_iou`); the
    other keywords are SelectiveSearch's. Scores are 1/(1+rank) of the merged order.
    """

    method = "combined"

    def __init__(self, checkpoint: str = "", top_m: int = 200, dedupe_iou: float | None = None,
                 strategy: str = "fast", k_scale: float = 2.0, ks: list[float] | None = None,
                 color_spaces: list[str] | None = None, similarities: list[str] | None = None, sigma: float = 0.8,
                 min_box_size: float = 20, max_side: int | None = 1000, max_proposals: int | None = None,
                 seed: int = 0, scale_k: bool = False, multibox_nms_iou: float | None = None,
                 device: str = "cpu") -> None:
        if top_m < 0:
            raise UserError(f"combined proposer: top_m must be >= 0, got {top_m}")
        if dedupe_iou is not None and not 0.0 < dedupe_iou <= 1.0:
            raise UserError(f"combined proposer: dedupe_iou must be in (0, 1], got {dedupe_iou}")
        if k_scale <= 0:
            raise UserError(f"combined proposer: k_scale must be positive, got {k_scale}")
        if strategy not in STRATEGIES:
            raise UserError(f"unknown Selective Search strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        self.top_m = int(top_m)
        self.dedupe_iou = None if dedupe_iou is None else float(dedupe_iou)
        self.k_scale = float(k_scale)
        scaled_ks = [float(k) * self.k_scale for k in (ks or STRATEGIES[strategy]["ks"])]
        self.selective_search = SelectiveSearch(strategy, color_spaces=color_spaces, ks=scaled_ks,
                                                similarities=similarities, sigma=sigma, min_box_size=min_box_size,
                                                max_side=max_side, max_proposals=max_proposals, seed=seed,
                                                scale_k=scale_k)
        self.multibox = MultiBoxProposer(checkpoint, top_k=self.top_m, nms_iou=multibox_nms_iou, device=device)

    def params(self) -> dict:
        return {"selective_search": self.selective_search.params(), "multibox": self.multibox.params(),
                "top_m": self.top_m, "k_scale": self.k_scale, "dedupe_iou": self.dedupe_iou,
                "order": "multibox, selective_search"}

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        learned, _ = self.multibox.propose(image)
        segmented, _ = self.selective_search.propose(image)
        return merge_proposals([learned[: self.top_m], segmented], self.dedupe_iou)
