"""The 2D UNet of the SSL4MIS / MONA reference code.

Widths 16-32-64-128-256, two 3x3 conv + BatchNorm + LeakyReLU per block, dropout
0.05/0.1/0.2/0.3/0.5 in the encoder blocks. The reference decoder upsamples with a 1x1 conv plus
bilinear interpolation (its `UpBlock` default), which is what gives its 1.81 M parameters;
`upsample="transposed"` swaps in 2x2 transposed convolutions (1.94 M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from mona.models.base import SegmentationNet

ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """Upsample to the skip's width and resolution, concatenate, then a conv block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsample: str):
        super().__init__()
        if upsample == "bilinear":
            self.up = nn.Sequential(
                nn.Conv2d(in_channels, skip_channels, kernel_size=1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            )
        elif upsample == "transposed":
            self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        else:
            raise ValueError(f"unknown upsample {upsample!r}: use 'bilinear' or 'transposed'")
        self.conv = ConvBlock(2 * skip_channels, out_channels, 0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmentationNet):
    def __init__(
        self, in_channels: int, num_classes: int, widths: list[int], upsample: str = "bilinear"
    ):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"unet needs 5 widths, got {widths}")
        self.widths = list(widths)
        self.down = nn.ModuleList()
        previous = in_channels
        for width, dropout in zip(widths, ENCODER_DROPOUT, strict=True):
            self.down.append(ConvBlock(previous, width, dropout))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], widths[i], upsample) for i in reversed(range(4))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        self.decoder_channels = [widths[i] for i in reversed(range(4))]
        self.bottleneck_channels = widths[-1]

    def drop_encoder(self) -> UNet:
        self.down = nn.ModuleList()
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.down[0](x)]
        for block in self.down[1:]:
            features.append(block(self.pool(features[-1])))
        return features

    def decode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = features[-1]
        maps = []
        for block, skip in zip(self.up, reversed(features[:-1]), strict=True):
            x = block(x, skip)
            maps.append(x)
        return maps
