"""Any DetectionDataset -> COCO ground-truth JSON, or a VOC, COCO or YOLO layout on disk.

COCO GT written here (`dataset_to_coco_dict`):
- image ids: the source COCO ids when every record has one, else the position i in the dataset
  (0-based, so `predictions[i]` belongs to image id i). `images[k]["name"]` is the dataset's own
  string image_id and `file_name` the image path relative to the images' common folder, so
  `coco:OUT.json:THAT_FOLDER` reads the file back.
- category ids: `dataset.category_ids`, names `dataset.classes`.
- bbox [x1, y1, x2-x1, y2-y1] of our boxes; area = w*h.
- difficult objects carry "difficult": 1 and "ignore": 1. pycocotools overwrites `ignore` with
  `iscrowd`, so by default they are ordinary ground truth for COCOeval; with
  `difficult_as_crowd=True` they are written as iscrowd=1, which COCOeval ignores (a detection on them
  neither counts nor is penalised), the COCO-side analogue of VOC's difficult rule.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np

from detect.data.dataset import DetectionDataset
from detect.data.yolo import write_yolo_layout
from detect.errors import DatasetError, UserError
from detect.utils.files import atomic_write_bytes, file_in


def dataset_to_coco_dict(dataset: DetectionDataset, difficult_as_crowd: bool = False) -> dict:
    """The dataset's ground truth as a COCO GT dict that pycocotools.COCO accepts."""
    use_coco_ids = bool(dataset.records) and all(r.coco_image_id is not None for r in dataset.records)
    images_dir = common_folder([r.image_path for r in dataset.records])
    images, annotations = [], []
    for index, record in enumerate(dataset.records):
        image_id = int(record.coco_image_id) if use_coco_ids else index
        file_name = Path(os.path.relpath(record.image_path, images_dir)).as_posix()
        images.append({"id": image_id, "name": record.image_id, "file_name": file_name,
                       "width": int(record.width), "height": int(record.height)})
        for box, label, difficult, crowd in zip(record.boxes, record.labels, record.difficult, record.iscrowd):
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": int(dataset.category_ids[int(label) - 1]),
                "bbox": [x1, y1, w, h], "area": w * h,
                "iscrowd": int(bool(crowd) or (difficult_as_crowd and bool(difficult))),
                "difficult": int(difficult), "ignore": int(difficult),
            })
    categories = [{"id": int(cid), "name": name, "supercategory": "none"}
                  for cid, name in zip(dataset.category_ids, dataset.classes)]
    return {"info": {"description": dataset.name}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def write_coco_json(dataset: DetectionDataset, out_path: str | Path, difficult_as_crowd: bool = False) -> Path:
    """Atomically write `dataset_to_coco_dict(dataset)` to out_path."""
    data = json.dumps(dataset_to_coco_dict(dataset, difficult_as_crowd)).encode()
    atomic_write_bytes(out_path, lambda fh: fh.write(data))
    return Path(out_path)


def write_coco_layout(dataset: DetectionDataset, out_dir: str | Path, splits: dict[str, list[int]],
                      image_ext: str = ".png") -> Path:
    """OUT/images/<id><ext> and OUT/annotations/instances_<split>.json for each split (dataset indices)."""
    out_dir = Path(out_dir)
    write_images(dataset, out_dir / "images", image_ext)
    for split, indices in splits.items():
        subset = subset_on_disk(dataset, indices, out_dir / "images", image_ext)
        write_coco_json(subset, file_in(out_dir / "annotations", f"instances_{split}.json"))
    return out_dir


def write_voc_layout(dataset: DetectionDataset, out_dir: str | Path, splits: dict[str, list[int]],
                     image_ext: str = ".png") -> Path:
    """OUT/Annotations/<id>.xml, OUT/JPEGImages/<id><ext>, OUT/ImageSets/Main/<split>.txt.

    Boxes are written as VOC 1-based inclusive pixels (ours + 1 on the top-left corner); integer boxes
    round-trip exactly through `read_voc`.
    """
    out_dir = Path(out_dir)
    write_images(dataset, out_dir / "JPEGImages", image_ext)
    for record in dataset.records:
        xml = voc_xml(record.image_id + image_ext, record.width, record.height, dataset.classes,
                      record.boxes, record.labels, record.difficult)
        atomic_write_bytes(file_in(out_dir / "Annotations", f"{record.image_id}.xml"), lambda fh: fh.write(xml))
    for split, indices in splits.items():
        text = "".join(f"{dataset.records[i].image_id}\n" for i in indices).encode()
        atomic_write_bytes(file_in(out_dir / "ImageSets" / "Main", f"{split}.txt"), lambda fh: fh.write(text))
    return out_dir


def voc_xml(filename: str, width: int, height: int, classes: list[str], boxes: np.ndarray, labels: np.ndarray,
            difficult: np.ndarray) -> bytes:
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = filename
    size = ElementTree.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    for box, label, hard in zip(boxes, labels, difficult):
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = classes[int(label) - 1]
        ElementTree.SubElement(obj, "difficult").text = str(int(hard))
        bndbox = ElementTree.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ElementTree.SubElement(bndbox, tag).text = f"{value:g}"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8")


def write_images(dataset: DetectionDataset, images_dir: Path, image_ext: str) -> None:
    """Each image as images_dir/<image_id><ext>, written atomically (a stale file is replaced, never mixed in)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(dataset.records):
        path = file_in(images_dir, f"{record.image_id}{image_ext}")
        ok, encoded = cv2.imencode(image_ext, np.ascontiguousarray(dataset.load_image(index)[:, :, ::-1]))
        if not ok:
            raise OSError(f"{path}: could not encode image")
        atomic_write_bytes(path, lambda fh: fh.write(encoded.tobytes()))


def subset_on_disk(dataset: DetectionDataset, indices: list[int], images_dir: Path, image_ext: str) -> DetectionDataset:
    """The records at `indices`, pointing at their copies under images_dir (for relative file names)."""
    records = [replace(dataset.records[i], image_path=images_dir / f"{dataset.records[i].image_id}{image_ext}")
               for i in indices]
    return DetectionDataset(records, dataset.classes, root=images_dir, name=dataset.name,
                            category_ids=dataset.category_ids)


def common_folder(paths: list[Path]) -> Path:
    """The deepest folder holding every path: COCO file names are relative to it."""
    return Path(os.path.commonpath([os.path.abspath(Path(p).parent) for p in paths])) if paths else Path(".")


def merge_splits(named: dict[str, DetectionDataset]) -> tuple[DetectionDataset, dict[str, list[int]]]:
    """Several datasets, one per split name, as one dataset and its split indices (for the layout writers).

    An image id in two splits is one image when both point at the same file (VOC's trainval and test
    lists share Annotations/), else an error: the layouts name files by image id."""
    datasets = list(named.values())
    classes = datasets[0].classes
    records, where, splits = [], {}, {}
    for split, dataset in named.items():
        if dataset.classes != classes:
            raise DatasetError(f"{dataset.name}: classes {dataset.classes} differ from {datasets[0].name}'s {classes}")
        splits[split] = []
        for record in dataset.records:
            if record.image_id in where:
                first = records[where[record.image_id]]
                if Path(first.image_path).resolve() != Path(record.image_path).resolve():
                    raise DatasetError(f"{dataset.name}: image id {record.image_id!r} names two files, "
                                       f"{first.image_path} and {record.image_path}")
            else:
                where[record.image_id] = len(records)
                records.append(record)
            splits[split].append(where[record.image_id])
    merged = DetectionDataset(records, classes, root=datasets[0].root, name=" + ".join(d.name for d in datasets),
                              category_ids=datasets[0].category_ids)
    return merged, splits


def write_layout(dataset: DetectionDataset, out_dir: str | Path, splits: dict[str, list[int]], fmt: str) -> Path:
    """The dataset on disk in `fmt` (voc, coco or yolo) layout, one image list per split."""
    if fmt == "voc":
        return write_voc_layout(dataset, out_dir, splits)
    if fmt == "coco":
        return write_coco_layout(dataset, out_dir, splits)
    if fmt == "yolo":
        return write_yolo_layout(dataset, out_dir, splits)
    raise UserError(f"unknown output format {fmt!r} (valid: voc, coco, yolo)")
