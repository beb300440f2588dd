"""What `detect train` checks and says before its first expensive step (proposals, then training):
the backbone and its options, the --weights file, the output folder; then a short header."""
from __future__ import annotations

from pathlib import Path

import torch

from detect.engine.checkpoint import output_folder
from detect.errors import UserError


def check_before_proposals(cfg, weights: str | None) -> None:
    """Fail in a second, not after the proposals: unknown backbone or option, missing weights file,
    an output folder that cannot be written. The backbone is built on the meta device (no memory)."""
    import backbones

    try:
        with torch.device("meta"):
            backbones.build_backbone(cfg.model.backbone, width=cfg.model.width, **cfg.model.backbone_options)
    except backbones.BackboneError as err:
        raise UserError(f"model: {err}") from None
    if weights and str(weights) != "torchvision" and not Path(weights).is_file():
        raise UserError(f"--weights {weights}: no such weights file (a .pth from `detect pretrain`, a state_dict, "
                        "or 'torchvision')")
    output_folder(cfg.train.out_dir)


def training_header(cfg, train_set, device, weights: str | None = None) -> str:
    """A few lines naming what is about to be trained: data and image counts, classes, device, output folder."""
    skips = f"; {train_set.skips.summary()}" if train_set.skips else ""
    lines = [f"data     train {', '.join(cfg.data.train)}: {len(train_set)} images{skips}",
             f"         val {cfg.data.val or '-'}; test {cfg.data.test or '-'}",
             f"classes  {len(train_set.classes)}: {', '.join(train_set.classes)}",
             f"model    {cfg.model.backbone} (width {cfg.model.width}), {cfg.model.mode} mode, "
             f"weights {weights or 'none (from scratch)'}",
             f"device   {device}",
             f"output   {cfg.train.out_dir}"]
    return "\n".join(lines)
