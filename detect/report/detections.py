"""Pictures of detections (boxes, class names, scores) and plots of the precision-recall curves behind VOC AP
(the curves themselves: detect.evaluation.precision_recall)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from detect.report.figures import pyplot, save_figure
from detect.utils.files import atomic_write_bytes


def draw_detections(image: np.ndarray, detections: dict, classes: list[str], min_score: float = 0.5) -> np.ndarray:
    """uint8 RGB with every detection scoring >= min_score drawn and labelled (images under 192 px
    are enlarged by an integer factor first)."""
    scores = np.asarray(detections["scores"])
    keep = scores >= min_score
    boxes = torch.as_tensor(np.asarray(detections["boxes"])[keep], dtype=torch.float32).reshape(-1, 4)
    labels = [f"{classes[int(c) - 1]} {s:.2f}" for c, s in zip(np.asarray(detections["labels"])[keep], scores[keep])]
    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    zoom = max(1, 384 // max(image.shape[:2]))  # small images are enlarged so the labels stay readable
    if zoom > 1:
        canvas = canvas.repeat_interleave(zoom, dim=1).repeat_interleave(zoom, dim=2)
        boxes = boxes * zoom
    if len(boxes):
        palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
        colours = [palette[(int(c) - 1) % len(palette)] for c in np.asarray(detections["labels"])[keep]]
        canvas = draw_bounding_boxes(canvas, boxes, labels, colors=colours, width=2)
    return canvas.permute(1, 2, 0).numpy()


def write_image(path: str | Path, image_rgb: np.ndarray) -> Path:
    """PNG or JPEG by the file's suffix, written atomically."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image_rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"{path}: cannot encode an image with this suffix")
    atomic_write_bytes(path, lambda fh: fh.write(data.tobytes()))
    return path


def plot_precision_recall(curves: dict, aps: dict, path: str | Path, title: str = "") -> Path:
    fig, ax = pyplot().subplots(figsize=(5.6, 4.4))
    for name, (recall, precision) in curves.items():
        ap = aps.get(name)
        ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})" if ap is not None else name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=110)
