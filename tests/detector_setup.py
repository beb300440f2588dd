"""A tiny detector configuration shared by the detector tests: thin VGG, 64 px images, 2 steps."""
from __future__ import annotations

from pathlib import Path

import yaml


def tiny_config(tmp: Path, cache: Path, mode: str = "fast", **sections) -> Path:
    """Write a YAML config for a seconds-long run on the synthetic shapes set; returns its path."""
    cfg = {
        "data": {"train": ["shapes:30:0:train"], "test": "shapes:30:0:test", "workers": 0},
        "proposals": {"method": "selective_search", "params": {"strategy": "single"}, "cache_dir": str(cache),
                      "workers": 0, "max_per_image": 200},
        "model": {"backbone": "vgg11", "width": 0.0625, "mode": mode, "train_scales": [64], "test_scale": 64,
                  "max_size": 128, "warp_size": 32, "context_padding": 2, "chunk_size": 64,
                  "backbone_options": {"init": "kaiming"}},
        "train": {"steps": 2, "images_per_batch": 2, "lr": 0.001, "checkpoint_every": 1, "log_every": 1,
                  "out_dir": str(tmp / "run"), "device": "cpu", "progress": False, "metrics": ["voc07"]},
        "test": {"score_threshold": 0.0},
    }
    if mode == "rcnn":
        cfg["model"]["sampler"] = {"batch_size": 16, "fg_fraction": 0.25, "fg_iou": 0.5, "bg_iou_low": 0.0,
                                   "bg_iou_high": 0.5, "per_image": False}
    for section, values in sections.items():
        cfg[section].update(values)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"tiny_{mode}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
