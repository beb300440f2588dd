"""Synthetic "shapes" detection data: the embedded default for the demo and the tests.

Coloured circles, rectangles and triangles (1-4 per image, 12%-45% of the image side, pairwise IoU
<= 0.1) on a smooth, noisy, muted background. Everything is a function of (seed, image index), so
any image can be rendered alone, in any order, and N images with one seed are always the same
images. Boxes are the exact pixel extents of the drawn shapes, on integer coordinates, so they
round-trip exactly through the VOC (1-based inclusive) and COCO writers.

Splits of `shapes:N[:SEED][:SPLIT]` cut the N images by index: train the first 60%, val the next
20%, test the last 20%, trainval = train + val, all = everything (image ids keep the global index).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from detect.data.convert import write_coco_layout, write_voc_layout
from detect.data.dataset import DetectionDataset, ImageRecord
from detect.data.yolo import write_yolo_layout
from detect.errors import UserError

CLASSES = ["circle", "rectangle", "triangle"]
SPLITS = ("all", "train", "val", "test", "trainval")
DEFAULT_IMAGE_SIZE = 128
MAX_OBJECTS = 4
MAX_IOU = 0.1
GENERATOR_VERSION = 1  # bump when the drawing changes: fingerprints (and proposal caches) follow


@dataclass
class Shape:
    label: int  # 1 circle, 2 rectangle, 3 triangle
    x: int  # top-left of the box the shape is drawn in
    y: int
    w: int
    h: int
    apex: int  # triangles: apex column offset inside the box
    colour: tuple[int, int, int]


@dataclass
class Layout:
    shapes: list[Shape]
    boxes: np.ndarray  # [N,4] exact pixel extents, ours (x1,y1,x2,y2)
    background: tuple[int, int, int]


class ShapesDataset(DetectionDataset):
    """`count` synthetic images for `seed`, or the subset at `indices` of them; rendered on demand."""

    def __init__(self, count: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                 indices: list[int] | None = None, name: str | None = None) -> None:
        if count < 1:
            raise UserError(f"shapes: the number of images must be positive, got {count}")
        if image_size < 32:
            raise UserError(f"shapes: image size must be at least 32 pixels, got {image_size}")
        self.seed, self.image_size = seed, image_size
        self.indices = list(range(count)) if indices is None else list(indices)
        self.layouts = [make_layout(seed, i, image_size) for i in self.indices]
        records = [
            ImageRecord(image_id=f"shapes_{i:06d}", image_path=Path(f"<shapes seed={seed}>") / f"shapes_{i:06d}.png",
                        width=image_size, height=image_size, boxes=layout.boxes,
                        labels=[s.label for s in layout.shapes], difficult=np.zeros(len(layout.shapes), bool),
                        iscrowd=np.zeros(len(layout.shapes), bool))
            for i, layout in zip(self.indices, self.layouts)
        ]
        super().__init__(records, CLASSES, root=None, name=name or f"shapes:{count}:{seed}")

    def load_image(self, index: int) -> np.ndarray:
        return render(self.layouts[index], self.seed, self.indices[index], self.image_size)

    def fingerprint(self) -> str:
        h = hashlib.sha1(f"shapes-v{GENERATOR_VERSION}:{self.seed}:{super().fingerprint()}".encode())
        return h.hexdigest()[:16]

    def content_fingerprint(self) -> str:
        return self.fingerprint()  # rendered from (generator version, seed, index): nothing else to read


def split_indices(count: int) -> dict[str, list[int]]:
    """Deterministic index ranges of each split (60/20/20 by position)."""
    train_end, val_end = round(0.6 * count), round(0.8 * count)
    return {"all": list(range(count)), "train": list(range(train_end)), "val": list(range(train_end, val_end)),
            "test": list(range(val_end, count)), "trainval": list(range(val_end))}


def shapes_split(count: int, seed: int = 0, split: str = "all", image_size: int = DEFAULT_IMAGE_SIZE) -> ShapesDataset:
    if split not in SPLITS:
        raise UserError(f"shapes: unknown split {split!r} (valid: {', '.join(SPLITS)})")
    indices = split_indices(count)[split]
    if not indices:
        raise UserError(f"shapes:{count}:{seed}:{split}: the {split} split of {count} images is empty; use a larger N")
    return ShapesDataset(count, seed, image_size, indices, name=f"shapes:{count}:{seed}:{split}")


def make_layout(seed: int, index: int, size: int) -> Layout:
    """Classes, places and colours of one image's shapes; boxes measured from their masks."""
    rng = np.random.default_rng((seed, index, 0))
    background = tuple(int(v) for v in rng.integers(70, 170, size=3))
    lo, hi = max(8, round(0.12 * size)), round(0.45 * size)
    shapes, boxes = [], []
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(30 * wanted):
        if len(shapes) == wanted:
            break
        label = int(rng.integers(1, len(CLASSES) + 1))
        w = int(rng.integers(lo, hi + 1))
        h = w if label == 1 else int(rng.integers(lo, hi + 1))
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        shape = Shape(label, x, y, w, h, int(rng.integers(0, w)), vivid_colour(rng, background))
        box = mask_box(shape_mask(shape, size))
        if boxes and max_iou(box, np.array(boxes)) > MAX_IOU:
            continue
        shapes.append(shape)
        boxes.append(box)
    return Layout(shapes, np.array(boxes, np.float32).reshape(-1, 4), background)


