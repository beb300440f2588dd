"""GoogLeNet (Szegedy et al., 2015) as in the paper, and the batch-norm variant torchvision ships.

`GoogLeNet(batch_norm=True)` is torchvision's GoogLeNet: its BasicConv2d and Inception blocks (which,
like its checkpoints, use a 3x3 conv in the "5x5" branch), module names included, so its checkpoints
load strictly. `batch_norm=False` is the paper's network, which torchvision lacks: conv + ReLU with
biases, true 5x5 convs, LRN after pool1 and conv3, 3x3/2 pool4, 40% dropout before the last FC, and
auxiliary classifiers on 4a and 4d (5x5/3 avg-pool, 1x1x128 conv, FC 1024, 70% dropout, FC). The
trainer weights the auxiliary losses by 0.3; at test time they are not computed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.googlenet import BasicConv2d, GoogLeNetOutputs, Inception

from backbones.errors import BackboneError
from backbones.initialization import initialise_weights
from backbones.parts import BackboneParts, FeatureTrunk
from backbones.width import scale_channels

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_CONFIGS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class ConvReLU(nn.Module):
    """The paper's conv layer (bias, ReLU, no BN); named `conv` like torchvision's BasicConv2d."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


class PaperInception(Inception):
    """torchvision's Inception with the paper's conv layers and a true 5x5 conv in branch 3."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, conv_block=ConvReLU)
        self.branch3 = nn.Sequential(
            ConvReLU(in_channels, ch5x5red, kernel_size=1),
            ConvReLU(ch5x5red, ch5x5, kernel_size=5, padding=2),
        )


class AuxClassifier(nn.Module):
    """Auxiliary head: pool to 4x4 -> 1x1x128 conv -> FC 1024 + ReLU -> dropout -> FC (torchvision's names)."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool, width: float, dropout: float = 0.7):
        super().__init__()
        # The paper's 5x5/3 average pool makes 4x4 from inception 4a/4d's 14x14; torchvision pools adaptively.
        self.pool = nn.AdaptiveAvgPool2d((4, 4)) if batch_norm else nn.AvgPool2d(kernel_size=5, stride=3)
        channels, hidden = scale_channels(128, width), scale_channels(1024, width)
        self.conv = (BasicConv2d if batch_norm else ConvReLU)(in_channels, channels, kernel_size=1)
        self.fc1 = nn.Linear(channels * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        x = self.dropout(F.relu(self.fc1(x), inplace=True))
        return self.fc2(x)


class TensorFlowInputScaling(nn.Module):
    """torchvision's `transform_input`: its GoogLeNet weights came from TensorFlow and expect input in
    [-1, 1]; this maps ImageNet-normalised input there. Off (the identity) unless `enabled`."""

    def __init__(self, enabled: bool = False):
        super().__init__()
        self.enabled = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        return x * (std / 0.5) + (mean - 0.5) / 0.5


class GoogLeNet(nn.Module):
    """Inception v1: stem -> 3a,3b -> pool -> 4a..4e -> pool -> 5a,5b -> global avg-pool -> dropout -> fc.

    In training mode with auxiliary heads, forward returns torchvision's GoogLeNetOutputs
    (logits, aux_logits2, aux_logits1); otherwise the logits.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        batch_norm: bool = False,
        aux_logits: bool = True,
        dropout: float | None = None,
        dropout_aux: float = 0.7,
        transform_input: bool = False,
    ):
        super().__init__()
        self.batch_norm, self.width, self.num_classes = batch_norm, width, num_classes
        conv_block = BasicConv2d if batch_norm else ConvReLU
        inception_block = Inception if batch_norm else PaperInception

        def lrn() -> nn.Module:  # Caffe's bvlc_googlenet LRN (n=5, alpha=1e-4, beta=0.75, k=1); none with BN
            return nn.Identity() if batch_norm else nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

        def c(channels: int) -> int:
            return scale_channels(channels, width)

        self.input_scaling = TensorFlowInputScaling(transform_input)
        self.conv1 = conv_block(3, c(64), kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = conv_block(c(64), c(64), kernel_size=1)
        self.conv3 = conv_block(c(64), c(192), kernel_size=3, padding=1)
        self.lrn2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        channels, outputs = c(192), {}
        for name, config in INCEPTION_CONFIGS.items():
            scaled = [c(n) for n in config]
            setattr(self, name, inception_block(channels, *scaled))
            channels = scaled[0] + scaled[2] + scaled[4] + scaled[5]
            outputs[name] = channels
            if name == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "inception4e":
                self.maxpool4 = (nn.MaxPool2d(2, stride=2, ceil_mode=True) if batch_norm
                                 else nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self.trunk_channels, self.num_features = outputs["inception4e"], channels
        if aux_logits:
            self.aux1 = AuxClassifier(outputs["inception4a"], num_classes, batch_norm, width, dropout_aux)
            self.aux2 = AuxClassifier(outputs["inception4d"], num_classes, batch_norm, width, dropout_aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=(0.2 if batch_norm else 0.4) if dropout is None else dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        if batch_norm:  # torchvision's initialisation
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)
        else:  # without BN, N(0, 0.01) vanishes over 22 layers; Glorot's scheme keeps the scale
            initialise_weights(self, "glorot")

    @property
    def arch(self) -> str:
        thin = f" width {self.width}" if self.width != 1.0 else ""
        return ("GoogLeNet-BN (torchvision)" if self.batch_norm else "GoogLeNet (paper)") + thin

    @property
    def torchvision_weights(self) -> str | None:
        """Name of torchvision's ImageNet weights for this exact architecture, None where it has none."""
        if not self.batch_norm or self.width != 1.0 or self.num_classes != 1000:
            return None
        return "GoogLeNet_Weights.DEFAULT"

    @property
    def optional_checkpoint_prefixes(self) -> tuple[str, ...]:
        """Keys a checkpoint may hold that this model may lack: training-only auxiliary heads."""
        return () if self.aux1 is not None else ("aux1.", "aux2.")

    def adopt_torchvision_weights(self) -> None:
        """torchvision's GoogLeNet weights expect its input scaling (its builder turns it on too)."""
        self.input_scaling.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x = self.input_scaling(x)
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(x))))
        logits = self.forward_head(x)
        if aux1 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._trunk_layers()(x)
        return self.inception5b(self.inception5a(self.maxpool4(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def _trunk_layers(self) -> FeatureTrunk:
        names = ["input_scaling", "conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2",
                 "inception3a", "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                 "inception4d", "inception4e"]
        return FeatureTrunk(*(getattr(self, name) for name in names), stride=16, out_channels=self.trunk_channels)

    def detection_parts(self) -> BackboneParts:
        """trunk = stem..inception 4e (stride 16); head = pool4 + 5a + 5b + avg-pool + dropout; classifier = fc."""
        head = nn.Sequential(self.maxpool4, self.inception5a, self.inception5b, self.avgpool, nn.Flatten(1),
                             self.dropout)
        return BackboneParts(self._trunk_layers(), head, self.fc, 16, self.trunk_channels, self.num_features,
                             roi_head=nn.Sequential(*head[1:]), roi_head_input_size=7)  # RoI layer replaces pool4
