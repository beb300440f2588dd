"""COCO AP through pycocotools' COCOeval (never re-implemented), for any dataset.

Ground truth comes from `dataset_to_coco_dict` (VOC datasets are converted on the fly). VOC
"difficult" objects follow the same rule as the VOC metric: unless `use_difficult`, they are
given to COCOeval as crowd regions, which it ignores (a detection on them neither counts nor is
penalised). pycocotools prints as it works; we capture that text and keep its summary.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.convert import dataset_to_coco_dict
from detect.data.dataset import DetectionDataset
from detect.evaluation.results import predictions_to_coco_results

# The order of COCOeval.stats after summarize(); all at maxDets 100 unless named.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_ground_truth(dataset: DetectionDataset, use_difficult: bool = False) -> COCO:
    coco = COCO()
    coco.dataset = dataset_to_coco_dict(dataset, difficult_as_crowd=not use_difficult)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_detections(gt: COCO, dataset: DetectionDataset, predictions) -> COCO:
    """The predictions as a pycocotools results object, with the GT file's image and category ids."""
    image_ids = [image["id"] for image in gt.dataset["images"]]  # one per record, in record order
    category_ids = [int(c) for c in dataset.category_ids]
    results = predictions_to_coco_results(dataset, predictions, image_ids, category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            return gt.loadRes(results)
        # loadRes cannot take an empty list; an empty results object scores 0 AP, as it should.
        empty = COCO()
        empty.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
        empty.createIndex()
        return empty


def evaluate_coco(dataset: DetectionDataset, predictions, use_difficult: bool = False, verbose: bool = False) -> dict:
    """The 12 standard COCO numbers, per-class AP and AP50, and pycocotools' printed summary."""
    gt = coco_ground_truth(dataset, use_difficult)
    dt = coco_detections(gt, dataset, predictions)
    cocoeval = COCOeval(gt, dt, iouType="bbox")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    if verbose:
        print(log.getvalue(), end="")
    precision = cocoeval.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]; -1 = no GT
    category_ids = list(cocoeval.params.catIds)
    ap, ap50 = {}, {}
    for name, cid in zip(dataset.classes, dataset.category_ids):
        k = category_ids.index(int(cid))
        ap[name] = mean_defined(precision[:, :, k, 0, -1])
        ap50[name] = mean_defined(precision[0, :, k, 0, -1])
    stats = {name: float(value) for name, value in zip(COCO_STAT_NAMES, cocoeval.stats)}
    return {"stats": stats, "ap": ap, "ap50": ap50, "summary": summary_lines(log.getvalue())}


def mean_defined(values: np.ndarray) -> float:
    """Mean over the entries COCOeval filled in (-1 marks a class without ground truth): NaN if none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else float("nan")


def summary_lines(log: str) -> str:
    """The 12 ' Average Precision/Recall ...' lines of summarize(), without the progress chatter."""
    return "\n".join(line for line in log.splitlines() if line.lstrip().startswith("Average"))
