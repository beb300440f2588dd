"""A gallery of the images a detector got most wrong, drawn with its detections and the ground truth.

Why: a confusion matrix counts errors; looking at the worst images shows what they are (a cell type
always missed, a texture taken for an object, boxes split in two). Ground truth is drawn in white,
detections (scoring >= the confusion threshold) in their class colour with their score; the image's
error counts (detect.evaluation.confusion.image_errors) are in the file name and `worst_images.json`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from detect.report.detections import draw_detections, write_image
from detect.utils.files import atomic_write_bytes


def write_worst_images(dataset, predictions: list[dict], errors: list[dict], out: str | Path, count: int,
                       min_score: float) -> list[Path]:
    """Draw the `count` images with the most errors (ties: dataset order) into `out`/NN_<id>.png, and
    `out`/worst_images.json (rank, image id, file, error counts); images without errors are left out."""
    out = Path(out)
    ranked = sorted((i for i in range(len(errors)) if errors[i]["errors"] > 0), key=lambda i: -errors[i]["errors"])
    written, listing = [], []
    for rank, index in enumerate(ranked[:count], start=1):
        record = dataset.records[index]
        image = draw_truth(dataset.load_image(index), record)
        image = draw_detections(image, predictions[index], dataset.classes, min_score)
        name = f"{rank:02d}_{safe_name(str(record.image_id))}.png"
        written.append(write_image(out / name, image))
        listing.append({"rank": rank, "image_id": str(record.image_id), "file": name, **errors[index]})
    text = json.dumps({"score_threshold": min_score, "images": listing}, indent=1)
    atomic_write_bytes(out / "worst_images.json", lambda fh: fh.write(text.encode()))
    return written


def draw_truth(image: np.ndarray, record) -> np.ndarray:
    """The ground-truth boxes in white, unlabelled (detections are drawn over them in colour)."""
    boxes = torch.as_tensor(np.asarray(record.boxes), dtype=torch.float32).reshape(-1, 4)
    if not len(boxes):
        return image
    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    canvas = draw_bounding_boxes(canvas, boxes, colors="white", width=3)
    return canvas.permute(1, 2, 0).numpy().copy()


def safe_name(text: str) -> str:
    """An image id as a file name: letters, digits, '-', '_' and '.' kept, the rest '_'; at most 80 chars."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:80] or "image"
