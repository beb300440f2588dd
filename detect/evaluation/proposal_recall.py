"""Proposal quality against ground truth: recall@IoU for the top N, average recall, MABO.

Proposals are judged by what a detector can still find among them: the fraction of ground-truth
boxes covered (IoU >= t) by at least one of the first N proposals. Recall is pooled over all
ground-truth boxes of the dataset. Average recall (AR, Hosang et al.) averages recall over IoU
0.5:0.05:0.95. MABO (Uijlings et al.) is the mean over classes of the average, over that class's
boxes, of the best IoU any proposal reaches. Difficult and crowd boxes are excluded, as VOC
excludes them from AP (the policy is stored in the result).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

TOP_N = (10, 50, 100, 300, 1000, 2000, None)  # None = all proposals
RECALL_IOUS = (0.5, 0.7)
AR_IOUS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())


def best_overlaps(gt_boxes: np.ndarray, boxes: np.ndarray, counts: list[int]) -> np.ndarray:
    """[len(counts), G]: per ground-truth box, the best IoU among the first n proposals for each n."""
    out = np.zeros((len(counts), len(gt_boxes)))
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return out
    iou = box_iou(torch.as_tensor(gt_boxes, dtype=torch.float32), torch.as_tensor(boxes, dtype=torch.float32))
    # running maximum along the rank: best of the first n is column n-1
    running = torch.cummax(iou, dim=1).values.numpy()
    for row, n in enumerate(counts):
        out[row] = running[:, min(n, len(boxes)) - 1] if n > 0 else 0.0
    return out


def label_n(n: int | None) -> str:
    return "all" if n is None else str(n)


def proposal_recall(dataset, proposals, top_n=TOP_N, curve_points: int = 40) -> dict:
    """Recall table for `proposals(i) -> dict(boxes, scores, seconds)` over every image of `dataset`.

    Returns plain JSON-able numbers: recall[iou][N], average_recall[N], mabo[N], abo per class,
    boxes_per_image, seconds_per_image, and a recall-vs-N curve for the plot.
    """
    per_image = [proposals(i) for i in range(len(dataset))]
    max_boxes = max((len(p["boxes"]) for p in per_image), default=0)
    curve_n = sorted({int(n) for n in np.unique(np.geomspace(1, max(max_boxes, 1), curve_points).round())})
    table_n = [max_boxes if n is None else n for n in top_n]
    counts = table_n + curve_n
    best, labels = [], []
    for i, p in enumerate(per_image):
        target = dataset.target(i)
        keep = ~(target["difficult"].numpy() | target["iscrowd"].numpy())
        gt = target["boxes"].numpy()[keep]
        best.append(best_overlaps(gt, p["boxes"], counts))
        labels.append(target["labels"].numpy()[keep])
    best = np.concatenate(best, axis=1) if best else np.zeros((len(counts), 0))
    labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    num_gt = best.shape[1]

    def recall(row: int, iou: float) -> float:
        return float((best[row] >= iou).mean()) if num_gt else 0.0

    def mabo(row: int) -> float:
        classes = np.unique(labels)
        return float(np.mean([best[row, labels == c].mean() for c in classes])) if len(classes) else 0.0

    rows = range(len(table_n))
    curve_rows = range(len(table_n), len(counts))
    all_row = len(table_n) - 1 if top_n[-1] is None else None
    abo = {}
    if all_row is not None:
        abo = {dataset.classes[c - 1]: float(best[all_row, labels == c].mean()) for c in np.unique(labels)}
    return {
        "num_images": len(dataset),
        "num_gt_boxes": int(num_gt),
        "ground_truth_policy": "difficult and crowd boxes excluded (as VOC)",
        "recall": {str(iou): {label_n(n): recall(r, iou) for n, r in zip(top_n, rows)} for iou in RECALL_IOUS},
        "average_recall": {label_n(n): float(np.mean([recall(r, t) for t in AR_IOUS])) for n, r in zip(top_n, rows)},
        "average_recall_ious": list(AR_IOUS),
        "mabo": {label_n(n): mabo(r) for n, r in zip(top_n, rows)},
        "abo_per_class": abo,
        "boxes_per_image": float(np.mean([len(p["boxes"]) for p in per_image])) if per_image else 0.0,
        "seconds_per_image": float(np.mean([p.get("seconds", np.nan) for p in per_image])) if per_image else 0.0,
        "curve": {
            "num_proposals": curve_n,
            **{f"recall@{iou}": [recall(r, iou) for r in curve_rows] for iou in RECALL_IOUS},
            "average_recall": [float(np.mean([recall(r, t) for t in AR_IOUS])) for r in curve_rows],
        },
    }


def format_recall_table(result: dict) -> str:
    """The table as aligned text lines (for the terminal)."""
    ns = list(result["mabo"])
    lines = ["N".ljust(14) + "".join(n.rjust(8) for n in ns)]
    for iou, row in result["recall"].items():
        lines.append(f"recall@{iou}".ljust(14) + "".join(f"{row[n]:8.3f}" for n in ns))
    lines.append("AR@0.5:0.95".ljust(14) + "".join(f"{result['average_recall'][n]:8.3f}" for n in ns))
    lines.append("MABO".ljust(14) + "".join(f"{result['mabo'][n]:8.3f}" for n in ns))
    lines.append(f"boxes/image {result['boxes_per_image']:.1f}   seconds/image {result['seconds_per_image']:.3f}   "
                 f"images {result['num_images']}   GT boxes {result['num_gt_boxes']} "
                 f"({result['ground_truth_policy']})")
    return "\n".join(lines)
