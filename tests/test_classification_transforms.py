"""The papers' ImageNet augmentations: scale jitter, crops, AlexNet PCA colour shift, mean subtraction."""
from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from detect.config import load_config
from detect.data.classification_transforms import (IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, AugmentConfig,
                                                   MultiScaleTransform, PCAColourShift, build_eval_transform,
                                                   build_train_transform, estimate_rgb_pca)
from detect.errors import ConfigError


def random_image(h=60, w=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_pca_colour_shift_adds_one_rgb_offset_along_the_eigenvectors():
    image = np.full((8, 8, 3), 128, np.uint8).astype(np.float32) / 255
    t = PCAColourShift(std=0.1, p=1.0)
    t.set_random_seed(7)
    out = t(image=image)["image"]
    shift = out - image
    assert np.allclose(shift, shift[0, 0], atol=1e-6), "the same offset is added to every pixel"
    t.set_random_seed(7)
    alpha = t.get_params()["alpha"]
    expected = np.asarray(IMAGENET_PCA_EIGVEC) @ (alpha * np.asarray(IMAGENET_PCA_EIGVAL))
    assert np.allclose(shift[0, 0], expected, atol=1e-6)
    assert np.abs(expected).max() > 0


def test_albumentations_fancy_pca_is_not_alexnets_constant_offset():
    """Why PCAColourShift exists: albumentations' FancyPCA scales the per-image centred pixels."""
    image = random_image(16, 16).astype(np.float32) / 255
    out = A.Compose([A.FancyPCA(alpha=0.5, p=1.0)], seed=1)(image=image)["image"]
    shift = (out - image).reshape(-1, 3)
    assert not np.allclose(shift, shift[0], atol=1e-4)


def test_estimate_rgb_pca_recovers_a_known_covariance():
    rng = np.random.default_rng(0)
    direction = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    pixels = 128 + rng.normal(0, 40, (20000, 1)) * direction + rng.normal(0, 4, (20000, 3))
    image = np.clip(pixels, 0, 255).astype(np.uint8).reshape(100, 200, 3)
    eigval, eigvec = estimate_rgb_pca([image], max_pixels_per_image=20000)
    assert eigval[0] > 20 * eigval[1] > 0
    assert abs(abs(eigvec[:, 0] @ direction) - 1) < 1e-2


@pytest.mark.parametrize("scale", [[40, 40], [40, 80]])
def test_scale_crop_gives_crop_size_and_isotropic_rescale(scale):
    cfg = AugmentConfig(crop_size=32, scale=scale, pca_std=0.0, flip=False)
    t = build_train_transform(cfg)
    shortest = set()
    for seed in range(30):
        out = t(random_image(), seed)
        assert out.shape == (3, 32, 32)
        resize = t.compose.transforms[0]
        resize.set_random_seed(seed)
        shortest.add(min(resize(image=random_image())["image"].shape[:2]))
    assert min(shortest) >= scale[0] and max(shortest) <= scale[1]
    assert (len(shortest) > 5) == (scale[0] != scale[1])


def test_area_crop_is_googlenets_random_resized_crop():
    cfg = AugmentConfig(crop="area", crop_size=24, area=[0.08, 1.0], aspect=[3 / 4, 4 / 3], photometric=0.4)
    t = build_train_transform(cfg)
    crop = t.compose.transforms[0]
    assert isinstance(crop, A.RandomResizedCrop)
    assert crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((0.75, 4 / 3))
    outs = [t(random_image(), s) for s in range(4)]
    assert all(o.shape == (3, 24, 24) for o in outs)
    assert not torch.equal(outs[0], outs[1])


def test_mean_subtraction_and_standardisation():
    image = np.full((40, 40, 3), (255, 128, 0), np.uint8)
    base = dict(crop_size=32, scale=[40, 40], pca_std=0.0, flip=False)
    plain = build_eval_transform(AugmentConfig(**base, normalize="none"))(image)
    mean = build_eval_transform(AugmentConfig(**base, normalize="mean"))(image)
    std = build_eval_transform(AugmentConfig(**base, normalize="mean_std"))(image)
    rgb = torch.tensor([1.0, 128 / 255, 0.0])
    m, s = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(plain[:, 0, 0], rgb, atol=1e-6)
    assert torch.allclose(mean[:, 0, 0], rgb - m, atol=1e-6)
    assert torch.allclose(std[:, 0, 0], (rgb - m) / s, atol=1e-5)


def test_multi_scale_transform_rescales_the_shortest_side_to_each_q():
    outs = MultiScaleTransform(AugmentConfig(crop_size=32, scale=[40, 40]), [32, 48])(random_image(60, 90))
    assert [tuple(o.shape) for o in outs] == [(3, 32, 48), (3, 48, 72)]


def test_bad_augment_config_names_the_problem():
    with pytest.raises(ConfigError, match="smaller than crop_size"):
        load_config(AugmentConfig, overrides=["crop_size=224", "scale=[128,256]"])
    with pytest.raises(ConfigError, match="area"):
        load_config(AugmentConfig, overrides=["area=[0.5,2]"])
