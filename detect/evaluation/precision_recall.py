"""Per-class precision-recall curves under VOC rules: the curves whose area VOC AP measures
(plotted by detect.report.detections.plot_precision_recall)."""
from __future__ import annotations

import numpy as np

from detect.evaluation.results import as_numpy_predictions
from detect.evaluation.voc import (IOU_THRESHOLD, best_overlap, dataset_ground_truth, detection_status, flat_predictions,
                                   rank_order)


def precision_recall_curves(dataset, predictions: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class: (recall, precision) over the score-ranked detections, VOC rules (IoU >= 0.5, difficult ignored)."""
    gt = dataset_ground_truth(dataset)
    det = flat_predictions(as_numpy_predictions(dataset, predictions))
    best_gt, best_iou = best_overlap(gt, det.image, det.boxes, det.labels, dataset.num_classes)
    order = rank_order(det.scores, det.labels, dataset.num_classes)
    status = detection_status(best_gt[order], best_iou[order], np.asarray(gt.ignored, bool), IOU_THRESHOLD)
    labels = det.labels[order]
    curves = {}
    for c, name in enumerate(dataset.classes, start=1):
        positives = int(np.sum((gt.labels == c) & ~np.asarray(gt.ignored, bool)))
        scored = status[labels == c]
        scored = scored[scored >= 0]
        tp, fp = np.cumsum(scored == 1), np.cumsum(scored == 0)
        if positives:
            curves[name] = (tp / positives, tp / np.maximum(tp + fp, 1))
    return curves
