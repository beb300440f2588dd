"""The one detection-dataset interface every reader (VOC, COCO, synthetic shapes) fills in.

A reader parses its annotation files once into `ImageRecord`s (boxes already in our convention:
0-based continuous x1,y1,x2,y2 in absolute pixels); the base class does the rest, so proposals,
training and evaluation see the same thing whatever the file format was.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from detect.data import images
from detect.data.images import read_image_rgb
from detect.errors import DatasetError


def unsafe_name_reason(name: str, what: str) -> str | None:
    """Why a class name or image id cannot become part of an output file name (None if it can).

    Class names end up in file names (`comp4_det_<split>_<class>.txt`) and image ids in converted
    layouts (`Annotations/<id>.xml`), so neither may hold a path separator or `..`.
    """
    if not isinstance(name, str) or not name.strip():
        return f"{what} {name!r} is empty"
    if "/" in name or "\\" in name or "\0" in name:
        return f"{what} {name!r} contains a path separator"
    dots = ".." in name if what == "class name" else name in (".", "..")
    if dots:
        return f"{what} {name!r} contains '..'"
    return None


def check_names(names, what: str, where) -> None:
    """Refuse class names / image ids that could steer a written file out of its folder (DatasetError naming `where`)."""
    for name in names:
        reason = unsafe_name_reason(name, what)
        if reason:
            raise DatasetError(f"{where}: {reason}; it would be used in output file names, so it is refused")


def file_sample(path: Path, size: int = 4096) -> bytes:
    """The file's length and `size` bytes from its start, middle and end (b"missing" when unreadable)."""
    try:
        with open(path, "rb") as fh:
            length = os.fstat(fh.fileno()).st_size
            parts = [str(length).encode()]
            for offset in sorted({0, max(0, length // 2 - size // 2), max(0, length - size)}):
                fh.seek(offset)
                parts.append(fh.read(size))
    except OSError:
        return b"missing;"
    return b"|".join(parts) + b";"


@dataclass
class ImageRecord:
    """One annotated image. Boxes [N,4] float32 xyxy (ours); labels [N] int64 in 1..C."""

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray  # bool [N]: VOC "difficult", neither counted nor penalised by VOC AP
    iscrowd: np.ndarray  # bool [N]: COCO crowd regions, kept for evaluation, never training targets
    coco_image_id: int | None = None  # the id in the source COCO JSON, when there is one

    def __post_init__(self) -> None:
        n = len(self.boxes)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(n)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(n)


@dataclass
class SkipReport:
    """Counted, reported skips (e.g. zero-size boxes): a policy, never a silent loss."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.examples.setdefault(reason, where)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        return "; ".join(f"skipped {n} {reason} (first in {self.examples[reason]})" for reason, n in self.counts.items())


class DetectionDataset(Dataset):
    """torchvision-style detection dataset: `ds[i] -> (image float [3,H,W] in [0,1], target dict)`.

    Labels are 1..C with `classes[label - 1]` the name; 0 is background. The training target
    excludes crowd regions; `target(i, training=False)` keeps everything for evaluation.
    `transform(image_uint8_hwc, target) -> (image, target)` runs on the training sample if given.
    """

    def __init__(self, records: list[ImageRecord], classes: list[str], root: Path | None = None,
                 name: str = "dataset", skips: SkipReport | None = None,
                 category_ids: list[int] | None = None, transform=None) -> None:
        self.records = records
        self.classes = list(classes)
        check_names(self.classes, "class name", name)
        if len(set(self.classes)) != len(self.classes):
            raise DatasetError(f"{name}: duplicate class names {sorted({c for c in self.classes if self.classes.count(c) > 1})}")
        self.root = root
        self.name = name
        self.skips = skips or SkipReport()
        # COCO category id of each class (label i -> category_ids[i-1]); 1..C when the source is not COCO.
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(classes) + 1))
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        """The image as uint8 RGB [H,W,3]. Clear error naming the file if it is missing or corrupt."""
        record = self.records[index]
        image = read_image_rgb(record.image_path)
        if image.shape[:2] != (record.height, record.width):
            raise DatasetError(
                f"{record.image_path}: image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{record.width}x{record.height}"
            )
        return image

    def check_images(self) -> None:
        """Decode every image once, so a missing or corrupt file fails before a long run, not inside it."""
        for index in range(len(self.records)):
            self.load_image(index)

    def image_report(self) -> dict:
        """Decode every image: {"decoded": n, "damaged": [paths decoded only in part (truncated)],
        "unreadable": [one message per image that cannot be used: missing, undecodable, wrong size]}."""
        report = {"decoded": 0, "damaged": [], "unreadable": []}
        for index, record in enumerate(self.records):
            before = len(images.damaged_images)
            was_known = str(record.image_path) in images.damaged_images
            try:
                self.load_image(index)
            except DatasetError as err:
                report["unreadable"].append(str(err))
                continue
            report["decoded"] += 1
            if was_known or len(images.damaged_images) > before:
                report["damaged"].append(str(record.image_path))
        return report

    def target(self, index: int, training: bool = False) -> dict:
        record = self.records[index]
        keep = ~record.iscrowd if training else np.ones(len(record.labels), dtype=bool)
        return {
            "boxes": torch.from_numpy(record.boxes[keep]),
            "labels": torch.from_numpy(record.labels[keep]),
            "difficult": torch.from_numpy(record.difficult[keep]),
            "iscrowd": torch.from_numpy(record.iscrowd[keep]),
            "image_id": record.image_id,
            "index": index,
            "size": (record.height, record.width),
        }

    def __getitem__(self, index: int):
        image = self.load_image(index)
        target = self.target(index, training=True)
        if self.transform is not None:
            image, target = self.transform(image, target)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        return tensor, target

    def fingerprint(self) -> str:
        """A short hash of the image ids and sizes: proposal caches record it to refuse a wrong dataset."""
        h = hashlib.sha1()
        for r in self.records:
            h.update(f"{r.image_id}:{r.width}x{r.height};".encode())
        return h.hexdigest()[:16]

    def content_fingerprint(self) -> str:
        """A short hash of what the images hold: each file's size and three 4 KiB samples (start, middle,
        end), so the same ids and sizes with other pixels give another value (proposal caches check it).
        Computed once per dataset object; no mtime, so a copied dataset keeps its value."""
        if getattr(self, "_content_fingerprint", None) is None:
            h = hashlib.sha1(self.fingerprint().encode())
            for r in self.records:
                h.update(file_sample(r.image_path))
            self._content_fingerprint = h.hexdigest()[:16]
        return self._content_fingerprint


class DatasetSubset(DetectionDataset):
    """The images at `indices` of `parent`, read through the parent (so synthetic sets work too)."""

    def __init__(self, parent: DetectionDataset, indices: list[int], name: str) -> None:
        super().__init__([parent.records[i] for i in indices], parent.classes, parent.root, name,
                         category_ids=parent.category_ids)
        self.parent, self.indices = parent, list(indices)

    def load_image(self, index: int) -> np.ndarray:
        return self.parent.load_image(self.indices[index])
