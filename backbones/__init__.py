"""The classic ImageNet CNNs (VGG, ResNet, GoogLeNet), torchvision-compatible and detection-ready.

`build_backbone(name, ...)` looks the name up in BUILDERS, a plain dict: what you read is what gets
built. Nothing here knows about detection datasets or the `detect` package.
"""
from __future__ import annotations

import difflib
import inspect
from functools import partial
from typing import Callable

from torch import nn

from backbones.complexity import count_flops, count_parameters
from backbones.errors import BackboneError
from backbones.googlenet import GoogLeNet
from backbones.parts import IMAGENET_MEAN, IMAGENET_STD, BackboneParts, FeatureTrunk
from backbones.resnet import ResNet
from backbones.vgg import VGG, init_from_vgg_a
from backbones.weights import load_detection_weights, load_weights, read_state_dict

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vgg11": partial(VGG, "A"),
    "vgg11_bn": partial(VGG, "A", batch_norm=True),
    "vgg11_lrn": partial(VGG, "A-LRN"),
    "vgg11_lrn_bn": partial(VGG, "A-LRN", batch_norm=True),
    "vgg13": partial(VGG, "B"),
    "vgg13_bn": partial(VGG, "B", batch_norm=True),
    "vgg16_c": partial(VGG, "C"),
    "vgg16_c_bn": partial(VGG, "C", batch_norm=True),
    "vgg16": partial(VGG, "D"),
    "vgg16_bn": partial(VGG, "D", batch_norm=True),
    "vgg19": partial(VGG, "E"),
    "vgg19_bn": partial(VGG, "E", batch_norm=True),
    "resnet18": partial(ResNet, 18),
    "resnet34": partial(ResNet, 34),
    "resnet50": partial(ResNet, 50),
    "resnet101": partial(ResNet, 101),
    "resnet152": partial(ResNet, 152),
    "googlenet": partial(GoogLeNet, batch_norm=False),
    "googlenet_bn": partial(GoogLeNet, batch_norm=True),
}


def backbone_options(name: str) -> list[str]:
    """The keyword options `build_backbone(name, ...)` accepts besides num_classes and width."""
    builder = BUILDERS[name]
    fixed = set(builder.keywords) | {"num_classes", "width"}
    return [p for p in inspect.signature(builder).parameters if p not in fixed]


def build_backbone(name: str, num_classes: int = 1000, width: float = 1.0, **options) -> nn.Module:
    """Build backbone `name` (see BUILDERS) with `num_classes` outputs and channels scaled by `width`."""
    if name not in BUILDERS:
        close = difflib.get_close_matches(name, BUILDERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BackboneError(f"unknown backbone {name!r}{hint}; valid names: {', '.join(BUILDERS)}")
    unknown = sorted(set(options) - set(backbone_options(name)))
    if unknown:
        raise BackboneError(f"{name}: unknown option(s) {', '.join(unknown)}; "
                            f"valid options: {', '.join(backbone_options(name))}")
    return BUILDERS[name](num_classes=num_classes, width=width, **options)


__all__ = [
    "BUILDERS", "BackboneError", "BackboneParts", "FeatureTrunk", "GoogLeNet", "IMAGENET_MEAN", "IMAGENET_STD",
    "ResNet", "VGG", "backbone_options", "build_backbone", "count_flops", "count_parameters", "init_from_vgg_a",
    "load_detection_weights", "load_weights", "read_state_dict",
]
