"""ImageFolder classification data: labels, synthetic folder, corrupt images, resumable seeded order."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detect.data.classification import (CorruptImageCounter, ImageFolderDataset, SYNTHETIC_SHAPES,
    collate_skipping_corrupt, write_synthetic_image_folder)
from detect.data.classification_transforms import AugmentConfig, build_train_transform
from detect.data.samplers import SeededSampler
from detect.errors import DatasetError


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_synthetic_image_folder(tmp_path_factory.mktemp("cls") / "synthetic", num_classes=3,
                                        train_per_class=6, val_per_class=2, size=48, seed=3)


def test_image_folder_reads_classes_and_labels(folder):
    ds = ImageFolderDataset(folder, "train")
    assert ds.classes == sorted(SYNTHETIC_SHAPES[:3])
    assert len(ds) == 18 and ds.num_classes == 3
    assert sorted(set(ds.targets)) == [0, 1, 2]
    image, label, index = ds[7]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert label == ds.targets[7] and index == 7
    assert ds.samples[7][0].parent.name == ds.classes[label]


def test_synthetic_folder_is_deterministic_by_seed(tmp_path):
    a = write_synthetic_image_folder(tmp_path / "a", 2, 2, 1, 32, seed=5)
    b = write_synthetic_image_folder(tmp_path / "b", 2, 2, 1, 32, seed=5)
    c = write_synthetic_image_folder(tmp_path / "c", 2, 2, 1, 32, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    assert not list(tmp_path.glob(".*")), "no temporary folder left behind"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere" / "train")):
        ImageFolderDataset(tmp_path / "nowhere", "train")
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", "train")


def test_corrupt_images_are_counted_reported_and_skipped(folder, tmp_path):
    root = tmp_path / "with_corrupt"

    shutil.copytree(folder, root)
    bad = [root / "train" / "disc" / "zz_truncated.jpg", root / "train" / "hbars" / "zz_empty.jpg"]
    good_bytes = next((root / "train" / "disc").glob("*.jpg")).read_bytes()
    bad[0].write_bytes(good_bytes[:20])  # a JPEG header and nothing else
    bad[1].write_bytes(b"")
    ds = ImageFolderDataset(root, "train")
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_skipping_corrupt)
    counter = CorruptImageCounter(ds)
    seen, reported = 0, []
    for _ in range(2):  # two epochs: each corrupt image is reported once, counted twice
        for batch in loader:
            reported += counter.add(batch.corrupt)
            seen += len(batch)
            assert batch.images.shape[0] == len(batch.labels) == len(batch.indices)
    assert seen == 2 * (len(ds) - 2)
    assert sorted(reported) == sorted(map(str, bad))
    assert counter.occurrences == 4
    assert "skipped 2 corrupt image(s)" in counter.summary()


def test_sampler_resumes_mid_epoch_and_shards_processes(folder):
    ds = ImageFolderDataset(folder, "train")
    full = SeededSampler(ds, seed=11)
    full.set_epoch(3)
    order = list(full)
    resumed = SeededSampler(ds, seed=11)
    resumed.set_epoch(3, start=10)
    assert list(resumed) == order[10:] and len(resumed) == len(order) - 10
    other_epoch = SeededSampler(ds, seed=11)
    other_epoch.set_epoch(4)
    assert [i for i, _ in other_epoch] != [i for i, _ in order]
    shards = [SeededSampler(ds, num_replicas=2, rank=r, seed=11) for r in range(2)]
    for s in shards:
        s.set_epoch(3)
    union = sorted(i for s in shards for i, _ in s)
    assert union == sorted(i for i, _ in order)  # 18 samples split 9 + 9, nothing lost or repeated
    # a sample's augmentation seed depends on (seed, epoch, index) only, not on the process
    seeds = dict(order)
    assert all(seeds[i] == seed for s in shards for i, seed in s)


def test_augmentation_is_a_function_of_the_sample_seed(folder):
    cfg = AugmentConfig(crop_size=32, scale=[36, 48])
    ds = ImageFolderDataset(folder, "train", transform=build_train_transform(cfg))
    a, _, _ = ds[(4, 123)]
    b, _, _ = ds[(4, 123)]
    c, _, _ = ds[(4, 124)]
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampler_order_is_independent_of_worker_count(folder):
    cfg = AugmentConfig(crop_size=32, scale=[36, 48])
    ds = ImageFolderDataset(folder, "train", transform=build_train_transform(cfg))

    def images(workers):
        sampler = SeededSampler(ds, seed=2)
        sampler.set_epoch(1)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate_skipping_corrupt)
        return torch.cat([b.images for b in loader])

    assert torch.equal(images(0), images(2))
    assert np.isfinite(images(0).numpy()).all()
