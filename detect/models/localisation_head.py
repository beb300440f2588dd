"""The VGG localisation head (Simonyan & Zisserman, appendix A): box regression with a Euclidean loss.

A final FC layer on the region's feature vector predicts the box's (centre x, centre y, width,
height) relative to the proposal (see box_coder). Single-class regression (SCR) shares one box
for all classes (4 outputs); per-class regression (PCR) predicts one box per class (4 per class)
and is trained only on the box of the region's true class.
"""
from __future__ import annotations

import torch
from torch import nn


class LocalisationHead(nn.Module):
    """features [R, F] -> deltas [R, 4] (SCR) or [R, 4*C] (PCR, C foreground classes)."""

    def __init__(self, num_features: int, num_classes: int, per_class: bool = True) -> None:
        super().__init__()
        self.per_class = per_class
        self.num_classes = num_classes
        self.fc = nn.Linear(num_features, 4 * num_classes if per_class else 4)
        # A fresh last layer, small so early boxes stay near their proposals (Fast R-CNN used std 0.001).
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def select(self, deltas: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[R, 4]: each region's box for class `labels` (1..C); SCR has only one."""
        if not self.per_class:
            return deltas
        rows = torch.arange(len(labels), device=deltas.device)
        return deltas.view(len(labels), self.num_classes, 4)[rows, labels - 1]


def euclidean_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1/2 * mean over regions of ||predicted - target||^2; zero (still on the graph) with no region."""
    if predicted.numel() == 0:
        return predicted.sum() * 0.0
    return 0.5 * (predicted - target).pow(2).sum(dim=1).mean()


def smooth_l1_loss(predicted: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Fast R-CNN's robust alternative: mean over regions of the summed smooth L1 (quadratic below `beta`:
    1 in Fast R-CNN, 1/9 in torchvision's Faster R-CNN, whose boxes are therefore pulled in by an L1 gradient)."""
    if predicted.numel() == 0:
        return predicted.sum() * 0.0
    return torch.nn.functional.smooth_l1_loss(predicted, target, reduction="none", beta=beta).sum(dim=1).mean()


def box_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str = "euclidean", beta: float = 1.0) -> torch.Tensor:
    """The localisation loss named by `kind` ("euclidean" or "smooth_l1" with `beta`), averaged over regions."""
    if kind == "smooth_l1":
        return smooth_l1_loss(predicted, target, beta)
    return euclidean_loss(predicted, target)
