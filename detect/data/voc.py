"""PASCAL VOC XML annotations -> DetectionDataset, for the standard layout and for loose folders.

Box policy (VOC stores 1-based inclusive pixel indices; ours is (xmin-1, ymin-1, xmax, ymax)):
- legal: 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height; boxes touching the border are
  legal. A coordinate outside that range is an error (no tolerance: 0 means a 0-based export).
- xmax < xmin or ymax < ymin: an error (the corners are swapped or the file is corrupt).
- xmin == xmax or ymin == ymax: a degenerate, zero-size annotation (a click, not a box, as in two
  BCCD files). It is skipped, counted in `dataset.skips` and logged once per dataset.
Images are not opened while parsing: `load_image` (or `check_images`) names a missing or corrupt one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from detect.data.dataset import DetectionDataset, ImageRecord, SkipReport, check_names
from detect.data.images import image_path_inside
from detect.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
ZERO_SIZE = "zero-size boxes (xmin == xmax or ymin == ymax)"


@dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # VOC 1-based inclusive xmin, ymin, xmax, ymax
    difficult: bool


@dataclass
class VocAnnotation:
    """One XML file as written, before class names become labels."""

    path: Path
    filename: str | None
    width: int
    height: int
    objects: list[VocObject]


def read_voc(root: str | Path, split: str | None = None, classes: list[str] | None = None) -> DetectionDataset:
    """The standard layout: ROOT/Annotations, ROOT/JPEGImages, ROOT/ImageSets/Main/SPLIT.txt.

    Without a split, every XML in Annotations is read (sorted by name).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: VOC dataset folder not found")
    ids_file = None
    if split is not None:
        ids_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not ids_file.is_file():
            available = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
            raise DatasetError(f"{ids_file}: split file not found (available splits: {', '.join(available) or 'none'})")
    name = f"voc:{root}" + (f":{split}" if split else "")
    return read_voc_dirs(root / "Annotations", root / "JPEGImages", ids_file, classes, name=name, root=root)


def read_voc_dirs(annotations_dir: str | Path, images_dir: str | Path, ids_file: str | Path | None = None,
                  classes: list[str] | None = None, name: str | None = None,
                  root: Path | None = None) -> DetectionDataset:
    """Any folder of VOC XMLs beside a folder of images, optionally restricted by an id list (one id a line)."""
    annotations_dir, images_dir = Path(annotations_dir), Path(images_dir)
    for folder, what in ((annotations_dir, "annotations"), (images_dir, "images")):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: {what} folder not found")
    if ids_file is None:
        image_ids = sorted(p.stem for p in annotations_dir.glob("*.xml"))
        if not image_ids:
            raise DatasetError(f"{annotations_dir}: no .xml annotation files found")
    else:
        image_ids = read_id_list(Path(ids_file), annotations_dir)
    annotations = [parse_voc_xml(annotations_dir / f"{image_id}.xml") for image_id in image_ids]
    if classes is None:
        classes = sorted({obj.name for ann in annotations for obj in ann.objects})
    label_of = {c: i + 1 for i, c in enumerate(classes)}
    skips = SkipReport()
    records = [to_record(image_id, ann, images_dir, label_of, skips) for image_id, ann in zip(image_ids, annotations)]
    name = name or f"voc-dirs:{annotations_dir}:{images_dir}" + (f":{ids_file}" if ids_file else "")
    if skips:
        logger.warning("%s: %s", name, skips.summary())
    return DetectionDataset(records, classes, root=root or images_dir, name=name, skips=skips)


def read_id_list(ids_file: Path, annotations_dir: Path) -> list[str]:
    """Ids from a split file; each must have its XML (an absent one is an error naming both)."""
    if not ids_file.is_file():
        raise DatasetError(f"{ids_file}: id list not found")
    # VOC's per-class split files hold "id flag" pairs; the id is the first field.
    image_ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
    check_names(image_ids, "image id", ids_file)
    seen = set()
    for image_id in image_ids:
        if image_id in seen:
            raise DatasetError(f"{ids_file}: image id {image_id!r} is listed twice")
        seen.add(image_id)
    for image_id in image_ids:
        if not (annotations_dir / f"{image_id}.xml").is_file():
            raise DatasetError(f"{ids_file}: image id {image_id!r} is listed but {annotations_dir / (image_id + '.xml')} "
                               "does not exist")
    if not image_ids:
        raise DatasetError(f"{ids_file}: the id list is empty")
    return image_ids


