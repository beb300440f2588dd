"""The papers' ImageNet augmentations, built from albumentations.

- VGG / ResNet: isotropic rescale of the shortest side to S (fixed, or jittered in [Smin, Smax]),
  random crop, horizontal flip, AlexNet PCA colour shift, mean-RGB subtraction.
- GoogLeNet: random crops of 8-100% of the area with aspect ratio in [3/4, 4/3]
  (albumentations' RandomResizedCrop), flip, optional photometric distortion.

albumentations' own FancyPCA takes the PCA of each image and scales the centred pixels; AlexNet adds
one constant RGB offset along the eigenvectors of the *training set's* pixel covariance, so that one
is written here as `PCAColourShift`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

# RGB pixel PCA of ImageNet (pixels in [0,1]): eigenvalues and eigenvectors as columns; the values
# used by fb.resnet.torch and most AlexNet re-implementations.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PCAColourShift(A.ImageOnlyTransform):
    """AlexNet's lighting noise: add sum_i alpha_i * lambda_i * p_i to every pixel, alpha_i ~ N(0, std)."""

    def __init__(self, std: float = 0.1, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.std = float(std)
        self.eigval = np.asarray(eigval, dtype=np.float32).reshape(3)
        self.eigvec = np.asarray(eigvec, dtype=np.float32).reshape(3, 3)

    def get_params(self) -> dict:
        return {"alpha": self.random_generator.normal(0.0, self.std, 3).astype(np.float32)}

    def apply(self, img: np.ndarray, alpha: np.ndarray, **params) -> np.ndarray:
        shift = self.eigvec @ (alpha * self.eigval)  # [3] RGB offset, in [0,1] pixel units
        if img.dtype == np.uint8:
            return np.clip(img.astype(np.float32) + shift * 255.0, 0, 255).round().astype(np.uint8)
        return img + shift.astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("std", "eigval", "eigvec")


def estimate_rgb_pca(images, max_pixels_per_image: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance of uint8 images, in [0,1] units."""
    rng = np.random.default_rng(seed)
    samples = []
    for image in images:
        pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
        if len(pixels) > max_pixels_per_image:
            pixels = pixels[rng.choice(len(pixels), max_pixels_per_image, replace=False)]
        samples.append(pixels)
    eigval, eigvec = np.linalg.eigh(np.cov(np.concatenate(samples), rowvar=False))
    order = eigval.argsort()[::-1]
    return eigval[order], eigvec[:, order]


@dataclass
class AugmentConfig:
    """Training augmentation. `crop: scale` is VGG/ResNet (rescale to S then crop); `area` is GoogLeNet."""

    crop: Literal["scale", "area"] = "scale"  # scale: rescale to S, crop (VGG/ResNet); area: area crop (GoogLeNet)
    crop_size: int = 224  # side of the square training crop
    scale: list[int] = field(default_factory=lambda: [256, 256])  # [Smin, Smax]; equal -> fixed S
    area: list[float] = field(default_factory=lambda: [0.08, 1.0])  # crop=area: [min, max] fraction of the image
    aspect: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # crop=area: [min, max] aspect ratio
    flip: bool = True  # random horizontal flips
    pca_std: float = 0.1  # AlexNet colour shift; 0 turns it off
    photometric: float = 0.0  # brightness/contrast/saturation jitter strength (GoogLeNet); 0 = off
    normalize: Literal["none", "mean", "mean_std"] = "none"  # "mean" = VGG's mean-RGB subtraction
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # RGB mean (0..1) for normalize
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))  # RGB std (0..1) for normalize=mean_std

    def validate(self) -> None:
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [Smin, Smax] with 0 < Smin <= Smax, got {self.scale}")
        if self.crop == "scale" and self.scale[0] < self.crop_size:
            raise ValueError(f"scale {self.scale} is smaller than crop_size {self.crop_size}")
        if len(self.area) != 2 or not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError(f"area must be [min, max] within (0, 1], got {self.area}")
        if len(self.aspect) != 2 or not 0 < self.aspect[0] <= self.aspect[1]:
            raise ValueError(f"aspect must be [min, max] with 0 < min <= max, got {self.aspect}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three (RGB) values")


def to_tensor_steps(cfg: AugmentConfig) -> list:
    """uint8 HWC -> float [3,H,W]: [0,1], minus the mean RGB, or standardised, as configured."""
    if cfg.normalize == "none":
        norm = A.ToFloat(max_value=255.0)
    elif cfg.normalize == "mean":
        norm = A.Normalize(mean=tuple(cfg.mean), std=(1.0, 1.0, 1.0), max_pixel_value=255.0)
    else:
        norm = A.Normalize(mean=tuple(cfg.mean), std=tuple(cfg.std), max_pixel_value=255.0)
    return [norm, ToTensorV2()]


def build_train_transform(cfg: AugmentConfig) -> "SeededTransform":
    size = cfg.crop_size
    if cfg.crop == "scale":
        smin, smax = cfg.scale
        steps = [A.SmallestMaxSize(max_size=smin if smin == smax else list(range(smin, smax + 1))),
                 A.RandomCrop(size, size, pad_if_needed=True)]
    else:
        steps = [A.RandomResizedCrop(size=(size, size), scale=tuple(cfg.area), ratio=tuple(cfg.aspect))]
    if cfg.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if cfg.photometric > 0:
        s = cfg.photometric
        steps.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=0.0, p=1.0))
    if cfg.pca_std > 0:
        steps.append(PCAColourShift(std=cfg.pca_std))
    return SeededTransform(A.Compose(steps + to_tensor_steps(cfg)))


def build_eval_transform(cfg: AugmentConfig, scale: int | None = None, centre_crop: bool = True) -> "SeededTransform":
    """Shortest side to Q (default Smin... the middle of the training range), then a centre crop."""
    q = scale or (cfg.scale[0] + cfg.scale[1]) // 2
    steps = [A.SmallestMaxSize(max_size=q)]
    if centre_crop:
        steps.append(A.CenterCrop(cfg.crop_size, cfg.crop_size, pad_if_needed=True))
    return SeededTransform(A.Compose(steps + to_tensor_steps(cfg)))


class MultiScaleTransform:
    """Evaluation: the whole image rescaled to each Q in turn -> tuple of float [3,H_q,W_q]."""

    def __init__(self, cfg: AugmentConfig, scales: list[int]) -> None:
        self.per_scale = [build_eval_transform(cfg, q, centre_crop=False) for q in scales]

    def __call__(self, image: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, ...]:
        return tuple(t(image, seed) for t in self.per_scale)


class SeededTransform:
    """An albumentations Compose reseeded for every sample, so augmentation is a function of the seed."""

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose

    def __call__(self, image: np.ndarray, seed: int = 0) -> torch.Tensor:
        self.compose.set_random_seed(seed)
        return self.compose(image=image)["image"]
