"""Weight initialisation schemes shared by the backbones that are trained from scratch without BN.

"normal": the VGG paper's N(0, 0.01) weights and zero biases; "glorot": Glorot & Bengio's uniform
scheme (which the VGG paper notes works without pre-initialisation); "kaiming": He et al.'s normal
scheme for ReLU nets (fan_out, as torchvision). Batch-norm layers always start at weight 1, bias 0.
"""
from __future__ import annotations

from torch import nn

from backbones.errors import BackboneError

INIT_SCHEMES = ("normal", "glorot", "kaiming")


def initialise_weights(model: nn.Module, scheme: str = "normal") -> None:
    if scheme not in INIT_SCHEMES:
        raise BackboneError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "normal":
                nn.init.normal_(module.weight, 0.0, 0.01)
            elif scheme == "glorot":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
