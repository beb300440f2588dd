"""Run a trained detector over a dataset, and load one back from its checkpoint.

Predictions are a list aligned with the dataset, `{"boxes" [M,4], "scores" [M], "labels" [M]}` in
image pixels (numpy), the format `detect.evaluation.evaluate` scores. Under torchrun each process
predicts its share and the shares are gathered, so every process ends with the full list.
"""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from detect.config import from_dict, to_dict
from detect.data.samplers import init_loader_worker
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import ProposalDataset, collate
from detect.errors import UserError
from detect.evaluation.evaluate import evaluate
from detect.models.detector import Detector, ModelConfig, build_detector
from detect.models.ensemble import DetectorEnsemble
from detect.models.postprocess import InferenceConfig
from detect.models.truncated_svd import apply_truncated_svd
from detect.utils import distributed as dist_utils
from detect.utils.checkpoint import load_checkpoint
from detect.utils.device import autocast
from detect.utils.progress import progress_bar


@torch.no_grad()
def predict(model: Detector, dataset: ProposalDataset, device: torch.device, amp: bool = True,
            progress: bool = True, workers: int = 0) -> list[dict]:
    model.eval()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    shard = list(range(rank, len(dataset), world))
    loader = DataLoader(dataset, batch_size=1, sampler=shard, num_workers=workers, collate_fn=collate,
                        worker_init_fn=init_loader_worker)
    mine = {}
    show = progress and dist_utils.is_main_process()
    # the bar wraps the zip (not the loader inside it): zip stops at the shard's end without the bar
    # seeing its last item, which left its final line at N-1 of N
    for index, (images, _, proposals) in progress_bar(zip(shard, loader), total=len(shard), desc="detect",
                                                      disable=not show, leave=False, dynamic_ncols=True):
        with autocast(device, amp):
            output = model([i.to(device) for i in images], [p.to(device) for p in proposals])[0]
        mine[index] = {k: v.float().cpu().numpy() if k != "labels" else v.cpu().numpy() for k, v in output.items()}
    merged = {}
    for part in dist_utils.all_gather_objects(mine):
        merged.update(part)
    return [merged[i] for i in range(len(dataset))]


def evaluate_predictions(dataset, predictions: list[dict], metrics: list[str]) -> dict[str, dict]:
    """metric name -> the evaluation module's result dict (mAP, per-class AP, ...)."""
    return {metric: evaluate(dataset, predictions, metric) for metric in metrics}


def checkpoint_config(checkpoint: dict, path: Path) -> DetectionConfig:
    if checkpoint.get("kind") != "detector" or "config" not in checkpoint:
        raise UserError(f"{path}: not a detector checkpoint (no detector config inside; made by `detect train`?)")
    return from_dict(DetectionConfig, checkpoint["config"], where=str(path))


def check_compatible(checkpoint: dict, path: Path, cfg: DetectionConfig, classes: list[str]) -> None:
    """A clear error when a checkpoint was trained for another backbone, topology or class list."""
    saved = checkpoint_config(checkpoint, path)
    for key in ("backbone", "width", "mode", "box_regression"):
        if getattr(saved.model, key) != getattr(cfg.model, key):
            raise UserError(f"{path}: checkpoint was trained with model.{key}={getattr(saved.model, key)!r}, "
                            f"but the config asks for {getattr(cfg.model, key)!r}")
    if list(checkpoint.get("classes", [])) != list(classes):
        raise UserError(f"{path}: checkpoint classes {checkpoint.get('classes')} differ from the dataset's {classes}")


# Model keys a test may set for itself; every other one says how the checkpoint's weights were trained to be
# read (trunk options, RoI layer and context, box coding), so the checkpoint's own value is the one that fits.
TEST_TIME_MODEL_KEYS = ("test_scale", "max_size", "chunk_size")
# Keys that only shape training (scales, sampler, losses): a config that differs there changes nothing at test.
TRAINING_ONLY_MODEL_KEYS = ("train_scales", "box_training", "box_iou", "box_loss_weight", "box_loss", "box_loss_beta",
                            "box_loss_average", "sampler")


def model_as_trained(cfg: DetectionConfig, saved: DetectionConfig, path: Path) -> DetectionConfig:
    """cfg with the checkpoint's model section, less the test-time keys (the config's). A config that says
    otherwise on a key the weights depend on (say model.roi_context, set by an override at training) would
    build a detector that reads them wrongly, silently; a note names each such key and the value used."""
    model = replace(saved.model, **{key: getattr(cfg.model, key) for key in TEST_TIME_MODEL_KEYS})
    ignored = TEST_TIME_MODEL_KEYS + TRAINING_ONLY_MODEL_KEYS
    differ = [f"model.{f.name}={getattr(saved.model, f.name)!r} (the config: {getattr(cfg.model, f.name)!r})"
              for f in fields(ModelConfig) if f.name not in ignored
              and getattr(saved.model, f.name) != getattr(cfg.model, f.name)]
    if differ:
        print(f"note: {path} was trained with {', '.join(differ)}: the checkpoint's values are used")
    return replace(cfg, model=model)


def load_detector(path: str | Path, cfg: DetectionConfig | None = None, classes: list[str] | None = None,
                  device: torch.device | str = "cpu", svd_rank: int | dict[str, int] | None = None,
                  ) -> tuple[Detector, DetectionConfig, list[str]]:
    """The detector in a checkpoint; with cfg/classes given, first check they match it (cfg's test section and
    test-time model keys apply, the rest of the model is the checkpoint's: model_as_trained). The head's fc
    layers are factorised by truncated SVD when `svd_rank` (else the config's test.svd_rank) is set."""
    path = Path(path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    saved_cfg = checkpoint_config(checkpoint, path)
    if cfg is not None:
        check_compatible(checkpoint, path, cfg, classes if classes is not None else checkpoint["classes"])
        cfg = model_as_trained(cfg, saved_cfg, path)
    cfg = cfg or saved_cfg
    if svd_rank is not None:
        cfg = replace(cfg, test=from_dict(InferenceConfig, {**to_dict(cfg.test), "svd_rank": svd_rank}, where="svd_rank"))
    classes = list(checkpoint["classes"])
    model = build_detector(cfg.model, len(classes), cfg.test)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the configured detector: {str(err).splitlines()[0]}") from None
    if cfg.test.svd_rank is not None:
        try:
            apply_truncated_svd(model.regions.head, cfg.test.svd_rank)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
    return model.to(device).eval(), cfg, classes


def load_detectors(paths: list[str | Path], cfg: DetectionConfig, classes: list[str],
                   device: torch.device | str = "cpu") -> tuple[torch.nn.Module, DetectionConfig, list[str]]:
    """One checkpoint: its detector (as load_detector). Several: their DetectorEnsemble, the first checked
    against cfg, the others built from their own saved configs; the classes must agree, and cfg's test
    section (scales, thresholds, NMS, SVD rank) applies to all."""
    model, cfg, classes = load_detector(paths[0], cfg, classes, device)
    if len(paths) == 1:
        return model, cfg, classes
    members = [model]
    for path in paths[1:]:
        member, _, member_classes = load_detector(path, None, None, device, svd_rank=cfg.test.svd_rank)
        if member_classes != classes:
            raise UserError(f"{path}: classes {member_classes} differ from {paths[0]}'s {classes}: "
                            f"an ensemble averages the same classes")
        member.inference = cfg.test
        members.append(member)
    return DetectorEnsemble(members, cfg.test).to(device).eval(), cfg, classes


def as_numpy(predictions: list[dict]) -> list[dict]:
    return [{k: np.asarray(v) for k, v in p.items()} for p in predictions]
