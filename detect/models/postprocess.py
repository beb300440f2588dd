"""Region scores and box deltas -> the final detections of one image (R-CNN / Fast R-CNN test time).

Soft-max over C+1 classes, decode each class's box (or the shared one, SCR), clip to the image,
drop low scores and degenerate boxes, per-class NMS (torchvision's batched_nms; R-CNN used 0.3),
keep the best `max_detections`, optionally each moved by box voting (Gidaris & Komodakis, ICCV 2015).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from detect.models.box_coder import BoxCoder


@dataclass
class InferenceConfig:
    score_threshold: float = 0.05  # detections scoring at most this are dropped
    nms_iou: float = 0.3  # per-class NMS IoU threshold
    max_detections: int = 100  # detections kept per image
    refine_iterations: int = 0  # re-score the regressed boxes this many times (iterative refinement)
    refine_pool: bool = False  # refinement: NMS over every iteration's boxes, not the last one's (Gidaris & Komodakis 2015)
    # box voting (same paper; detectron's BBOX_VOTE uses 0.8): None is off
    box_voting_iou: float | None = None  # each kept box -> score-weighted mean of its class's boxes with IoU >= this
    # test-time flip (detectron2's TTA flip): every region also scored on the mirrored image, the two averaged
    flip: bool = False  # posteriors and (un-mirrored) boxes averaged over the image and its mirror; 2x the test cost
    # Fast R-CNN §3.1: the region head's fc layers replaced at load time by their rank-t SVD (fewer multiply-adds per RoI)
    # multi-scale test (fast mode; SPP / Fast R-CNN): the image pyramid's shorter sides, each RoI scored at one of them
    scales: list[int] = field(default_factory=list)  # multi-scale test pyramid, e.g. [480, 576, 688, 864, 1200]; empty: model.test_scale alone
    scale_roi_size: int = 224  # multi-scale: each RoI is scored at the scale where its area is closest to this squared
    max_size: int = 2000  # multi-scale: the longest side at most, at every scale (Fast R-CNN: 2000)
    svd_rank: int | dict[str, int] | None = None  # truncated SVD of the head's fc layers: one rank, or {fc6: 1024, fc7: 256}; None: off

    def validate(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_detections < 1 or self.refine_iterations < 0:
            raise ValueError("max_detections must be >= 1 and refine_iterations >= 0")
        if any(scale < 16 for scale in self.scales) or self.scale_roi_size < 1 or self.max_size < max(self.scales, default=0):
            raise ValueError(f"scales must be >= 16 px and at most max_size ({self.max_size}), scale_roi_size >= 1; "
                             f"got scales {self.scales}, scale_roi_size {self.scale_roi_size}")
        if self.box_voting_iou is not None and not 0.0 < self.box_voting_iou <= 1.0:
            raise ValueError(f"box_voting_iou must be in (0, 1] or null, got {self.box_voting_iou}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be true or false, got {self.flip!r}")
        ranks = self.svd_rank.values() if isinstance(self.svd_rank, dict) else [self.svd_rank or 1]
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in ranks):
            raise ValueError(f"svd_rank must be a positive integer or a mapping layer -> positive integer, got {self.svd_rank}")


def decode_class_boxes(box_coder: BoxCoder, deltas: torch.Tensor, proposals: torch.Tensor,
                       num_classes: int) -> torch.Tensor:
    """[R, C, 4] boxes, one per foreground class (SCR's single box repeated)."""
    boxes = box_coder.decode(deltas, proposals)
    return boxes.expand(-1, num_classes, 4) if boxes.shape[1] == 1 else boxes


def clip_to_size(boxes: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Boxes [..., 4] clipped to an image of `size` ([h, w], a tensor): torchvision's clip_boxes_to_image
    takes Python ints, which a trace (`detect export`) would freeze."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(min=0).minimum(size[1]), y1.clamp(min=0).minimum(size[0]),
                        x2.clamp(min=0).minimum(size[1]), y2.clamp(min=0).minimum(size[0])], dim=-1)


def mirror_boxes(boxes: torch.Tensor, width: int | float | torch.Tensor) -> torch.Tensor:
    """Boxes [..., 4] (x1 y1 x2 y2) of an image `width` px wide, mirrored left-right (as torchvision's
    horizontal_flip: x -> width - x)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def detect_objects(scores: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                   cfg: InferenceConfig) -> dict[str, torch.Tensor]:
    """scores [R, C+1] (soft-max), boxes [R, C, 4] -> {"boxes" [M,4], "scores" [M], "labels" [M]}."""
    num_regions, num_classes = boxes.shape[:2]
    boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_size)
    class_scores = scores[:, 1:].reshape(-1)
    labels = torch.arange(1, num_classes + 1, device=scores.device).repeat(num_regions)
    keep = torch.where(class_scores > cfg.score_threshold)[0]
    boxes, class_scores, labels = boxes[keep], class_scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, 1e-2)
    boxes, class_scores, labels = boxes[keep], class_scores[keep], labels[keep]
    keep = batched_nms(boxes, class_scores, labels, cfg.nms_iou)[: cfg.max_detections]
    kept = boxes[keep]
    if cfg.box_voting_iou is not None and len(keep):
        kept = vote_boxes(kept, labels[keep], boxes, class_scores, labels, cfg.box_voting_iou)
    return {"boxes": kept, "scores": class_scores[keep], "labels": labels[keep]}


def vote_boxes(kept: torch.Tensor, kept_labels: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
               labels: torch.Tensor, iou: float) -> torch.Tensor:
    """Box voting: each kept box -> the score-weighted mean of the same class's candidates overlapping it by >= iou.

    The candidates a box suppressed also saw the object; averaging them cancels part of each one's
    regression error (the kept box is among its own voters, so a lone box stays where it is).
    """
    weights = (box_iou(kept, boxes) >= iou) & (kept_labels[:, None] == labels[None, :])
    weights = weights.to(scores.dtype) * scores[None, :]
    return (weights @ boxes) / weights.sum(dim=1, keepdim=True)
