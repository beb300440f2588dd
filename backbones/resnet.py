"""ResNet-18/34/50/101/152 (He et al., 2016) with the paper's three shortcut options.

Option B (projection only where the shape changes) is torchvision's ResNet: the blocks are
torchvision's BasicBlock / Bottleneck and the module names are its own, so its checkpoints load
strictly. Written here: option A (parameter-free identity, zero-padding the extra channels),
option C (projection on every block), the `width` multiplier and the detection split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from backbones.errors import BackboneError
from backbones.parts import BackboneParts, FeatureTrunk
from backbones.width import scale_channels

LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
SHORTCUTS = ("A", "B", "C")


class ZeroPadShortcut(nn.Module):
    """Option A: the identity, subsampled by `stride`, with `extra_channels` zero channels appended."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(option: str, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The block's `downsample` (torchvision's name) for shortcut option A, B or C; None is the identity."""
    changes_shape = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and changes_shape):
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    if option == "A" and changes_shape:
        return ZeroPadShortcut(stride, out_channels - in_channels)
    return None


class ResNet(nn.Module):
    """conv1 -> max-pool -> layer1..layer4 (conv2_x..conv5_x) -> global avg-pool -> fc."""

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        width: float = 1.0,
        shortcut: str = "B",
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if depth not in LAYOUTS:
            raise BackboneError(f"unknown ResNet depth {depth}; choose one of {', '.join(map(str, LAYOUTS))}")
        if shortcut not in SHORTCUTS:
            raise BackboneError(f"unknown shortcut option {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
        self.depth, self.width, self.shortcut, self.num_classes = depth, width, shortcut, num_classes
        block, counts = LAYOUTS[depth]
        channels = scale_channels(64, width)
        self.conv1 = nn.Conv2d(3, channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, channels = self._make_stage(block, channels, 64, counts[0], stride=1)
        self.layer2, channels = self._make_stage(block, channels, 128, counts[1], stride=2)
        self.layer3, self.trunk_channels = self._make_stage(block, channels, 256, counts[2], stride=2)
        self.layer4, self.num_features = self._make_stage(block, self.trunk_channels, 512, counts[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.num_features, num_classes)
        # torchvision's initialisation: He et al.'s for convs; BN starts at weight 1, bias 0.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def _make_stage(self, block, in_channels: int, planes: int, blocks: int, stride: int):
        planes = scale_channels(planes, self.width)
        out_channels = planes * block.expansion
        layers = []
        for index in range(blocks):
            block_stride = stride if index == 0 else 1
            shortcut = make_shortcut(self.shortcut, in_channels, out_channels, block_stride)
            layers.append(block(in_channels, planes, block_stride, shortcut))
            in_channels = out_channels
        return nn.Sequential(*layers), out_channels

    @property
    def arch(self) -> str:
        thin = f" width {self.width}" if self.width != 1.0 else ""
        return f"ResNet-{self.depth} shortcut option {self.shortcut}{thin}"

    @property
    def torchvision_weights(self) -> str | None:
        """Name of torchvision's ImageNet weights for this exact architecture, None where it has none."""
        if self.shortcut != "B" or self.width != 1.0 or self.num_classes != 1000:
            return None
        return f"ResNet{self.depth}_Weights.DEFAULT"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def detection_parts(self) -> BackboneParts:
        """trunk = conv1..conv4_x (stride 16); head = conv5_x + global avg-pool; classifier = fc."""
        trunk = FeatureTrunk(self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2, self.layer3,
                             stride=16, out_channels=self.trunk_channels)
        head = nn.Sequential(self.layer4, self.avgpool, nn.Flatten(1))
        return BackboneParts(trunk, head, self.fc, 16, self.trunk_channels, self.num_features)
