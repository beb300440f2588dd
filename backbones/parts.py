"""The trunk / head / classifier split that region classification needs.

R-CNN warps each region and runs the whole network; Fast R-CNN runs the trunk once per image and the
head once per RoI. Both use the same modules as whole-image classification, so the parts hold the
model's own submodules (shared weights, no copies).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureTrunk(nn.Sequential):
    """The shared convolutional part: image [N,3,H,W] -> feature map [N, out_channels, H/stride, W/stride]."""

    def __init__(self, *layers: nn.Module, stride: int, out_channels: int):
        super().__init__(*layers)
        self.stride = stride
        self.out_channels = out_channels


@dataclass(frozen=True)
class BackboneParts:
    """`classifier(head(trunk(x)))` equals the model's own forward at `input_size` (eval mode).

    trunk: image -> stride-`stride` map with `out_channels`; head: RoI features [R, out_channels, S, S]
    with S = `head_input_size` -> [R, num_features]; classifier: Linear num_features -> classes.
    `mean`/`std`: the normalisation the weights expect on [0,1] RGB input.

    `roi_head` (VGG, GoogLeNet): the head without its leading max-pool, taking RoIs pooled straight to
    `roi_head_input_size` (7): Fast R-CNN's RoI layer *replaces* that pool (VGG's pool5), which is also
    4x fewer RoI samples than pooling to 14 and max-pooling. None where the head has no such pool
    (ResNet's conv5 starts with a strided convolution).
    """

    trunk: FeatureTrunk
    head: nn.Module
    classifier: nn.Linear
    stride: int
    out_channels: int
    num_features: int
    head_input_size: int = 14
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    roi_head: nn.Module | None = None
    roi_head_input_size: int | None = None
