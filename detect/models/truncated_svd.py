"""Truncated SVD of the region head's fully connected layers (Fast R-CNN §3.1).

Why: at test time a Fast R-CNN head runs once per RoI (2000 per image), so VGG-16's fc6 (25088 x 4096)
and fc7 (4096 x 4096) take a large share of the detection time. A Linear W (u x v) is replaced by two
Linears with no nonlinearity between: Σ_t V_t^T (v -> t, no bias), then U_t (t -> u, W's bias), i.e.
W ≈ U_t Σ_t V_t^T, which costs t(u + v) multiply-adds per region instead of uv. Fast R-CNN kept the
top 1024 singular values of fc6 and 256 of fc7: ~30% less detection time for ~0.3 mAP.

The head's Linear layers are named fc6, fc7, ... in order (VGG's names). `svd_rank` is one rank for
all of them, or a mapping {"fc6": 1024, "fc7": 256} (a layer not named keeps its full weight). A rank
at or above min(u, v) is capped there (the exact factorisation: no saving, the same outputs).
"""
from __future__ import annotations

import torch
from torch import nn


def factorise_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """nn.Sequential(Linear(v, t, bias=False) = Σ_t V_t^T, Linear(t, u) = U_t with W's bias), t = rank."""
    weight = linear.weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    t = max(1, min(int(rank), s.numel()))
    first = nn.Linear(linear.in_features, t, bias=False)
    second = nn.Linear(t, linear.out_features, bias=linear.bias is not None)
    dtype, device = linear.weight.dtype, linear.weight.device
    with torch.no_grad():
        first.weight.copy_((s[:t, None] * vh[:t]).to(dtype))
        second.weight.copy_(u[:, :t].to(dtype))
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    return nn.Sequential(first, second).to(device)


def head_linears(head: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """"fc6", "fc7", ... -> (parent module, attribute name) of each nn.Linear in `head`, in order."""
    found = {}
    for parent in head.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found[f"fc{6 + len(found)}"] = (parent, name)
    return found


def apply_truncated_svd(head: nn.Module, svd_rank: int | dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """Factorise the Linears of `head` in place; returns {layer: (rank, out u, in v)} of the ones changed.
    A mapping that names a layer the head lacks is an error naming the ones it has."""
    layers = head_linears(head)
    if isinstance(svd_rank, dict):
        unknown = sorted(set(svd_rank) - set(layers))
        if unknown:
            have = ", ".join(layers) or "none: this head has no fully connected layers"
            raise ValueError(f"test.svd_rank names {unknown}; the region head's fully connected layers are: {have}")
        ranks = dict(svd_rank)
    else:
        ranks = {name: svd_rank for name in layers}
    changed = {}
    for name, (parent, attr) in layers.items():
        if ranks.get(name):
            linear = getattr(parent, attr)
            setattr(parent, attr, factorise_linear(linear, ranks[name]))
            t = getattr(parent, attr)[0].out_features
            changed[name] = (t, linear.out_features, linear.in_features)
    return changed