def parse_voc_xml(path: Path) -> VocAnnotation:
    """Parse one annotation with defusedxml; malformed XML or missing fields name the file."""
    try:
        tree = ElementTree.parse(path)
    except (ElementTree.ParseError, DefusedXmlException) as err:
        raise DatasetError(f"{path}: malformed XML ({err})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read annotation ({err.strerror})") from None
    node = tree.getroot()
    width = _int_field(node, "size/width", path)
    height = _int_field(node, "size/height", path)
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: image size {width}x{height} is not positive")
    objects = []
    for k, obj in enumerate(node.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetError(f"{path}: object {k} has no <name>")
        check_names([name], "class name", f"{path}: object {k}")
        box = tuple(_number_field(obj, f"bndbox/{tag}", path) for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = _int_field(obj, "difficult", path, default=0) != 0
        objects.append(VocObject(name, box, difficult))
    filename = (node.findtext("filename") or "").strip() or None
    return VocAnnotation(path, filename, width, height, objects)


def to_record(image_id: str, ann: VocAnnotation, images_dir: Path, label_of: dict[str, int],
              skips: SkipReport) -> ImageRecord:
    """Validate boxes and class names, convert to our convention, resolve the image path safely."""
    boxes, labels, difficult = [], [], []
    for obj in ann.objects:
        if obj.name not in label_of:
            raise DatasetError(f"{ann.path}: unknown class {obj.name!r} (classes: {', '.join(label_of)})")
        xmin, ymin, xmax, ymax = obj.box
        if xmax < xmin or ymax < ymin:
            raise DatasetError(f"{ann.path}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) of {obj.name!r} has "
                               "xmax < xmin or ymax < ymin")
        if xmin < 1 or ymin < 1 or xmax > ann.width or ymax > ann.height:
            raise DatasetError(f"{ann.path}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) of {obj.name!r} lies outside "
                               f"the {ann.width}x{ann.height} image (VOC coordinates are 1-based, 1..width/height)")
        if xmin == xmax or ymin == ymax:
            skips.add(ZERO_SIZE, str(ann.path))
            continue
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        labels.append(label_of[obj.name])
        difficult.append(obj.difficult)
    n = len(boxes)
    return ImageRecord(image_id=image_id, image_path=resolve_image_path(image_id, ann, images_dir),
                       width=ann.width, height=ann.height, boxes=np.array(boxes, np.float32).reshape(n, 4),
                       labels=np.array(labels, np.int64), difficult=np.array(difficult, bool),
                       iscrowd=np.zeros(n, bool))


def resolve_image_path(image_id: str, ann: VocAnnotation, images_dir: Path) -> Path:
    """images_dir/<filename>, refusing names that escape images_dir; <id>.<ext> when there is no <filename>."""
    if ann.filename is None:
        candidates = [images_dir / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
        return next((p for p in candidates if p.is_file()), candidates[0])
    return image_path_inside(images_dir, ann.filename, ann.path)


def _text(node, field: str, path: Path) -> str:
    text = node.findtext(field)
    if text is None or not text.strip():
        raise DatasetError(f"{path}: missing <{field}>")
    return text.strip()


def _number_field(node, field: str, path: Path) -> float:
    text = _text(node, field, path)
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}: <{field}> is {text!r}, not a number") from None
    if not np.isfinite(value):
        raise DatasetError(f"{path}: <{field}> is {text!r}, not a finite number")
    return value


def _int_field(node, field: str, path: Path, default: int | None = None) -> int:
    if default is not None and not (node.findtext(field) or "").strip():
        return default  # absent or empty, as some annotation tools write <difficult/>
    value = _number_field(node, field, path)
    if value != int(value):
        raise DatasetError(f"{path}: <{field}> is {value:g}, not an integer")
    return int(value)
