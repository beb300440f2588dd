"""Image decoding with errors that name the file.

Policy: OpenCV decodes; what it refuses, PIL tries with truncated images allowed (a JPEG a few bytes
short, as real datasets hold, decodes with its last rows grey), and such a file is logged once per
process (`damaged_images` counts them). A file neither decodes is a DatasetError naming it. Float
images (e.g. 32-bit TIFF in [0, 1]) are scaled to 0..255, never cast to an all-black uint8.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile

from detect.errors import DatasetError

logger = logging.getLogger(__name__)

damaged_images: set[str] = set()  # files decoded only partially (truncated), warned about once each


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB [H,W,3] (grayscale and RGBA are converted)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is not None:
        return to_rgb_uint8(image, from_bgr=True)
    image = decode_damaged(data.tobytes()) if data.size else None
    if image is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    if str(path) not in damaged_images:
        damaged_images.add(str(path))
        logger.warning("%s: damaged or truncated image file, decoded as far as it goes", path)
    return to_rgb_uint8(image)


def decode_damaged(data: bytes) -> np.ndarray | None:
    """PIL's decoding of a truncated file (RGB or L array), or None if nothing decodes."""
    allowed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.array(image.convert("RGB"))  # a writable copy
    except Exception:  # noqa: BLE001 - PIL raises many types for undecodable data; all mean "cannot decode"
        return None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = allowed


def to_rgb_uint8(image: np.ndarray, from_bgr: bool = False) -> np.ndarray:
    """Grayscale, RGBA, 16-bit or float arrays -> uint8 RGB [H,W,3]."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(image.max()) if image.size else 0.0
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top  # [0,1] floats, 0..255, or wider
        image = np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
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
