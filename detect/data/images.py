"""Image decoding with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detect.errors import DatasetError


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB [H,W,3] (grayscale and RGBA are converted)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    return to_rgb_uint8(image, from_bgr=True)


def to_rgb_uint8(image: np.ndarray, from_bgr: bool = False) -> np.ndarray:
    """Grayscale, RGBA or 16-bit arrays -> uint8 RGB [H,W,3]."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image of shape [H,W], [H,W,1], [H,W,3] or [H,W,4], got {image.shape}")
    if from_bgr:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def image_path_inside(images_dir: Path, file_name: str, annotation_file: Path) -> Path:
    """images_dir/file_name, refusing a name from an annotation file that would escape images_dir."""
    image_path = Path(images_dir) / file_name
    if Path(file_name).is_absolute() or not image_path.resolve().is_relative_to(Path(images_dir).resolve()):
        raise DatasetError(f"{annotation_file}: image file name {file_name!r} points outside the images folder "
                           f"{images_dir}")
    return image_path