def vivid_colour(rng: np.random.Generator, background: tuple[int, int, int]) -> tuple[int, int, int]:
    """A saturated colour far from the muted background, so every object is clearly visible."""
    while True:
        hsv = np.array([[[rng.integers(0, 180), rng.integers(190, 256), rng.integers(200, 256)]]], np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(int)
        if np.abs(rgb - np.array(background)).sum() >= 150:
            return tuple(int(v) for v in rgb)


def shape_mask(shape: Shape, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    x2, y2 = shape.x + shape.w - 1, shape.y + shape.h - 1  # inclusive last pixel
    if shape.label == 1:
        r = (shape.w - 1) // 2
        cv2.circle(mask, (shape.x + r, shape.y + r), r, 1, thickness=-1, lineType=cv2.LINE_8)
    elif shape.label == 2:
        cv2.rectangle(mask, (shape.x, shape.y), (x2, y2), 1, thickness=-1)
    else:
        points = np.array([[shape.x + shape.apex, shape.y], [shape.x, y2], [x2, y2]], np.int32)
        cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8)
    return mask


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box of the drawn pixels in our continuous convention: pixel c covers [c, c+1)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def max_iou(box: tuple[int, int, int, int], boxes: np.ndarray) -> float:
    return float(box_iou(torch.tensor([box], dtype=torch.float32), torch.from_numpy(boxes.astype(np.float32))).max())


def render(layout: Layout, seed: int, index: int, size: int) -> np.ndarray:
    """Textured background (smooth colour field + grain), then the flat-coloured shapes in order."""
    rng = np.random.default_rng((seed, index, 1))
    field = cv2.resize(rng.normal(0, 25, size=(6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = np.asarray(layout.background, np.float32) + field + rng.normal(0, 6, size=(size, size, 3))
    for shape in layout.shapes:
        image[shape_mask(shape, size).astype(bool)] = shape.colour
    return np.clip(image, 0, 255).astype(np.uint8)


def write_shapes(out_dir: str | Path, count: int, seed: int = 0, fmt: str = "voc",
                 image_size: int = DEFAULT_IMAGE_SIZE) -> Path:
    """The N-image synthetic set on disk: VOC layout with train/val/test/trainval lists, or COCO
    images/ + annotations/instances_<split>.json. Every file is written atomically."""
    dataset = ShapesDataset(count, seed, image_size)
    splits = {name: ids for name, ids in split_indices(count).items() if name != "all"}
    if fmt == "voc":
        return write_voc_layout(dataset, out_dir, splits)
    if fmt == "coco":
        return write_coco_layout(dataset, out_dir, splits)
    if fmt == "yolo":  # ultralytics lists splits by folder: trainval would copy train and val again
        return write_yolo_layout(dataset, out_dir, {k: v for k, v in splits.items() if k != "trainval"}).parent
    raise UserError(f"shapes: unknown output format {fmt!r} (valid: voc, coco, yolo)")
