"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016a, "Deep Residual Learning", section 4.2),
as implemented in fb.resnet.torch (``models/resnet.lua``, ``dataset == 'cifar10'`` branch).

Used by Yu et al. (arXiv 1707.04822) for Tables 1-2; He et al.'s Table 6 gives 0.27M, 0.46M, 0.66M, 0.85M
and 1.7M params.

Layout for depth = 6n + 2: a 3x3 conv (16 maps) -> BN -> ReLU, then 3 stages of n basic blocks
with 16, 32 and 64 maps (the first block of stages 2 and 3 has stride 2), then global average
pooling and a Linear layer. Each basic block is conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut,
then ReLU.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Shortcut = Literal["A", "B"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # no bias: every conv is followed by BN, whose shift makes a conv bias redundant
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: strided identity, extra channels filled with zeros. No parameters.

    fb.resnet.torch builds it as ``SpatialAveragePooling(1, 1, s, s)`` (a pure subsample) then
    ``Concat(Identity, MulConstant(0))``, so the zero channels come *after* the input ones.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (B, C_out, H/s, W/s)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU (post-activation, He et al. 2016a)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, shortcut: Shortcut
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:  # option B: 1x1 strided projection + BN, as resnet.lua's shortcutType 'B'
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 inputs, depth = 6n + 2.

    Init (fb.resnet.torch ``ConvInit``/``BNInit``): conv weights He-normal with
    std = sqrt(2 / (k*k*out_channels)) (fan-out), BN weight 1 and bias 0, Linear bias 0 and
    Linear weight PyTorch's default (fb.resnet.torch keeps Torch's default there too).

    Args:
        depth: 20, 32, 44, 56 or 110 in the paper; any 6n + 2 works.
        num_classes: 10 for CIFAR-10, 100 for CIFAR-100.
        shortcut: "A" (default, as in He et al.'s CIFAR experiments and Table 6's counts):
            parameter-free strided zero-padded identity; "B": 1x1 conv + BN projection when
            the shape changes.
    """

    def __init__(self, depth: int, num_classes: int = 10, shortcut: Shortcut = "A") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1; got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(
                f"shortcut must be 'A' (zero-pad) or 'B' (projection); got {shortcut!r}"
            )
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        in_channels = 16
        for stage_index, channels in enumerate((16, 32, 64)):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride, shortcut))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)  # 8x8 -> 1x1 for 32x32 inputs
        self.fc = nn.Linear(64, num_classes)
        self.depth = depth
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, 32, 32) -> logits (B, num_classes)."""
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.stage3(self.stage2(self.stage1(x)))  # (B, 64, 8, 8)
        return self.fc(self.pool(x).flatten(1))


def he_init(model: nn.Module) -> None:
    """fb.resnet.torch init: He-normal (fan-out) convs, BN to identity, zero Linear bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def resnet20(num_classes: int = 10, shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-20 (n = 3), 0.27M params with option A."""
    return CifarResNet(20, num_classes, shortcut)


def resnet32(num_classes: int = 10, shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-32 (n = 5), 0.46M params with option A."""
    return CifarResNet(32, num_classes, shortcut)


def resnet44(num_classes: int = 10, shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-44 (n = 7), 0.66M params with option A."""
    return CifarResNet(44, num_classes, shortcut)


def resnet56(num_classes: int = 10, shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-56 (n = 9), 0.85M params with option A."""
    return CifarResNet(56, num_classes, shortcut)


def resnet110(num_classes: int = 10, shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-110 (n = 18), 1.7M params with option A."""
    return CifarResNet(110, num_classes, shortcut)
