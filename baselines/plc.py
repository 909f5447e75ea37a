"""PLC: positional contrastive pre-training (Zeng et al. 2021), then `sup`.

Stage "pretrain" (no labels used; every raw slice of the batch is data): two geometric +
photometric views per slice, encoder bottleneck -> average pool + MLP head (128-d). A slice's
position is (i + 1) / depth in its volume; two embeddings whose positions differ by less than
`position_threshold` (strictly, as the reference code; 0.35 as given for ACDC) are positives,
whatever their volumes, so both views of one slice always are. SupCon loss at temperature 0.1
over both views, without the reference's temperature / base_temperature factor (1 here).
Stage "finetune": `sup` on labeled slices from the pre-trained backbone (the decoder, untouched
by pre-training, keeps its initial weights); the projection head is dropped.

The reference gives 0.35 for ACDC only; the same value serves LiTS and MM-WHS here (positions
are normalised per volume, so it means the same fraction of the volume's extent). A grid that
wants another value for one dataset runs a variant, e.g. `plc~position_threshold=0.1`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mona.contrastive import (
    GlobalProjectionHead,
    PretrainThenFinetune,
    raw_slices,
    supcon_loss,
    two_views,
)
from mona.method import Batch, MethodContext
from mona.registry import register


def position_positives(positions: Tensor, threshold: float) -> Tensor:
    """(N, N) mask: |position_i - position_j| < threshold, never i with itself."""
    close = (positions[:, None] - positions[None, :]).abs() < threshold
    return close & ~torch.eye(len(positions), dtype=torch.bool, device=positions.device)


@register("plc")
class PLC(PretrainThenFinetune):
    display_name = "PLC"
    defaults = {"temperature": 0.1, "position_threshold": 0.35, "projection_dim": 128}

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        if ctx.stage == "pretrain":
            self.head = GlobalProjectionHead(
                self.net.bottleneck_channels, int(self.hp["projection_dim"])
            )

    def pretrain_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        images, positions, _ = raw_slices(batch)
        view_a, view_b = two_views(self.ctx.augmenter, images)
        embeddings = self.head(self.net.encode(torch.cat([view_a, view_b]))[-1])
        positive = position_positives(positions.repeat(2), self.hp["position_threshold"])
        loss = supcon_loss(embeddings, positive, self.hp["temperature"])
        return {"loss": loss, "positional_contrast": loss}
