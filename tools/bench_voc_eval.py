"""Benchmark: VOC evaluation of 5,000 images x 20 classes x 100 detections per image (target < 1 s).

Times `detect.evaluation.evaluate` end to end (checking and flattening the predictions included)
against the classic per-detection loop of py-faster-rcnn's voc_eval.py, transcribed below with the
devkit's rules (stable sort, overlap >= 0.5, MATLAB's recall points) so both must give the same AP,
which is checked. Usage: python tools/bench_voc_eval.py [--images 5000] [--baseline-images N]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from detect.data.dataset import DetectionDataset, ImageRecord
from detect.evaluation.evaluate import evaluate
from detect.evaluation.voc import ELEVEN_RECALL_POINTS, all_point_ap


def synthetic_problem(num_images: int, num_classes: int, dets_per_image: int, seed: int = 0):
    """VOC-like ground truth (1-6 objects per image, 10% difficult) and detections: jittered GT plus clutter."""
    rng = np.random.default_rng(seed)
    records, predictions = [], []
    for i in range(num_images):
        n = int(rng.integers(1, 7))
        xy = rng.uniform(0, 400, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(20, 200, (n, 2))], axis=1).astype(np.float32)
        labels = rng.integers(1, num_classes + 1, n)
        records.append(ImageRecord(f"{i:06d}", Path(f"{i:06d}.jpg"), 640, 640, gt, labels,
                                   rng.random(n) < 0.1, np.zeros(n, bool)))
        source = rng.integers(0, n, dets_per_image)
        wh = gt[source, 2:] - gt[source, :2]
        boxes = gt[source] + rng.normal(0, 0.2, (dets_per_image, 4)) * np.concatenate([wh, wh], axis=1)
        clutter = rng.random(dets_per_image) < 0.5
        det_labels = np.where(clutter, rng.integers(1, num_classes + 1, dets_per_image), labels[source])
        predictions.append({"boxes": boxes.astype(np.float32), "scores": rng.random(dets_per_image).astype(np.float32),
                            "labels": det_labels.astype(np.int64)})
    classes = [f"class{k:02d}" for k in range(1, num_classes + 1)]
    return DetectionDataset(records, classes, name="synthetic-bench"), predictions


def classic_voc_eval(dataset: DetectionDataset, predictions: list[dict], eleven_point: bool) -> tuple[list[float], float]:
    """py-faster-rcnn's voc_eval loop per class (in VOC 1-based coordinates); returns (APs, seconds of the loop)."""
    per_class = []
    for label in range(1, dataset.num_classes + 1):
        class_recs, npos = {}, 0
        for r in dataset.records:
            keep = r.labels == label
            bbox = r.boxes[keep].astype(np.float64) + [1, 1, 0, 0]
            difficult = r.difficult[keep]
            class_recs[r.image_id] = {"bbox": bbox, "difficult": difficult, "det": [False] * len(bbox)}
            npos += int((~difficult).sum())
        image_ids, confidence, bbs = [], [], []
        for image_id, p in zip(dataset.image_ids, predictions):
            keep = p["labels"] == label
            image_ids += [image_id] * int(keep.sum())
            confidence.append(p["scores"][keep])
            bbs.append(p["boxes"][keep].astype(np.float64) + [1, 1, 0, 0])
        per_class.append((class_recs, npos, image_ids, np.concatenate(confidence), np.concatenate(bbs)))

    start = time.perf_counter()
    aps = []
    for class_recs, npos, image_ids, confidence, BB in per_class:
        sorted_ind = np.argsort(-confidence, kind="stable")
        BB = BB[sorted_ind, :]
        image_ids = [image_ids[x] for x in sorted_ind]
        nd = len(image_ids)
        tp, fp = np.zeros(nd), np.zeros(nd)
        for d in range(nd):
            R = class_recs[image_ids[d]]
            bb = BB[d, :]
            ovmax = -np.inf
            BBGT = R["bbox"]
            if BBGT.size > 0:
                ixmin = np.maximum(BBGT[:, 0], bb[0])
                iymin = np.maximum(BBGT[:, 1], bb[1])
                ixmax = np.minimum(BBGT[:, 2], bb[2])
                iymax = np.minimum(BBGT[:, 3], bb[3])
                iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
                ih = np.maximum(iymax - iymin + 1.0, 0.0)
                inters = iw * ih
                uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                       + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters)
                overlaps = inters / uni
                ovmax = np.max(overlaps)
                jmax = np.argmax(overlaps)
            if ovmax >= 0.5:
                if not R["difficult"][jmax]:
                    if not R["det"][jmax]:
                        tp[d] = 1.0
                        R["det"][jmax] = 1
                    else:
                        fp[d] = 1.0
            else:
                fp[d] = 1.0
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        scored = (tp + fp) > 0  # rows of ignored detections before the first scored one carry no information
        rec, prec = rec[scored], prec[scored]
        if eleven_point:
            aps.append(sum((np.max(prec[rec >= t]) if np.sum(rec >= t) else 0.0) / 11.0 for t in ELEVEN_RECALL_POINTS))
        else:
            aps.append(all_point_ap(rec, prec))
    return aps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours; the best is reported")
    parser.add_argument("--baseline-images", type=int, default=None,
                        help="run the classic loop on the first N images only (default: all)")
    args = parser.parse_args()

    dataset, predictions = synthetic_problem(args.images, args.classes, args.dets)
    total = sum(len(p["labels"]) for p in predictions)
    print(f"{args.images} images x {args.classes} classes x {args.dets} detections/image = {total} detections, "
          f"{sum(len(r.labels) for r in dataset.records)} GT")
    for metric in ("voc07", "voc12"):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = evaluate(dataset, predictions, metric)
            times.append(time.perf_counter() - start)
        ours = min(times)
        print(f"{metric}: ours {ours:.3f} s (best of {len(times)}: {', '.join(f'{t:.3f}' for t in times)}), "
              f"mAP {result['mAP']:.6f}")

    n = args.baseline_images or args.images
    subset = DetectionDataset(dataset.records[:n], dataset.classes, name="subset")
    sub_predictions = predictions[:n]
    aps, classic = classic_voc_eval(subset, sub_predictions, eleven_point=False)
    ours_subset = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        sub_result = evaluate(subset, sub_predictions, "voc12")
        ours_subset = min(ours_subset, time.perf_counter() - start)
    diff = max(abs(a - b) for a, b in zip(aps, sub_result["ap"].values()))
    print(f"voc12 on {n} images: classic per-detection loop {classic:.3f} s, ours {ours_subset:.3f} s (best of "
          f"{args.repeats}), "
          f"ratio {classic / ours_subset:.1f}x; max |AP difference| {diff:.2e}")
    if (args.images, args.classes, args.dets) == (5000, 20, 100):
        print(f"target: < 1 s for 5,000 images x 20 classes x 100 detections -> "
              f"{'met' if ours < 1.0 else 'NOT met'} ({ours:.3f} s)")
    else:
        print("target applies to the default size (5,000 x 20 x 100); run without size options to check it")


if __name__ == "__main__":
    main()
