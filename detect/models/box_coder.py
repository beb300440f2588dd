"""The localisation head's box parametrisation: a box relative to the proposal it refines.

R-CNN / VGG appendix A: for a proposal P (centre px, py, size pw, ph) and a ground-truth box G,
    tx = (gx - px) / pw,  ty = (gy - py) / ph,  tw = log(gw / pw),  th = log(gh / ph),
and each target is divided by a fixed std (0.1, 0.1, 0.2, 0.2 by default) so the four outputs of
the Euclidean loss have comparable scale. torchvision's BoxCoder computes exactly this with
weights = 1 / std; we wrap it so callers speak in stds and in our [N,4] xyxy convention.
"""
from __future__ import annotations

import math

import torch
from torchvision.models.detection._utils import BoxCoder as _TorchvisionBoxCoder


class BoxCoder:
    """encode(gt [N,4], proposals [N,4]) -> deltas [N,4]; decode(deltas [N,4K], proposals [N,4]) -> [N,K,4]."""

    def __init__(self, stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2),
                 max_log_scale: float = math.log(1000.0 / 16)) -> None:
        if len(stds) != 4 or any(s <= 0 for s in stds):
            raise ValueError(f"box coder stds must be 4 positive numbers, got {stds!r}")
        self.stds = tuple(float(s) for s in stds)
        self._coder = _TorchvisionBoxCoder(tuple(1.0 / s for s in self.stds), bbox_xform_clip=max_log_scale)

    def encode(self, gt_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Targets for regressing each proposal onto its matched ground-truth box."""
        if gt_boxes.numel() == 0:
            return gt_boxes.new_zeros((0, 4))
        return self._coder.encode_single(gt_boxes, proposals)

    def decode(self, deltas: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Apply K sets of deltas (one per class for PCR, K=1 for SCR) to each proposal."""
        num_sets = deltas.shape[-1] // 4 if deltas.ndim == 2 else 1
        if deltas.shape[0] == 0:
            return deltas.new_zeros((0, num_sets, 4))
        return self._coder.decode_single(deltas.reshape(deltas.shape[0], -1), proposals).reshape(-1, num_sets, 4)
