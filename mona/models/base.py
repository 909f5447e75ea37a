"""The one backbone interface every method builds on.

A backbone is split like segmentation_models_pytorch: an encoder that returns a list of feature
maps (finest first, bottleneck last), a decoder that turns them into a list of decoder maps
(coarsest first, finest last) and a 1-channel-per-class head. Methods that need extra heads
(auxiliary decoders, deep supervision, projection heads) call `encode` / `decode` themselves
instead of forking the backbone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SegOutput:
    """Logits plus what methods read: bottleneck (global heads), decoder maps (dense heads)."""

    logits: torch.Tensor
    bottleneck: torch.Tensor
    decoder: list[torch.Tensor]


class SegmentationNet(nn.Module, ABC):
    """Base class: subclasses implement `encode`, `decode` and set `head` and `decoder_channels`."""

    decoder_channels: list[int]
    bottleneck_channels: int
    head: nn.Module

    @abstractmethod
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, finest first, bottleneck last."""

    @abstractmethod
    def decode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder maps, coarsest first; the last one feeds the head."""

    def drop_encoder(self) -> SegmentationNet:
        """Remove the encoder in place and return self: a decoder + head for extra branches."""
        raise TypeError(f"{type(self).__name__} cannot drop its encoder")

    def forward(self, x: torch.Tensor) -> SegOutput:
        features = self.encode(x)
        decoder_maps = self.decode(features)
        return SegOutput(self.head(decoder_maps[-1]), features[-1], decoder_maps)


def build_backbone(
    name: str,
    in_channels: int,
    num_classes: int,
    widths: list[int] | None = None,
    upsample: str = "bilinear",
) -> SegmentationNet:
    """`unet` (the reference 2D UNet) or `smp:<encoder>` (segmentation-models-pytorch UNet)."""
    if name == "unet":
        from mona.models.unet import UNet

        return UNet(in_channels, num_classes, widths or [16, 32, 64, 128, 256], upsample)
    if name.startswith("smp:"):
        from mona.models.smp_unet import SmpUNet

        return SmpUNet(name.split(":", 1)[1], in_channels, num_classes)
    raise ValueError(f"unknown backbone {name!r}: use 'unet' or 'smp:<encoder>'")
