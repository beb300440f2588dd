"""ImageNet-style classification data: an ImageFolder on disk and a synthetic one for tests and demos.

Layout `ROOT/<split>/<class>/*.jpg` (ImageNet's train/val after the usual re-foldering). Decoding
and augmentation run in DataLoader workers; an image that cannot be decoded mid-run is not fatal:
`__getitem__` returns a marker, `collate_skipping_corrupt` drops it from the batch and carries its
path back to the main process, which counts and reports it (`CorruptImageCounter`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from detect.data.images import read_image_rgb
from detect.data.samplers import index_seed
from detect.errors import DatasetError
from detect.utils.files import current_umask

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(split_dir: Path) -> list[str]:
    """Class names are the sub-folder names, sorted (torchvision's ImageFolder convention)."""
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: image folder not found (expected <root>/<split>/<class>/*.jpg)")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{split_dir}: no class sub-folders (expected <root>/<split>/<class>/*.jpg)")
    return classes


class ImageFolderDataset(Dataset):
    """`ds[i] -> (image, label, index)`; labels 0..C-1 (classification has no background class).

    `transform(image_uint8_hwc, seed) -> tensor` is seeded per sample, so a sample's augmentation
    depends on (seed, epoch, index) only: identical across worker counts, processes and resumes.
    An index may be an int or `(index, seed)` as yielded by `SeededSampler`. A corrupt image
    yields `(None, -1, index)`, dropped by `collate_skipping_corrupt`.
    """

    def __init__(self, root: str | Path, split: str = "train", transform=None, classes: list[str] | None = None) -> None:
        self.root = Path(root)
        split_dir = self.root / split
        self.classes = list(classes) if classes is not None else find_classes(split_dir)
        if classes is not None and not split_dir.is_dir():
            raise DatasetError(f"{split_dir}: image folder not found")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            class_dir = split_dir / name
            if not class_dir.is_dir():
                continue  # a class absent from this split (e.g. a small val set) is allowed
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            self.samples.extend((p, label) for p in files)
        if not self.samples:
            raise DatasetError(f"{split_dir}: no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> np.ndarray:
        return read_image_rgb(self.samples[index][0])

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, index_seed(0, 0, key))
        path, label = self.samples[index]
        try:
            image = read_image_rgb(path)
        except DatasetError:
            return None, -1, index
        if self.transform is not None:
            image = self.transform(image, seed)
        else:
            image = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
        return image, label, index


@dataclass
class Batch:
    images: torch.Tensor  # [B,3,H,W] float
    labels: torch.Tensor  # [B] int64
    indices: torch.Tensor  # [B] dataset indices
    corrupt: list[int] = field(default_factory=list)  # dataset indices dropped from this batch

    def __len__(self) -> int:
        return len(self.labels)


def collate_skipping_corrupt(items: list[tuple]) -> Batch:
    """Stack the good samples; report the indices of corrupt ones instead of failing the batch."""
    good = [it for it in items if it[0] is not None]
    corrupt = [int(it[2]) for it in items if it[0] is None]
    if not good:
        return Batch(torch.empty(0, 3, 1, 1), torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64), corrupt)
    images = torch.stack([it[0] for it in good])
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    indices = torch.tensor([it[2] for it in good], dtype=torch.int64)
    return Batch(images, labels, indices, corrupt)


class CorruptImageCounter:
    """Counts and names the images skipped as unreadable (each reported once, however many epochs)."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset
        self.paths: set[str] = set()
        self.occurrences = 0

    def add(self, indices: list[int]) -> list[str]:
        """Record skipped indices; returns the paths seen for the first time (to print a warning)."""
        new = []
        for i in indices:
            self.occurrences += 1
            path = str(self.dataset.samples[i][0])
            if path not in self.paths:
                self.paths.add(path)
                new.append(path)
        return new

    def summary(self) -> str:
        if not self.paths:
            return "no corrupt images"
        first = sorted(self.paths)[0]
        return f"skipped {len(self.paths)} corrupt image(s) ({self.occurrences} time(s) in all; first: {first})"


# ---------------------------------------------------------------------------------------------
# Synthetic image folder: class-distinct pictures written to disk as JPEG, for tests and demos.

# Ordered from the easiest to tell apart (stripe orientation, a texture cue) to the subtler outlines.
SYNTHETIC_SHAPES = ("hbars", "vbars", "disc", "cross", "ring", "square", "triangle", "diamond")


def write_synthetic_image_folder(root: str | Path, num_classes: int = 4, train_per_class: int = 40,
                                 val_per_class: int = 10, size: int = 64, seed: int = 0) -> Path:
    """Write `root/{train,val}/<class>/*.jpg`: each class one shape, random colour/position/scale/noise.

    Deterministic by seed; written to a temporary sibling and renamed, so a crash never leaves half
    a dataset behind. Returns `root`. An existing complete folder is reused as is.
    """
    root = Path(root)
    if not 1 <= num_classes <= len(SYNTHETIC_SHAPES):
        raise DatasetError(f"{root}: synthetic image folder supports 1..{len(SYNTHETIC_SHAPES)} classes, got {num_classes}")
    if (root / "val").is_dir() and (root / "train").is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        rng = np.random.default_rng(seed)
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for label, shape in enumerate(SYNTHETIC_SHAPES[:num_classes]):
                class_dir = tmp / split / shape
                class_dir.mkdir(parents=True)
                for k in range(count):
                    image = draw_synthetic_image(shape, size, rng)
                    cv2.imwrite(str(class_dir / f"{shape}_{k:04d}.jpg"), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; a plain mkdir would not
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def draw_synthetic_image(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB picture of `shape` on a noisy random-colour background (colour is no cue)."""
    background = rng.integers(0, 256, 3)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    noise = rng.normal(0, 12, (size, size, 3))
    colour = tuple(int(c) for c in (background + rng.integers(80, 176, 3)) % 256)
    r = int(size * rng.uniform(0.22, 0.36))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    t = max(2, r // 3)
    if shape == "disc":
        cv2.circle(image, (cx, cy), r, colour, -1)
    elif shape == "ring":
        cv2.circle(image, (cx, cy), r, colour, t)
    elif shape == "square":
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(image, [pts], colour)
    elif shape == "diamond":
        pts = np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]], np.int32)
        cv2.fillPoly(image, [pts], colour)
    elif shape == "cross":
        cv2.rectangle(image, (cx - r, cy - t // 2), (cx + r, cy + t // 2), colour, -1)
        cv2.rectangle(image, (cx - t // 2, cy - r), (cx + t // 2, cy + r), colour, -1)
    elif shape == "hbars":
        for y in range(cy - r, cy + r, 2 * t):
            cv2.rectangle(image, (cx - r, y), (cx + r, y + t - 1), colour, -1)
    elif shape == "vbars":
        for x in range(cx - r, cx + r, 2 * t):
            cv2.rectangle(image, (x, cy - r), (x + t - 1, cy + r), colour, -1)
    else:
        raise ValueError(f"unknown synthetic shape {shape!r}")
    return np.clip(image + noise, 0, 255).astype(np.uint8)
