"""Model size and cost: parameter count and FLOPs per forward pass (torch.utils.flop_counter)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int = 224, batch_size: int = 1) -> int:
    """FLOPs of one eval-mode forward on [batch_size, 3, input_size, input_size].

    As FlopCounterMode counts them: a multiply-add is 2 FLOPs; only matmuls and convolutions are
    counted. Works on the meta device (no arithmetic is done), which makes it instant.
    """
    parameter = next(model.parameters())
    x = torch.zeros(batch_size, 3, input_size, input_size, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
