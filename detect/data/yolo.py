"""YOLO (ultralytics) layout <-> DetectionDataset: the layout most users bring today.

    data.yaml   names: {0: a, 1: b} or [a, b]; nc (optional, must match); path (optional root,
                relative to the YAML's folder; without it the YAML's folder); train / val / test:
                an image folder, a list of them, or a .txt file of image paths (relative to the root)
    images/<split>/<stem>.<ext>   and beside it   labels/<split>/<stem>.txt

Each label line is `class cx cy w h`, normalised to [0, 1] by the image's width and height (more
than 4 coordinates: an ultralytics polygon, read as its bounding box). The label file of an image
is its path with the last `images` folder replaced by `labels` and the extension by `.txt`; a
missing or empty one is an image without objects, as ultralytics treats it. Policies: a class index
outside names, a non-number, a coordinate more than 1e-3 outside [0, 1] or a negative size is an
error naming the file and line; coordinates within that tolerance are clipped; zero-size boxes are
skipped and counted. YOLO has no "difficult" flag: every object is an ordinary one.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from detect.data.dataset import DetectionDataset, ImageRecord, SkipReport, check_names
from detect.errors import DatasetError
from detect.utils.files import atomic_write_bytes, file_in

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ZERO_SIZE = "zero-size boxes (w == 0 or h == 0)"
TOLERANCE = 1e-3  # normalised units a coordinate may stray outside [0, 1] (float rounding in exported files)
DIGITS = 8  # decimals written per normalised coordinate: 1e-8 of a 10,000 px side is 1e-4 px


def read_yolo(data_yaml: str | Path, split: str = "val", classes: list[str] | None = None) -> DetectionDataset:
    """The images of one split of a data.yaml, with their label files."""
    data_yaml = Path(data_yaml)
    config = load_data_yaml(data_yaml)
    names = config["names"]
    if classes is not None and list(classes) != names:
        raise DatasetError(f"{data_yaml}: names {names} differ from the given class list {list(classes)}")
    root = data_yaml.parent / config["path"] if config.get("path") else data_yaml.parent
    if config.get(split) in (None, "", []):
        present = [s for s in ("train", "val", "test") if config.get(s)]
        raise DatasetError(f"{data_yaml}: no {split!r} split (splits: {', '.join(present) or 'none'})")
    image_paths = split_images(config[split], root, data_yaml, split)
    stems: dict[str, Path] = {}
    for path in image_paths:
        if path.stem in stems:
            raise DatasetError(f"{data_yaml}: split {split!r} holds two images named {path.stem!r}: "
                               f"{stems[path.stem]} and {path}")
        stems[path.stem] = path
    check_names(list(stems), "image id", data_yaml)
    skips = SkipReport()
    records = [to_record(path, label_path(path), len(names), skips) for path in image_paths]
    name = f"yolo:{data_yaml}:{split}"
    if skips:
        logger.warning("%s: %s", name, skips.summary())
    return DetectionDataset(records, names, root=root, name=name, skips=skips)


def load_data_yaml(path: Path) -> dict:
    """data.yaml checked: names as a list (from a list or an index -> name mapping), nc consistent."""
    if not path.is_file():
        raise DatasetError(f"{path}: YOLO data.yaml not found")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict) or "names" not in config:
        raise DatasetError(f"{path}: a YOLO data.yaml needs a 'names' entry (class index -> name)")
    names = config["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DatasetError(f"{path}: names keys must be the class indices 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{path}: names must be a non-empty list or mapping of class names")
    check_names(names, "class name", f"{path}: names")
    if "nc" in config and config["nc"] != len(names):
        raise DatasetError(f"{path}: nc is {config['nc']} but names lists {len(names)} classes")
    return {**config, "names": names}


def split_images(entry, root: Path, data_yaml: Path, split: str) -> list[Path]:
    """The image files of a split entry: folder(s) (searched recursively, sorted) or .txt list file(s)."""
    found = []
    for item in entry if isinstance(entry, list) else [entry]:
        if not isinstance(item, str):
            raise DatasetError(f"{data_yaml}: {split}: expected a folder or .txt file, got {item!r}")
        place = root / item
        if place.is_dir():
            found += sorted(p for p in place.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif place.is_file() and place.suffix == ".txt":
            lines = [line.strip() for line in place.read_text().splitlines() if line.strip()]
            found += [Path(line) if Path(line).is_absolute() else root / line for line in lines]
        else:
            raise DatasetError(f"{data_yaml}: {split} {item!r}: {place} is neither an image folder nor a .txt list")
    if not found:
        raise DatasetError(f"{data_yaml}: split {split!r} holds no images")
    return found


def label_path(image_path: Path) -> Path:
    """ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image_path.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, SyntaxError) as err:
        raise DatasetError(f"{path}: not a readable image ({err})") from None


