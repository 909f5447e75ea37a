"""segmentation-models-pytorch UNet behind the harness backbone interface.

No pretrained weights are ever downloaded (`encoder_weights=None`); smp is imported only here
because it costs seconds per process.
"""

from __future__ import annotations

import torch

from mona.models.base import SegmentationNet


class SmpUNet(SegmentationNet):
    def __init__(self, encoder: str, in_channels: int, num_classes: int):
        super().__init__()
        import segmentation_models_pytorch as smp

        model = smp.Unet(
            encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes
        )
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.head = model.segmentation_head
        self._captured: list[torch.Tensor] = []
        for block in self.decoder.blocks:
            block.register_forward_hook(lambda _m, _i, out: self._captured.append(out))
        self.decoder_channels = [block.conv2[0].out_channels for block in self.decoder.blocks]
        self.bottleneck_channels = self.encoder.out_channels[-1]

    def drop_encoder(self) -> SmpUNet:
        self.encoder = None
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def decode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        self._captured = []
        self.decoder(features)
        maps, self._captured = self._captured, []
        return maps
