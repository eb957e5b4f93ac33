"""The CIFAR ResNet (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2),
as used by the RAdam paper's CIFAR-10 experiments (Liu et al., ICLR 2020, Sec. 5; original code:
https://github.com/LiyuanLucasLiu/RAdam, cifar_imagenet/models/cifar/resnet.py).

    input (B, 3, 32, 32) -> conv3x3 16 -> BN -> ReLU
    stage 1: n BasicBlocks, 16 channels, 32x32
    stage 2: n BasicBlocks, 32 channels, 16x16 (first block stride 2)
    stage 3: n BasicBlocks, 64 channels,  8x8  (first block stride 2)
    global average pool -> linear 64 -> classes,           depth = 6 n + 2 (20, 32, 44, 56, 110)

BasicBlock: conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU. Where the shape changes the
shortcut is a 1x1 convolution with stride 2 + BN (He et al.'s option B, as in the original code); elsewhere
the identity. Convolutions: He normal initialisation (std sqrt(2 / (k^2 out_channels))), no bias; BN weight 1,
bias 0. ResNet-20: 272,474 parameters (0.27M, He et al.'s Table 6 with option A: 0.27M). ResNet-8 (n = 1,
model=resnet8_cpu, the CPU model of task=mnist5k): 78,042 parameters, 77,754 with one input channel
(``in_channels``; the layout is size-agnostic: 28x28 digits run the stages at 28, 14 and 7 pixels).

Checked against the original repository's model (tests/test_vision_mnist5k.py): a model written to the
description of LiyuanLucasLiu/RAdam cifar_imagenet/models/cifar/resnet.py (ResNet(depth, block_name=
'BasicBlock'): conv1-bn1-relu, layer1-3, downsample = 1x1 conv + BN, AvgPool2d(8), fc) has the same parameter
count (ResNet-20: 272,474; ResNet-8: 78,042) and, with its weights copied in, the same outputs (to 1e-5, in
training and in eval mode) and the same BN running statistics.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C, H / stride, W / stride)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64),
                 in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"model.depth={depth} is not 6n + 2 (n >= 1); use 20, 32, 44, 56 or 110")
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        stages, in_channels = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                stages.append(BasicBlock(in_channels, width, stride=2 if i > 0 and j == 0 else 1))
                in_channels = width
        self.blocks = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes); CIFAR: (B, 3, 32, 32)
        x = torch.relu(self.bn(self.conv(x)))               # (B, 16, H, W)
        x = self.blocks(x)                                  # (B, 64, H / 4, W / 4) (rounded up)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet_cifar(depth: int = 20, num_classes: int = 10, widths=(16, 32, 64), in_channels: int = 3) -> CifarResNet:
    return CifarResNet(depth=depth, num_classes=num_classes, widths=tuple(widths), in_channels=in_channels)


def resnet18_imagenet(num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-18 (random initialisation), as the paper's ImageNet experiments."""
    import torchvision
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)
