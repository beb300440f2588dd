"""VGG (Simonyan & Zisserman, 2015): configurations A, A-LRN, B, C, D (VGG-16) and E (VGG-19).

Module names and indices follow torchvision.models.VGG (`features.N`, `avgpool`, `classifier.N`), so a
torchvision checkpoint of A/B/D/E (plain or BN) loads strictly and computes the same function. What
torchvision lacks is written here: A-LRN (LRN after conv1_1), C (1x1 convolutions in stages 3-5), the
paper's N(0, 0.01) initialisation, dense (fully-convolutional) evaluation and pre-initialisation of a
deeper net from a trained A.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backbones.errors import BackboneError
from backbones.initialization import initialise_weights
from backbones.parts import BackboneParts, FeatureTrunk
from backbones.width import scale_channels

# Table 1 of the paper. An int is a 3x3 conv with that many output channels, (1, n) a 1x1 conv,
# "M" a 2x2/2 max-pool, "LRN" AlexNet's local response normalisation.
CONFIGS: dict[str, list] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M", 512, 512, (1, 512), "M", 512, 512, (1, 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# Weight layers per configuration, which is also torchvision's name for it (vgg11, vgg13, ...).
DEPTHS = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}
TORCHVISION_CONFIGS = ("A", "B", "D", "E")


def alexnet_lrn() -> nn.LocalResponseNorm:
    """LRN with Krizhevsky et al.'s parameters (n=5, k=2, alpha=1e-4, beta=0.75), which the VGG paper uses.

    AlexNet's formula does not divide alpha by n; PyTorch's (like Caffe's) does, hence alpha * n here.
    """
    size = 5
    return nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)


def make_features(config: list, batch_norm: bool, width: float) -> tuple[nn.Sequential, int]:
    """The convolutional part; for A/B/D/E the layer indices equal torchvision's make_layers."""
    layers: list[nn.Module] = []
    in_channels = 3
    for token in config:
        if token == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif token == "LRN":
            layers.append(alexnet_lrn())
        else:
            kernel, channels = token if isinstance(token, tuple) else (3, token)
            out_channels = scale_channels(channels, width)
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=kernel, padding=kernel // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
    return nn.Sequential(*layers), in_channels


class VGG(nn.Module):
    """features (13 convs for D) -> adaptive 7x7 avg-pool -> fc6 -> fc7 -> fc8, dropout on fc6/fc7."""

    def __init__(
        self,
        config: str = "D",
        num_classes: int = 1000,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
        init: str = "normal",
        fc_width: int | None = None,
    ):
        super().__init__()
        if config not in CONFIGS:
            raise BackboneError(f"unknown VGG configuration {config!r}; choose one of {', '.join(CONFIGS)}")
        self.config, self.batch_norm, self.width, self.num_classes = config, batch_norm, width, num_classes
        self.features, self.feature_channels = make_features(CONFIGS[config], batch_norm, width)
        # fc6/fc7 channels: the paper's 4096 scaled by `width` unless given (a thin trunk's detection
        # head may want more, as torchvision's Faster R-CNN puts a 1024-wide head on any trunk)
        self.num_features = fc_width if fc_width is not None else scale_channels(4096, width)
        if self.num_features < 1:
            raise BackboneError(f"fc_width must be a positive number of channels, got {fc_width}")
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(self.feature_channels * 7 * 7, self.num_features),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(self.num_features, self.num_features),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(self.num_features, num_classes),
        )
        initialise_weights(self, init)

    @property
    def arch(self) -> str:
        bn = " BN" if self.batch_norm else ""
        thin = f" width {self.width}" if self.width != 1.0 else ""
        fc = f" fc {self.num_features}" if self.num_features != scale_channels(4096, self.width) else ""
        return f"VGG config {self.config} ({DEPTHS[self.config]} layers){bn}{thin}{fc}"

    @property
    def torchvision_weights(self) -> str | None:
        """Name of torchvision's ImageNet weights for this exact architecture, None where it has none."""
        if (self.config not in TORCHVISION_CONFIGS or self.width != 1.0 or self.num_classes != 1000
                or self.num_features != 4096):
            return None
        return f"VGG{DEPTHS[self.config]}{'_BN' if self.batch_norm else ''}_Weights.DEFAULT"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def detection_parts(self) -> BackboneParts:
        """trunk = conv1_1..conv5_3 + ReLU (stride 16); head = pool5 + fc6 + fc7; classifier = fc8."""
        trunk = FeatureTrunk(*self.features[:-1], stride=16, out_channels=self.feature_channels)
        head = nn.Sequential(self.features[-1], self.avgpool, nn.Flatten(1), *self.classifier[:-1])
        # Fast R-CNN: 7x7 RoI pooling takes pool5's place, and the RoIs come at 7x7, where the adaptive
        # average pool is the identity (it cost ~5% of a thin training step); Identity keeps the indices
        roi_head = nn.Sequential(nn.Identity(), *head[2:])
        return BackboneParts(trunk, head, self.classifier[-1], 16, self.feature_channels, self.num_features,
                             roi_head=roi_head, roi_head_input_size=7)

    def fully_convolutional(self) -> FullyConvolutionalVGG:
        """The same net with fc6 as a 7x7 conv and fc7/fc8 as 1x1 convs (shared weights): any size in."""
        return FullyConvolutionalVGG(self)

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's dense evaluation: the class score map spatially averaged, [N, num_classes]."""
        return self.fully_convolutional()(x).mean(dim=(2, 3))


