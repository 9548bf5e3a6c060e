"""Pre-activation ResNet-34 for ImageNet (He et al. 2016b, "Identity Mappings in Deep Residual
Networks"), as implemented in fb.resnet.torch ``models/preresnet.lua`` (shortcutType 'B').

Used by Yu et al. (arXiv 1707.04822) for ImageNet; about 21.8M parameters at 1000 classes.

Layout: conv7x7/2 (64) -> BN -> ReLU -> maxpool3x3/2, then 4 stages of [3, 4, 6, 3] basic blocks
with 64, 128, 256, 512 maps, then BN -> ReLU -> global average pool -> Linear.
Each block computes BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut, no activation after the
addition. As in preresnet.lua:
- the first block of stage 1 has no pre-activation ('no_preact'): the stem already ends in
  BN-ReLU;
- the first block of stages 2-4 ('both_preact') applies its BN-ReLU *before* the split, so the
  1x1 projection shortcut sees the pre-activated input too;
- the other blocks pre-activate the residual branch only, the shortcut is the identity.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from models.resnet_cifar import he_init

Preact = Literal["none", "both", "residual"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation basic block.

    Args:
        preact: "none" (no BN-ReLU on the input), "both" (BN-ReLU before the split, shared by
            both branches) or "residual" (BN-ReLU on the residual branch only).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, preact: Preact) -> None:
        super().__init__()
        self.preact = preact
        # the input BN exists only when there is a pre-activation to compute
        self.bn1 = nn.BatchNorm2d(in_channels) if preact != "none" else None
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        # shortcutType 'B': a 1x1 conv (no BN, the sum is pre-activated by the next block)
        # only when the shape changes
        self.projection = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        residual_input = x
        if self.bn1 is not None:
            residual_input = F.relu(self.bn1(x))
            if self.preact == "both":
                x = residual_input  # the shortcut starts after the shared pre-activation
        out = self.conv1(residual_input)
        out = self.conv2(F.relu(self.bn2(out)))
        shortcut = self.projection(x) if self.projection is not None else x
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet with basic blocks for 224x224 inputs (any size >= 32 works,
    thanks to the adaptive average pool).

    Init as fb.resnet.torch: He-normal (fan-out) convs, BN weight 1 / bias 0, Linear bias 0.

    Args:
        blocks: basic blocks per stage; [3, 4, 6, 3] is ResNet-34.
        num_classes: 1000 for ImageNet.
    """

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Module] = []
        in_channels = 64
        if len(blocks) != 4:
            raise ValueError(f"blocks gives the basic blocks of 4 stages; got {blocks}")
        stage_widths = (64, 128, 256, 512)
        for stage_index, (count, channels) in enumerate(zip(blocks, stage_widths, strict=True)):
            stride = 1 if stage_index == 0 else 2
            first_preact: Preact = "none" if stage_index == 0 else "both"
            layers = [PreActBlock(in_channels, channels, stride, first_preact)]
            layers += [PreActBlock(channels, channels, 1, "residual") for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.bn_final = nn.BatchNorm2d(in_channels)  # the last block's sum is not activated yet
        self.pool = nn.AdaptiveAvgPool2d(1)  # 7x7 -> 1x1 at 224x224, as Avg(7, 7)
        self.fc = nn.Linear(in_channels, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, 224, 224) -> logits (B, num_classes)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (B, 64, 56, 56)
        x = self.stages(x)  # (B, 512, 7, 7)
        x = F.relu(self.bn_final(x))
        return self.fc(self.pool(x).flatten(1))


def preact_resnet34(num_classes: int = 1000) -> PreActResNet:
    """Pre-activation ResNet-34 (fb.resnet.torch preresnet.lua), ~21.8M params at 1000 classes."""
    return PreActResNet((3, 4, 6, 3), num_classes)
