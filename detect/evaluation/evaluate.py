"""One entry point for detection metrics, and the table that shows them.

Every result records which metric it is and how difficult objects were treated: mixing VOC07 with
VOC12 numbers, or "difficult ignored" with "difficult counted", is the field's most common source
of wrong comparisons, so neither is ever left implicit.
"""
from __future__ import annotations

import math

import numpy as np

from detect.data.dataset import DetectionDataset
from detect.errors import UserError
from detect.evaluation.coco import evaluate_coco
from detect.evaluation.results import as_numpy_predictions
from detect.evaluation.voc import IOU_THRESHOLD, dataset_ground_truth, flat_predictions, voc_detection_ap

METRICS = {
    "voc07": "PASCAL VOC2007 11-point AP at IoU >= 0.5 (devkit VOCevaldet.m)",
    "voc12": "PASCAL VOC2010+ all-point AP at IoU >= 0.5 (devkit VOCap.m)",
    "coco": "COCO AP averaged over IoU 0.50:0.95 (pycocotools COCOeval)",
}


def difficult_rule(use_difficult: bool) -> str:
    return "difficult objects counted as ordinary ones" if use_difficult else \
        "difficult objects ignored (neither counted nor penalised)"


def evaluate(dataset: DetectionDataset, predictions, metric: str = "voc07", use_difficult: bool = False,
             verbose: bool = False) -> dict:
    """Score `predictions[i]` (boxes, scores, labels) against `dataset[i]`; a JSON-ready dict.

    Keys: metric, metric_description, use_difficult, difficult, dataset, num_images,
    num_detections, mAP, ap (per class; None where a class has no ground truth); VOC adds
    iou_threshold, num_ground_truth, num_scored, true_positives per class; COCO adds ap50, stats
    (the 12 standard numbers) and summary (pycocotools' printout, shown if verbose).
    """
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    predictions = as_numpy_predictions(dataset, predictions)
    result = {"metric": metric, "metric_description": METRICS[metric], "use_difficult": bool(use_difficult),
              "difficult": difficult_rule(use_difficult), "dataset": dataset.name, "num_images": len(dataset),
              "num_detections": int(sum(len(p["labels"]) for p in predictions))}
    if metric == "coco":
        scores = evaluate_coco(dataset, predictions, use_difficult, verbose)
        result.update(mAP=scores["stats"]["AP"], ap=json_numbers(scores["ap"]), ap50=json_numbers(scores["ap50"]),
                      stats=scores["stats"], summary=scores["summary"])
        return result

    stats = voc_detection_ap(dataset_ground_truth(dataset, use_difficult), flat_predictions(predictions),
                             dataset.num_classes, eleven_point=metric == "voc07")
    defined = stats.ap[~np.isnan(stats.ap)]
    result.update(
        iou_threshold=IOU_THRESHOLD,
        mAP=float(defined.mean()) if defined.size else None,
        ap=json_numbers(dict(zip(dataset.classes, stats.ap.tolist()))),
        num_ground_truth=dict(zip(dataset.classes, stats.num_positives.tolist())),
        num_scored=dict(zip(dataset.classes, stats.num_scored.tolist())),
        true_positives=dict(zip(dataset.classes, stats.true_positives.tolist())),
    )
    return result


def json_numbers(values: dict) -> dict:
    """NaN (undefined AP) -> None, so the dict is valid JSON."""
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in values.items()}


def format_table(result: dict) -> str:
    """A per-class table with the metric and the difficult rule in its header, mAP at the foot."""
    lines = [f"dataset: {result['dataset']} ({result['num_images']} images, {result['num_detections']} detections)",
             f"metric:  {result['metric']} = {result['metric_description']}",
             f"         {result['difficult']}"]
    names = list(result["ap"])
    width = max([len("class"), len("mAP")] + [len(n) for n in names])
    if result["metric"] == "coco":
        lines.append(f"{'class':<{width}}  {'AP':>7}  {'AP50':>7}")
        lines += [f"{n:<{width}}  {fmt(result['ap'][n])}  {fmt(result['ap50'][n])}" for n in names]
        lines.append(f"{'mAP':<{width}}  {fmt(result['mAP'])}  {fmt(result['stats']['AP50'])}")
        lines += ["", result["summary"]]
    else:
        lines.append(f"{'class':<{width}}  {'AP':>7}  {'GT':>6}  {'dets':>7}  {'TP':>6}")
        lines += [f"{n:<{width}}  {fmt(result['ap'][n])}  {result['num_ground_truth'][n]:>6}  "
                  f"{result['num_scored'][n]:>7}  {result['true_positives'][n]:>6}" for n in names]
        lines.append(f"{'mAP':<{width}}  {fmt(result['mAP'])}")
    return "\n".join(lines)


def fmt(value) -> str:
    return f"{'n/a':>7}" if value is None else f"{value:7.4f}"
