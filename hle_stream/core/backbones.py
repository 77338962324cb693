"""Feature extractors: a small CNN for images, an MLP for vectors, ResNet-18/34 as in the paper.

Every backbone maps a batch to a flat feature vector of ``out_dim`` features; the per-level
heads live in :mod:`hle_stream.core.model`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages, each halving the resolution: a few MFLOPs per 28 px image,
    so a CPU can take thousands of online steps a minute."""

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2) if i < len(widths) - 1 else nn.AdaptiveAvgPool2d(1))
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MLP(nn.Module):
    """Fully connected layers with ReLU and layer norm, for feature vectors (text embeddings)."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.LayerNorm(width), nn.ReLU(inplace=True)]
            prev = width
        self.body = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic blocks; ``imagenet_stem`` uses the 7x7/2 conv + max-pool the paper uses
    even on 32 px CIFAR, otherwise a 3x3 stem suited to small images."""

    def __init__(self, in_channels: int, blocks: Sequence[int], imagenet_stem: bool = True) -> None:
        super().__init__()
        if imagenet_stem:
            stem = [nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        else:
            stem = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        layers: list[nn.Module] = list(stem)
        cin = 64
        for stage, count in enumerate(blocks):
            cout = 64 * 2**stage
            for i in range(count):
                layers.append(_BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


BACKBONES = ("auto", "small-cnn", "mlp", "resnet18", "resnet34")


def build_backbone(name: str, input_shape: Sequence[int]) -> nn.Module:
    """A backbone for inputs of ``input_shape`` (C,H,W images or (D,) vectors).

    ``auto`` takes the small CNN for images and the MLP for vectors.
    """
    is_image = len(input_shape) == 3
    if name == "auto":
        name = "small-cnn" if is_image else "mlp"
    if name == "mlp":
        if is_image:
            raise ValueError("the mlp backbone takes feature vectors, not images")
        return MLP(int(input_shape[0]))
    if not is_image:
        raise ValueError(f"backbone {name!r} takes images (C,H,W), got shape {tuple(input_shape)}")
    channels = int(input_shape[0])
    if name == "small-cnn":
        return SmallCNN(channels)
    if name == "resnet18":
        return ResNet(channels, (2, 2, 2, 2))
    if name == "resnet34":
        return ResNet(channels, (3, 4, 6, 3))
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
