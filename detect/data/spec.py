"""Dataset spec strings -> DetectionDataset: one syntax for every `--data` option and YAML `data:` entry.

    voc:ROOT[:SPLIT]                               PASCAL VOC layout (all of Annotations/ without SPLIT)
    voc-dirs:ANNOTATIONS_DIR:IMAGES_DIR[:IDS_FILE]  any folder of VOC XMLs beside a folder of images
    coco:ANN_JSON:IMAGES_DIR                       COCO JSON
    yolo:DATA_YAML[:SPLIT]                         YOLO (ultralytics) data.yaml, images/ + labels/ (SPLIT
                                                   train/val/test, default val)
    shapes:N[:SEED][:SPLIT]                        synthetic shapes: N images in all, SPLIT one of
                                                   train/val/test/trainval/all (default all)
"""
from __future__ import annotations

from pathlib import Path

from detect.data.coco import read_coco
from detect.data.dataset import DetectionDataset
from detect.data.shapes import SPLITS, shapes_split
from detect.data.voc import read_voc, read_voc_dirs
from detect.data.yolo import read_yolo
from detect.errors import UserError

VALID_FORMS = ("voc:ROOT[:SPLIT]", "voc-dirs:ANNOTATIONS_DIR:IMAGES_DIR[:IDS_FILE]", "coco:ANN_JSON:IMAGES_DIR",
               "yolo:DATA_YAML[:SPLIT]", "shapes:N[:SEED][:SPLIT]")


def build_dataset(spec: str, classes: list[str] | None = None) -> DetectionDataset:
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "voc" and 1 <= len(parts) <= 2 and parts[0]:
        return read_voc(parts[0], parts[1] if len(parts) == 2 and parts[1] else None, classes)
    if kind == "voc-dirs" and 2 <= len(parts) <= 3 and all(parts):
        return read_voc_dirs(parts[0], parts[1], parts[2] if len(parts) == 3 else None, classes)
    if kind == "coco" and len(parts) == 2 and all(parts):
        return read_coco(parts[0], parts[1], classes)
    if kind == "yolo" and 1 <= len(parts) <= 2 and parts[0]:
        return read_yolo(parts[0], parts[1] if len(parts) == 2 and parts[1] else "val", classes)
    if kind == "shapes" and 1 <= len(parts) <= 3:
        count, seed, split = parse_shapes_args(spec, parts)
        dataset = shapes_split(count, seed, split)
        if classes is not None and list(classes) != dataset.classes:
            raise UserError(f"dataset spec {spec!r}: the shapes classes are {dataset.classes}, not {list(classes)}")
        return dataset
    raise UserError(f"invalid dataset spec {spec!r}; valid forms: " + ", ".join(VALID_FORMS))


def devkit_split(spec: str) -> str:
    """The split name of a spec for VOC devkit file names (comp4_det_<split>_<class>.txt): SPLIT of
    voc:ROOT:SPLIT, yolo:DATA_YAML[:SPLIT] (default val) and shapes:N[:SEED]:SPLIT, the ids file's name without extension for
    voc-dirs:ANN:IMG:IDS_FILE, else "test"."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    split = None
    if kind == "voc" and len(parts) == 2:
        split = parts[1]
    elif kind == "yolo" and parts:
        split = parts[1] if len(parts) == 2 and parts[1] else "val"
    elif kind == "voc-dirs" and len(parts) == 3:
        split = Path(parts[2]).stem
    elif kind == "shapes" and len(parts) >= 2 and not parts[-1].isdigit():
        split = parts[-1]
    return split if split and all(c.isalnum() or c in "_-." for c in split) and split not in (".", "..") else "test"


def parse_shapes_args(spec: str, parts: list[str]) -> tuple[int, int, str]:
    """N, then an optional integer SEED, then an optional SPLIT name."""
    if not parts[0].isdigit() or int(parts[0]) < 1:
        raise UserError(f"dataset spec {spec!r}: N must be a positive integer, got {parts[0]!r}")
    count, seed, split = int(parts[0]), 0, "all"
    rest = parts[1:]
    if rest and rest[0].isdigit():
        seed = int(rest.pop(0))
    if rest:
        split = rest.pop(0)
        if split not in SPLITS:
            raise UserError(f"dataset spec {spec!r}: unknown shapes split {split!r} (valid: {', '.join(SPLITS)})")
    if rest:
        raise UserError(f"invalid dataset spec {spec!r}; valid forms: " + ", ".join(VALID_FORMS))
    return count, seed, split
