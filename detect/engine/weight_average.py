"""An exponential moving average of a model's weights (Polyak averaging), for evaluation and the checkpoints.

SGD on a few hundred images ends wherever its last noisy steps left it; the average of the
weights along the way generalises better (Polyak & Juditsky 1992; timm's ModelEmaV3, YOLO's EMA).
The batch norms' running statistics are averaged with the weights they belong to, so the averaged
model is self-consistent. The decay ramps up, min(decay, (1 + n) / (10 + n)) after n updates, as in
TensorFlow's ExponentialMovingAverage: early updates are not frozen into the average.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of `model`; `update` after every optimizer step, `module` to evaluate."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        averaged, live = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in averaged.items() if v.is_floating_point()]
        torch._foreach_lerp_([averaged[k] for k in floats], [live[k].detach() for k in floats], 1.0 - decay)
        for k, v in averaged.items():
            if not v.is_floating_point():  # counters (BN's num_batches_tracked) follow the live model
                v.copy_(live[k])
        self.updates += 1
