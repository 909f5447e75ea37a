"""GCL: global and local contrastive pre-training (Chaitanya et al. 2020), then `sup`.

Stage "pretrain" (no labels used; every raw slice of the batch, labeled or not, is data):
- first `global_fraction` of the stage: the encoder plus a global head (average pool + MLP,
  128-d) learn Chaitanya's G^D loss. Each slice gives two geometric + photometric views; its
  partition is `ceil(position * partitions) - 1` (4 equal parts of the (0, 1] position axis).
  Positives: the two views of one slice, and slices of the same partition from different
  volumes; negatives: slices of other partitions; two slices of one partition of the same
  volume (the reference never draws both) are neither. Loss as the reference code:
  -log(e^{s+} / (e^{s+} + sum over negatives)), temperature 0.1, mean over positive pairs.
- the rest: the decoder's first `decoder_blocks` blocks plus a dense head (two 1x1 convs)
  learn the local loss with the encoder frozen (its features computed without gradient, as
  the reference freezes it). Both views share one geometric transform and differ in
  photometry, so regions correspond; the head's map is average-pooled on a `local_grid` x
  `local_grid` grid (3 x 3), and region r of one view is the positive of region r of the
  other; the other regions of both views of the same slice are the negatives (the reference
  uses 3x3-pixel patches on such a grid and 5 nearby negatives).
Stage "finetune": `sup` on labeled slices, starting from the pre-trained backbone (encoder and
every decoder block; blocks the local loss never reached keep their initial weights). Both
heads exist only in pre-training and are dropped. No `sup` in pre-training: the reference
pre-trains without labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mona.contrastive import (
    DenseProjectionHead,
    GlobalProjectionHead,
    PretrainThenFinetune,
    pair_contrastive_loss,
    raw_slices,
    two_views,
)
from mona.method import Batch, MethodContext
from mona.registry import register


def partition_of(positions: Tensor, partitions: int) -> Tensor:
    """Partition index of each position (i + 1) / depth: equal parts of (0, 1], from 0."""
    index = torch.ceil(positions.double() * partitions - 1e-6).long() - 1
    return index.clamp(0, partitions - 1)


def partition_pairs(positions: Tensor, volumes: Tensor, partitions: int) -> tuple[Tensor, Tensor]:
    """(positive, negative) (N, N) masks of the G^D loss over N embeddings.

    Positive: same partition and either another volume or the same slice (same volume and
    position: the other view). Negative: another partition. Never self.
    """
    part = partition_of(positions, partitions)
    same_part = part[:, None] == part[None, :]
    same_volume = volumes[:, None] == volumes[None, :]
    same_slice = same_volume & (positions[:, None] == positions[None, :])
    eye = torch.eye(len(positions), dtype=torch.bool, device=positions.device)
    positive = same_part & (~same_volume | same_slice) & ~eye
    return positive, ~same_part


def local_region_pairs(images: int, regions: int, device=None) -> tuple[Tensor, Tensor]:
    """(positive, negative) masks over 2 * images * regions region embeddings.

    Order: view (2), then image, then region. Positive: same image and region, other view;
    negative: same image, other region (either view).
    """
    index = torch.arange(2 * images * regions, device=device)
    image = (index // regions) % images
    region = index % regions
    view = index // (images * regions)
    same_image = image[:, None] == image[None, :]
    same_region = region[:, None] == region[None, :]
    positive = same_image & same_region & (view[:, None] != view[None, :])
    return positive, same_image & ~same_region


@register("gcl")
class GCL(PretrainThenFinetune):
    display_name = "GCL"
    defaults = {
        "temperature": 0.1,
        "partitions": 4,
        "global_fraction": 0.5,
        "local_grid": 3,
        "decoder_blocks": 3,
        "projection_dim": 128,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        if ctx.stage == "pretrain":
            blocks = int(self.hp["decoder_blocks"])
            if not 1 <= blocks <= len(self.net.decoder_channels):
                raise ValueError(
                    f"methods.gcl.decoder_blocks must be 1..{len(self.net.decoder_channels)}"
                )
            dim = int(self.hp["projection_dim"])
            self.global_head = GlobalProjectionHead(self.net.bottleneck_channels, dim)
            self.local_head = DenseProjectionHead(self.net.decoder_channels[blocks - 1], dim)

    def in_global_phase(self, step: int) -> bool:
        return step < self.hp["global_fraction"] * self.ctx.max_iterations

    def pretrain_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        images, positions, volumes = raw_slices(batch)
        if self.in_global_phase(step):
            loss = self._global_loss(images, positions, volumes)
            return {"loss": loss, "global_contrast": loss}
        loss = self._local_loss(images)
        return {"loss": loss, "local_contrast": loss}

    def _global_loss(self, images: Tensor, positions: Tensor, volumes: Tensor) -> Tensor:
        view_a, view_b = two_views(self.ctx.augmenter, images)
        embeddings = self.global_head(self.net.encode(torch.cat([view_a, view_b]))[-1])
        positive, negative = partition_pairs(
            positions.repeat(2), volumes.repeat(2), int(self.hp["partitions"])
        )
        return pair_contrastive_loss(embeddings, positive, negative, self.hp["temperature"])

    def _local_loss(self, images: Tensor) -> Tensor:
        augmenter = self.ctx.augmenter
        geometric, _ = augmenter.geometric(images)
        views = torch.cat([augmenter.photometric(geometric), augmenter.photometric(geometric)])
        with torch.no_grad():
            features = self.net.encode(views)
        decoder_map = self.net.decode(features)[int(self.hp["decoder_blocks"]) - 1]
        grid = int(self.hp["local_grid"])
        pooled = F.adaptive_avg_pool2d(self.local_head(decoder_map), grid)  # (2B, D, g, g)
        embeddings = pooled.flatten(2).transpose(1, 2).reshape(-1, pooled.shape[1])
        positive, negative = local_region_pairs(len(images), grid * grid, images.device)
        return pair_contrastive_loss(embeddings, positive, negative, self.hp["temperature"])
