"""Training and test samples for the detector: image, target and the image's cached proposals.

Proposals come from the proposal cache (computed on demand, with a progress bar, the first time a
dataset meets a proposer); the cache records the dataset's fingerprint and the proposer's
parameters and refuses a mismatch. Horizontal flips are decided by the sampler's per-sample seed,
not by worker RNG, so a resumed run sees exactly the flips the uninterrupted run would have.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from detect.data.dataset import DatasetSubset, DetectionDataset
from detect.data.spec import build_dataset
from detect.engine.detection_config import ProposalConfig
from detect.errors import UserError
from detect.evaluation.results import empty_predictions
from detect.proposals import build_proposer
from detect.proposals.cache import dataset_cache_root, ensure_proposals, load_proposals, unreadable_images
from detect.utils import distributed as dist_utils

logger = logging.getLogger(__name__)


def join_datasets(specs: list[str], classes: list[str] | None = None) -> DetectionDataset:
    """One dataset from several specs (e.g. VOC2007 trainval + VOC2012 trainval) sharing one class list."""
    if not specs:
        raise UserError("data.train: no training dataset given (a dataset spec such as voc:ROOT:trainval)")
    first = build_dataset(specs[0], classes)
    if len(specs) == 1:
        return first
    parts = [first] + [build_dataset(spec, first.classes) for spec in specs[1:]]
    if any(type(p).load_image is not DetectionDataset.load_image for p in parts):
        raise UserError(f"data.train {specs}: only on-disk datasets (voc, voc-dirs, coco) can be joined")
    records = [r for p in parts for r in p.records]
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise UserError(f"data.train {specs}: the datasets share image ids, so their proposals would collide")
    joined = DetectionDataset(records, first.classes, name="+".join(specs))
    for p in parts:
        for reason, n in p.skips.counts.items():
            joined.skips.counts[reason] = joined.skips.counts.get(reason, 0) + n
            joined.skips.examples.setdefault(reason, p.skips.examples[reason])
    return joined


def cache_root(dataset: DetectionDataset, cfg: ProposalConfig) -> Path:
    """One cache per dataset spec: `<proposals.cache_dir>/<readable name>-<hash of the name>/`, the
    layout `detect propose --out <proposals.cache_dir>` writes (`dataset_cache_root`).

    The proposal cache records the dataset's fingerprints, so if the images behind a spec change
    (a split file edited, a regenerated dataset, other pixels), the old cache is refused with a clear error.
    """
    return dataset_cache_root(dataset, cfg.cache_dir)


def cached_proposals(dataset: DetectionDataset, cfg: ProposalConfig, progress: bool = True,
                     strict_images: bool = False) -> Path:
    """The dataset's proposal cache directory, computing what is missing (rank 0 only) first.

    An image that cannot be decoded is skipped (recorded in the cache; `ProposalDataset` leaves it
    out), or with `strict_images` (data.strict_images) a DatasetError naming it."""
    proposer = build_proposer(cfg.method, **cfg.params)
    root = cache_root(dataset, cfg)
    if dist_utils.is_main_process():
        ensure_proposals(dataset, proposer, root, workers=cfg.workers, progress=progress, strict_images=strict_images)
    dist_utils.barrier()
    # every process checks the manifest (nothing is left to compute by now)
    return ensure_proposals(dataset, proposer, root, workers=0, progress=False, strict_images=strict_images)


def without_unreadable(dataset: DetectionDataset, cache_dir: Path) -> DetectionDataset:
    """The dataset less the images its proposal cache recorded as undecodable (counted in `skips`, logged once)."""
    unreadable = unreadable_images(dataset, cache_dir)
    if not unreadable:
        return dataset
    subset = DatasetSubset(dataset, [i for i in range(len(dataset)) if i not in unreadable], name=dataset.name)
    for reason, count in dataset.skips.counts.items():
        subset.skips.counts[reason] = count
        subset.skips.examples[reason] = dataset.skips.examples[reason]
    for message in unreadable.values():
        subset.skips.add(UNREADABLE, message)
    logger.warning("%s: left out %d unreadable image(s) (first: %s); data.strict_images=true makes this an error",
                   dataset.name, len(unreadable), next(iter(unreadable.values())))
    return subset


UNREADABLE = "unreadable images"


def predictions_for(dataset: DetectionDataset, used: DetectionDataset, predictions: list[dict]) -> list[dict]:
    """Predictions on `used` (the dataset, or its subset less unreadable images) aligned with `dataset`:
    no detections for the images left out, so written results keep the dataset's image ids."""
    if used is dataset:
        return predictions
    full = empty_predictions(len(dataset))
    for prediction, index in zip(predictions, used.indices):
        full[index] = prediction
    return full


class ProposalDataset(Dataset):
    """item (index or (index, sample_seed)) -> (image float [3,H,W], target, proposals float [R,4]).

    Images the proposal cache recorded as undecodable are left out (`self.dataset` is then the
    subset that is used: score predictions against it)."""

    def __init__(self, dataset: DetectionDataset, cache_dir: Path, max_per_image: int, flip: bool = False,
                 color_jitter: float = 0.0) -> None:
        self.dataset = without_unreadable(dataset, Path(cache_dir))
        self.cache_dir = Path(cache_dir)
        self.max_per_image = max_per_image
        self.flip = flip
        self.color_jitter = color_jitter

    def __len__(self) -> int:
        return len(self.dataset)

    def proposals(self, index: int) -> torch.Tensor:
        boxes, _ = load_proposals(self.cache_dir, self.dataset.records[index].image_id)
        return torch.as_tensor(np.asarray(boxes, dtype=np.float32)[: self.max_per_image]).reshape(-1, 4)

    def __getitem__(self, item):
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        image, target = self.dataset[index]
        proposals = self.proposals(index)
        if self.flip and sample_seed is not None and sample_seed % 2 == 1:
            image, target, proposals = flip_sample(image, target, proposals)
        if self.color_jitter and sample_seed is not None:
            image = jitter_colours(image, self.color_jitter, sample_seed)
        return image, target, proposals


def jitter_colours(image: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength],
    drawn from the sample's own seed (a resumed run sees the same colours). Boxes do not move, so
    the cached proposals stay valid."""
    factors = 1.0 + strength * (2.0 * torch.rand(3, generator=torch.Generator().manual_seed(seed)) - 1.0)
    image = TF.adjust_brightness(image, factors[0].item())
    image = TF.adjust_contrast(image, factors[1].item())
    return TF.adjust_saturation(image, factors[2].item())


def flip_sample(image: torch.Tensor, target: dict, proposals: torch.Tensor):
    """Mirror the image left-right, with its ground-truth boxes and proposals."""
    size = tuple(image.shape[-2:])

    def flip_boxes(boxes):
        flipped = TF.horizontal_flip(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size))
        return flipped.as_subclass(torch.Tensor)

    target = {**target, "boxes": flip_boxes(target["boxes"])}
    return TF.horizontal_flip(image), target, flip_boxes(proposals)


def collate(batch: list[tuple]) -> tuple[list, list, list]:
    """Lists, not stacks: images differ in size and proposal counts."""
    images, targets, proposals = zip(*batch) if batch else ((), (), ())
    return list(images), list(targets), list(proposals)
