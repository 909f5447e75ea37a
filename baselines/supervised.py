"""Supervised references: UNet-F (every training patient labeled) and UNet-L (labeled subset).

Both see only labeled slices; the engine gives them the whole batch (labeled + unlabeled size)
as labeled slices, so every method takes the same number of images per step.
"""

from __future__ import annotations

import torch

from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


class _Supervised(Method):
    uses_unlabeled = False

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        logits = self.net(batch.labeled_image).logits
        loss = supervised_loss(logits, batch.labeled_mask)
        return {"loss": loss, "sup": loss}

    def inference_net(self) -> SegmentationNet:
        return self.net


@register("unet_f")
class UNetFull(_Supervised):
    """Upper bound: the same run serves every labeled ratio."""

    display_name = "UNet-F"
    reference_code = "ssl4mis"
    labeled_pool = "all"


@register("unet_l")
class UNetLabeled(_Supervised):
    """Lower bound: the labeled subset only."""

    display_name = "UNet-L"
    reference_code = "ssl4mis"