def linear_as_conv(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """Apply `linear` as a k x k conv on x [N,C,H,W], k*k*C = in_features, using a view of its weight."""
    kernel = math.isqrt(linear.in_features // x.shape[1])
    if kernel * kernel * x.shape[1] != linear.in_features:
        raise ValueError(f"a Linear with {linear.in_features} inputs is not a conv over {x.shape[1]} channels")
    if min(x.shape[-2:]) < kernel:
        raise ValueError(f"dense evaluation needs a feature map of at least {kernel}x{kernel} "
                         f"(an image of at least {kernel * 32} px), got {tuple(x.shape[-2:])}")
    weight = linear.weight.view(linear.out_features, x.shape[1], kernel, kernel)
    return F.conv2d(x, weight, linear.bias)


class FullyConvolutionalVGG(nn.Module):
    """VGG's dense evaluation: image [N,3,H,W] -> class score map [N,K,h,w] (h = (H/32) - 6).

    Holds the VGG's own `features` and `classifier` modules, so nothing is copied and training the VGG
    updates this view of it.
    """

    def __init__(self, vgg: VGG):
        super().__init__()
        self.features = vgg.features
        self.classifier = vgg.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        for layer in self.classifier:
            x = linear_as_conv(x, layer) if isinstance(layer, nn.Linear) else layer(x)
        return x


def conv_positions(features: nn.Sequential) -> dict[tuple[int, int], int]:
    """(stage, k-th conv in that stage) -> index in `features`; stages are separated by max-pools."""
    positions, stage, count = {}, 0, 0
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            stage, count = stage + 1, 0
        elif isinstance(layer, nn.Conv2d):
            positions[(stage, count)] = index
            count += 1
    return positions


def vgg_a_from_state_dict(state: dict[str, torch.Tensor], batch_norm: bool, width: float) -> VGG:
    """The configuration A (or A-LRN) VGG that `state` fits strictly, built on the meta device."""
    if "classifier.6.weight" not in state:
        raise BackboneError("not a VGG state_dict: it has no classifier.6.weight (fc8)")
    num_classes = state["classifier.6.weight"].shape[0]
    errors = []
    for config in ("A", "A-LRN"):
        with torch.device("meta"):
            candidate = VGG(config, num_classes, width, batch_norm)
        try:
            candidate.load_state_dict(state, strict=True, assign=True)
            return candidate
        except RuntimeError as err:
            errors.append(str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err))
    raise BackboneError(f"not a configuration A VGG{' with BN' if batch_norm else ''} of width {width}: {errors[0]}")


def init_from_vgg_a(model: VGG, source: VGG | dict[str, torch.Tensor]) -> list[str]:
    """Pre-initialise a deeper VGG from a trained configuration A (a VGG or its state_dict), as the paper did.

    Copies A's first four conv layers (conv1_1, conv2_1, conv3_1, conv3_2) into the layers at the same
    place in `model` and A's three FC layers into fc6-fc8 (with their BN layers when the nets have
    BN); the other layers keep their random init. Returns the names of the copied tensors.
    """
    if not isinstance(model, VGG):
        raise BackboneError(f"pre-initialisation from VGG A needs a VGG, got {getattr(model, 'arch', type(model).__name__)}")
    if isinstance(source, dict):
        source = vgg_a_from_state_dict(source, model.batch_norm, model.width)
    if source.config not in ("A", "A-LRN"):
        raise BackboneError(f"pre-initialisation copies from configuration A, got {source.arch}")
    if source.batch_norm != model.batch_norm:
        raise BackboneError(f"cannot pre-initialise {model.arch} from {source.arch}: batch norm differs")
    src_positions, dst_positions = conv_positions(source.features), conv_positions(model.features)
    first_four = list(src_positions)[:4]
    pairs = [(src_positions[pos], dst_positions[pos]) for pos in first_four]
    if model.batch_norm:  # the BN layer right after each conv
        pairs += [(src_positions[pos] + 1, dst_positions[pos] + 1) for pos in first_four]
    prefixes = [(f"features.{src}.", f"features.{dst}.") for src, dst in pairs]
    prefixes += [(f"classifier.{i}.", f"classifier.{i}.") for i in (0, 3, 6)]
    source_state, target_state = source.state_dict(), model.state_dict()
    copied = []
    for src_prefix, dst_prefix in prefixes:
        for key, value in source_state.items():
            if not key.startswith(src_prefix):
                continue
            name = dst_prefix + key[len(src_prefix):]
            if target_state[name].shape != value.shape:
                raise BackboneError(f"cannot pre-initialise {model.arch} from {source.arch}: {key} "
                                    f"{tuple(value.shape)} does not fit {name} {tuple(target_state[name].shape)}")
            target_state[name].copy_(value)
            copied.append(name)
    return copied
