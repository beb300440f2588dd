"""Where a detector's errors come from: a confusion matrix with background and mislocalisation.

Why: mAP says how good a detector is, not what to fix. Hoiem et al. ("Diagnosing error in object
detectors", 2012) split false positives into localisation errors, confusion with other classes and
background; missed objects are the rest. Here, on the detections scoring at least `score_threshold`:

    rows (the truth):       each class, "mislocalised", "background"
    columns (the detector): each class, "missed"

1. Per image, detections by falling score take the best still-unmatched object of their own class
   with IoU >= `iou` (a correct detection: [c, c]); one on a "difficult" (or crowd) object is ignored.
2. A detection left over that overlaps a still-unmatched object of another class with IoU >= `iou`
   is a class confusion: [true class, predicted class] (the object then counts as found, once).
3. Otherwise, IoU >= `low_iou` (0.1) with any object of its own class (a poor box, or a duplicate of
   one already found) is a localisation error: ["mislocalised", predicted class].
4. Anything else fired on background: ["background", predicted class].
5. Objects no detection took: [class, "missed"].
A class's row therefore sums to its number of (non-difficult) objects.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from detect.evaluation.results import as_numpy_predictions

MISLOCALISED, BACKGROUND, MISSED = "mislocalised", "background", "missed"


def confusion_matrix(dataset, predictions: list[dict], score_threshold: float = 0.5, iou: float = 0.5,
                     low_iou: float = 0.1) -> dict:
    """{"rows", "columns", "matrix" [C+2][C+1] ints, "score_threshold", "iou", "low_iou"}; see the module docstring."""
    predictions = as_numpy_predictions(dataset, predictions)
    num_classes = dataset.num_classes
    matrix = np.zeros((num_classes + 2, num_classes + 1), np.int64)
    for record, found in zip(dataset.records, predictions):
        keep = found["scores"] >= score_threshold
        order = np.argsort(-found["scores"][keep], kind="stable")
        image_matrix(matrix, record, found["boxes"][keep][order], found["labels"][keep][order], iou, low_iou)
    return {"rows": [*dataset.classes, MISLOCALISED, BACKGROUND], "columns": [*dataset.classes, MISSED],
            "matrix": matrix.tolist(), "score_threshold": score_threshold, "iou": iou, "low_iou": low_iou}


def image_matrix(matrix: np.ndarray, record, boxes: np.ndarray, labels: np.ndarray, iou: float, low_iou: float) -> None:
    """Add one image's counts to `matrix` (detections already sorted by falling score)."""
    gt_labels = record.labels
    ignored = record.difficult | record.iscrowd
    overlaps = box_iou(torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                       torch.as_tensor(record.boxes, dtype=torch.float64).reshape(-1, 4)).numpy()
    taken = np.zeros(len(gt_labels), bool)
    left = []
    for d, label in enumerate(labels):  # 1. correct detections, greedy by score
        candidates = np.where((gt_labels == label) & ~taken, overlaps[d], -1.0)
        best = int(np.argmax(candidates)) if len(candidates) else -1
        if best >= 0 and candidates[best] >= iou:
            taken[best] = True
            if not ignored[best]:
                matrix[label - 1, label - 1] += 1
        else:
            left.append(d)
    background_row, mislocalised_row = matrix.shape[0] - 1, matrix.shape[0] - 2
    for d in left:
        label = labels[d]
        others = np.where((gt_labels != label) & ~taken & ~ignored, overlaps[d], -1.0)
        best = int(np.argmax(others)) if len(others) else -1
        if best >= 0 and others[best] >= iou:  # 2. the right place, the wrong class
            taken[best] = True
            matrix[gt_labels[best] - 1, label - 1] += 1
        elif np.any((gt_labels == label) & (overlaps[d] >= low_iou)):  # 3. its class, a poor box or a duplicate
            matrix[mislocalised_row, label - 1] += 1
        else:  # 4. nothing of its class there
            matrix[background_row, label - 1] += 1
    for g in np.where(~taken & ~ignored)[0]:  # 5. objects nobody found
        matrix[gt_labels[g] - 1, -1] += 1


def image_errors(dataset, predictions: list[dict], score_threshold: float = 0.5, iou: float = 0.5,
                 low_iou: float = 0.1) -> list[dict]:
    """Per image, the confusion matrix's errors among the detections scoring >= score_threshold:
    {"confused", "mislocalised", "background", "missed", "errors" (their sum)}; what `detect test`
    ranks its gallery of worst images by."""
    predictions = as_numpy_predictions(dataset, predictions)
    num_classes = dataset.num_classes
    out = []
    for record, found in zip(dataset.records, predictions):
        matrix = np.zeros((num_classes + 2, num_classes + 1), np.int64)
        keep = found["scores"] >= score_threshold
        order = np.argsort(-found["scores"][keep], kind="stable")
        image_matrix(matrix, record, found["boxes"][keep][order], found["labels"][keep][order], iou, low_iou)
        classes = matrix[:num_classes, :num_classes]
        counts = {"confused": int(classes.sum() - np.trace(classes)), "mislocalised": int(matrix[-2].sum()),
                  "background": int(matrix[-1].sum()), "missed": int(matrix[:num_classes, -1].sum())}
        out.append({**counts, "errors": sum(counts.values())})
    return out
