"""Evaluate trained classification checkpoints under every test protocol, and their ensemble.

Each checkpoint gives one model (and a second, "(Polyak)", when it holds averaged weights); the
posteriors of all of them are kept so the ensemble averages soft-max outputs protocol by protocol.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

import backbones
from detect.data.classification import ImageFolderDataset
from detect.data.classification_transforms import MultiScaleTransform
from detect.engine.classification_config import PretrainConfig
from detect.engine.classification_trainer import build_model
from detect.evaluation.classification import collect_posteriors, evaluation_table, format_table
from detect.utils.checkpoint import load_checkpoint
from detect.utils.files import atomic_write_bytes


def dense_model_for(model: nn.Module) -> nn.Module:
    """The fully convolutional form used by dense evaluation (VGG: FC layers as convolutions);
    nets that end in global pooling (ResNet, GoogLeNet) already accept any input size."""
    convert = getattr(model, "fully_convolutional", None)
    return convert() if convert is not None else model


def models_in_checkpoint(cfg: PretrainConfig, path: Path, num_classes: int) -> dict[str, nn.Module]:
    ckpt = load_checkpoint(path)
    models = {}
    for key, suffix in (("model", ""), ("ema", " (Polyak)")):
        state = ckpt.get(key)
        if state is None:
            continue
        if key == "ema":  # AveragedModel state: "module.<name>" plus its step counter
            state = {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
        model = build_model(cfg, num_classes)
        model.load_state_dict(state)
        models[f"{path.name}{suffix}"] = model
    return models


def evaluate_checkpoints(cfg: PretrainConfig, paths: list[Path], device: torch.device,
                         out_json: Path | None = None) -> list[dict]:
    """Rows {model, protocol, top1_error, top5_error} for every checkpoint, protocol and the ensemble."""
    scales = sorted(set(cfg.eval.scales) | {cfg.eval.scale})
    dataset = ImageFolderDataset(cfg.data.root, cfg.data.val_split, MultiScaleTransform(cfg.data.augment, scales))
    per_model, labels, corrupt = {}, None, []
    for path in paths:
        for name, model in models_in_checkpoint(cfg, Path(path), dataset.num_classes).items():
            model.to(device)
            posteriors, labels, corrupt = collect_posteriors(model, dense_model_for(model), dataset,
                                                             cfg.data.augment.crop_size, cfg.eval, device, desc=name)
            per_model[name] = posteriors
    rows = evaluation_table(per_model, labels)
    print(f"classification evaluation on {cfg.data.root}/{cfg.data.val_split}: {len(labels)} images, "
          f"{dataset.num_classes} classes, Q={cfg.eval.scale} (single-scale), Q in {cfg.eval.scales} (others)")
    if corrupt:
        print(f"warning: skipped {len(corrupt)} unreadable image(s), first {dataset.samples[corrupt[0]][0]}")
    print(format_table(rows))
    if out_json is not None:
        result = {"images": len(labels), "skipped_corrupt": len(corrupt), "scale": cfg.eval.scale,
                  "scales": cfg.eval.scales, "grid": cfg.eval.grid, "rows": rows}
        atomic_write_bytes(out_json, lambda fh: fh.write(json.dumps(result, indent=1).encode()))
    return rows