def to_record(image_path: Path, labels_file: Path, num_classes: int, skips: SkipReport) -> ImageRecord:
    width, height = image_size(image_path)
    boxes, labels = [], []
    lines = labels_file.read_text().splitlines() if labels_file.is_file() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{labels_file}:{number}"
        box, label = parse_label_line(line, num_classes, where)
        x1, y1, x2, y2 = box
        if x2 == x1 or y2 == y1:
            skips.add(ZERO_SIZE, where)
            continue
        boxes.append((x1 * width, y1 * height, x2 * width, y2 * height))
        labels.append(label)
    n = len(boxes)
    return ImageRecord(image_id=image_path.stem, image_path=image_path, width=width, height=height,
                       boxes=np.array(boxes, np.float32).reshape(n, 4), labels=np.array(labels, np.int64),
                       difficult=np.zeros(n, bool), iscrowd=np.zeros(n, bool))


def parse_label_line(line: str, num_classes: int, where: str) -> tuple[tuple[float, float, float, float], int]:
    """`class cx cy w h` (or `class x1 y1 x2 y2 ...`, a polygon) -> normalised xyxy and label 1..C."""
    fields = line.split()
    try:
        values = [float(v) for v in fields[1:]]
        index = int(fields[0])
    except ValueError:
        raise DatasetError(f"{where}: {line.strip()!r} is not 'class cx cy w h' numbers") from None
    if len(values) < 4 or (len(values) > 4 and len(values) % 2):
        raise DatasetError(f"{where}: expected 'class cx cy w h' (or a polygon of x y pairs), got {len(fields)} values")
    if not 0 <= index < num_classes:
        raise DatasetError(f"{where}: class index {index} is outside names (0..{num_classes - 1})")
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f"{where}: {line.strip()!r} holds NaN or infinity")
    if len(values) == 4:
        cx, cy, w, h = values
        if w < 0 or h < 0:
            raise DatasetError(f"{where}: negative width or height in {line.strip()!r}")
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    else:
        xs, ys = values[0::2], values[1::2]
        box = (min(xs), min(ys), max(xs), max(ys))
    if min(box) < -TOLERANCE or max(box) > 1 + TOLERANCE:
        raise DatasetError(f"{where}: box {line.strip()!r} lies outside the image (coordinates are normalised to 0..1)")
    return tuple(min(max(v, 0.0), 1.0) for v in box), index + 1


def label_lines(record: ImageRecord) -> str:
    """An image's objects as YOLO label lines (class index from 0, normalised centre and size)."""
    lines = []
    for (x1, y1, x2, y2), label in zip(record.boxes.astype(np.float64), record.labels):
        cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
        w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
        lines.append(f"{int(label) - 1} {cx:.{DIGITS}f} {cy:.{DIGITS}f} {w:.{DIGITS}f} {h:.{DIGITS}f}\n")
    return "".join(lines)


def write_yolo_layout(dataset: DetectionDataset, out_dir: str | Path, splits: dict[str, list[int]]) -> Path:
    """OUT/images/<split>/<id><ext> (the source file's bytes; PNG for in-memory images),
    OUT/labels/<split>/<id>.txt and OUT/data.yaml (names, one entry per split); every file atomic."""
    out_dir = Path(out_dir)
    for split, indices in splits.items():
        for index in indices:
            record = dataset.records[index]
            write_image_copy(dataset, index, out_dir / "images" / split)
            text = label_lines(record).encode()
            atomic_write_bytes(file_in(out_dir / "labels" / split, f"{record.image_id}.txt"), lambda fh: fh.write(text))
    config = {"names": dict(enumerate(dataset.classes)), "nc": len(dataset.classes),
              **{split: f"images/{split}" for split in splits}}
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()
    atomic_write_bytes(out_dir / "data.yaml", lambda fh: fh.write(text))
    return out_dir / "data.yaml"


def write_image_copy(dataset: DetectionDataset, index: int, folder: Path) -> Path:
    record = dataset.records[index]
    source = Path(record.image_path)
    if source.is_file():
        data = source.read_bytes()
        path = file_in(folder, f"{record.image_id}{source.suffix.lower()}")
    else:  # generated in memory (the shapes set): lossless PNG
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(dataset.load_image(index)[:, :, ::-1]))
        if not ok:
            raise OSError(f"{folder}: could not encode image {record.image_id}")
        data, path = encoded.tobytes(), file_in(folder, f"{record.image_id}.png")
    atomic_write_bytes(path, lambda fh: fh.write(data))
    return path
