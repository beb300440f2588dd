"""What `detect train` checks and says before its first expensive step (proposals, then training):
the backbone and its options, the --weights file, the output folder; then a short header."""
from __future__ import annotations

from pathlib import Path

import torch

import backbones
from detect.engine.detection_config import schedule_line
from detect.errors import UserError
from detect.utils.files import output_folder


def check_before_proposals(cfg, weights: str | None) -> None:
    """Fail in a second, not after the proposals: unknown backbone or option, missing weights file,
    an output folder that cannot be written. The backbone is built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            backbones.build_backbone(cfg.model.backbone, width=cfg.model.width, **cfg.model.backbone_options)
    except backbones.BackboneError as err:
        raise UserError(f"model: {err}") from None
    if weights and str(weights) != "torchvision":
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: no such weights file (a .pth from `detect pretrain`, a state_dict, "
                            "or 'torchvision')")
        check_pretrained_architecture(cfg.model, weights)
    output_folder(cfg.train.out_dir)


def check_pretrained_architecture(model_cfg, weights: str) -> None:
    """A `detect pretrain` checkpoint says which backbone and width it trained: another one than the
    detector's is named now (memory-mapped read; anything unusual is left to the full load later)."""
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an old-format or unreadable file: the full load reports it
        return
    saved = checkpoint.get("config", {}).get("model", {}) if isinstance(checkpoint, dict) else {}
    if not isinstance(saved, dict) or "name" not in saved:
        return
    if (saved["name"], float(saved.get("width", 1.0))) != (model_cfg.backbone, float(model_cfg.width)):
        raise UserError(f"--weights {weights}: a `detect pretrain` checkpoint of {saved['name']} width "
                        f"{saved.get('width', 1.0)}, but the detector is {model_cfg.backbone} width {model_cfg.width} "
                        "(set model.backbone and model.width to match)")


def training_header(cfg, train_set, device, weights: str | None = None) -> str:
    """A few lines naming what is about to be trained: data and image counts, classes, device, output folder."""
    skips = f"; {train_set.skips.summary()}" if train_set.skips else ""
    lines = [f"data     train {', '.join(cfg.data.train)}: {len(train_set)} images{skips}",
             f"         val {cfg.data.val or '-'}; test {cfg.data.test or '-'}",
             f"classes  {len(train_set.classes)}: {', '.join(train_set.classes)}",
             f"model    {cfg.model.backbone} (width {cfg.model.width}), {cfg.model.mode} mode, "
             f"weights {weights or 'none (from scratch)'}",
             schedule_line(cfg),
             f"device   {device}",
             f"output   {cfg.train.out_dir}"]
    return "\n".join(lines)
