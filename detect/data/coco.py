"""COCO JSON annotations -> DetectionDataset, through pycocotools.COCO.

Labels are contiguous 1..C over the categories sorted by id (or in the order of `classes` when
given); `dataset.category_ids[label-1]` maps back. Crowd regions are kept with iscrowd=True (the base
class leaves them out of training targets). Box policy on [x, y, w, h]: w or h < 0 is an error;
w == 0 or h == 0 is a zero-size box, skipped and counted; a box more than 1 px outside the image is
an error, one within 1 px (float rounding in exported files) is clipped to the image.
Image ids are the COCO ids as strings (`record.coco_image_id` keeps the int), or the images' "name"
fields when all are present and unique (files written by `dataset_to_coco_dict`), and a "difficult"
field on an annotation is kept, so VOC -> COCO -> dataset round-trips.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from detect.data.dataset import DetectionDataset, ImageRecord, SkipReport, check_names
from detect.data.images import image_path_inside
from detect.errors import DatasetError

logger = logging.getLogger(__name__)

ZERO_SIZE = "zero-size boxes (w == 0 or h == 0)"
OUTSIDE_TOLERANCE = 1.0  # pixels


def read_coco(ann_json: str | Path, images_dir: str | Path, classes: list[str] | None = None) -> DetectionDataset:
    ann_json, images_dir = Path(ann_json), Path(images_dir)
    data = load_coco_json(ann_json)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    category_ids = category_order(categories, classes, ann_json)
    names = {c["id"]: c["name"] for c in categories}
    classes = [names[cid] for cid in category_ids]
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    skips = SkipReport()
    image_ids = sorted(coco.imgs)
    own_ids = own_image_names(coco, image_ids)
    records = [to_record(coco, image_id, own_id, ann_json, images_dir, label_of, skips)
               for image_id, own_id in zip(image_ids, own_ids)]
    name = f"coco:{ann_json}:{images_dir}"
    if skips:
        logger.warning("%s: %s", name, skips.summary())
    return DetectionDataset(records, classes, root=images_dir, name=name, skips=skips, category_ids=category_ids)


REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


def load_coco_json(path: Path) -> dict:
    """Read and check the fields we rely on, so a bad file fails here with its name, not deep in pycocotools."""
    if not path.is_file():
        raise DatasetError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the top level must be an object with images, annotations, categories")
    for section, fields in REQUIRED.items():
        items = data.get(section)
        if not isinstance(items, list):
            raise DatasetError(f"{path}: missing list {section!r}")
        for k, item in enumerate(items):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise DatasetError(f"{path}: {section}[{k}] lacks field(s) {', '.join(missing)}")
    for section in ("images", "categories"):
        bad = next((item["id"] for item in data[section] if not isinstance(item["id"], int)), None)
        if bad is not None:
            raise DatasetError(f"{path}: {section} id {bad!r} is not an integer")
    ids = [img["id"] for img in data["images"]]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: duplicate image ids in 'images'")
    for k, img in enumerate(data["images"]):
        for key in ("width", "height"):
            value = img[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != int(value):
                raise DatasetError(f"{path}: images[{k}] (id {img['id']}) {key} {value!r} is not a positive integer")
    names = [c["name"] for c in data["categories"]]
    check_names(names, "class name", f"{path}: categories")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: duplicate category name(s) {', '.join(map(repr, duplicates))}")
    known_images, known_cats = set(ids), {c["id"] for c in data["categories"]}
    for k, ann in enumerate(data["annotations"]):
        if ann["image_id"] not in known_images:
            raise DatasetError(f"{path}: annotations[{k}] refers to image_id {ann['image_id']!r}, not in 'images'")
        if ann["category_id"] not in known_cats:
            raise DatasetError(f"{path}: annotations[{k}] refers to category_id {ann['category_id']!r}, not in 'categories'")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DatasetError(f"{path}: annotations[{k}] bbox {bbox!r} is not [x, y, w, h] numbers")
        if not all(math.isfinite(v) for v in bbox):
            raise DatasetError(f"{path}: annotations[{k}] (id {ann['id']}) bbox {bbox!r} holds NaN or infinity")
    return data


def category_order(categories: list[dict], classes: list[str] | None, path: Path) -> list[int]:
    """Category ids in label order: by id, or by the given class list (whose names must all exist)."""
    if classes is None:
        return [c["id"] for c in categories]
    by_name = {c["name"]: c["id"] for c in categories}
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise DatasetError(f"{path}: unknown class(es) {', '.join(map(repr, unknown))} "
                           f"(categories: {', '.join(by_name)})")
    extra = [n for n in by_name if n not in classes]
    if extra:
        raise DatasetError(f"{path}: categories {', '.join(map(repr, extra))} are not in the given class list")
    return [by_name[c] for c in classes]


def own_image_names(coco: COCO, image_ids: list[int]) -> list[str]:
    """Our string image ids: the "name" field `dataset_to_coco_dict` writes when present and unique, else the COCO id."""
    names = [str(coco.imgs[i].get("name", "")) for i in image_ids]
    if all(names) and len(set(names)) == len(names):
        return names
    return [str(i) for i in image_ids]


def to_record(coco: COCO, image_id: int, name: str, path: Path, images_dir: Path, label_of: dict[int, int],
              skips: SkipReport) -> ImageRecord:
    info = coco.imgs[image_id]
    width, height = int(info["width"]), int(info["height"])
    boxes, labels, crowd, difficult = [], [], [], []
    for ann in coco.imgToAnns.get(image_id, []):
        x, y, w, h = (float(v) for v in ann["bbox"])
        where = f"{path} (annotation id {ann['id']})"
        if w < 0 or h < 0:
            raise DatasetError(f"{where}: bbox {ann['bbox']} has a negative width or height")
        if (x < -OUTSIDE_TOLERANCE or y < -OUTSIDE_TOLERANCE or x + w > width + OUTSIDE_TOLERANCE
                or y + h > height + OUTSIDE_TOLERANCE):
            raise DatasetError(f"{where}: bbox {ann['bbox']} lies outside the {width}x{height} image "
                               f"{info['file_name']}")
        if w == 0 or h == 0:
            skips.add(ZERO_SIZE, where)
            continue
        boxes.append((max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)))
        labels.append(label_of[ann["category_id"]])
        crowd.append(bool(ann.get("iscrowd", 0)))
        difficult.append(bool(ann.get("difficult", 0)))
    n = len(boxes)
    return ImageRecord(image_id=name, image_path=image_path_inside(images_dir, info["file_name"], path),
                       width=width, height=height, boxes=np.array(boxes, np.float32).reshape(n, 4),
                       labels=np.array(labels, np.int64), difficult=np.array(difficult, bool),
                       iscrowd=np.array(crowd, bool), coco_image_id=int(image_id))

