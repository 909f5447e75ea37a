"""SCS: semi-supervised contrastive pre-training (Hu et al. 2021), then `sup`.

Stage "pretrain":
- first `global_fraction` of the stage: SimCLR on the encoder. Every raw slice of the batch
  (labels ignored) gives two geometric + photometric views; average pool + MLP head (128-d);
  NT-Xent at temperature 0.5.
- the rest: supervised local pixel contrast on the last decoder map, through a dense head
  (two 1x1 convs, 128-d). View a is the batch's weak view, view b a photometric copy of it
  (same geometry, so one label map serves both). Labels are the masks on labeled slices and,
  on unlabeled slices, pseudo-labels = argmax of the network's own prediction on view a
  (detached). Features and labels are subsampled with stride `stride` (rows and columns
  0, 4, 8, ...); pixels with the same label are positives; SupCon at temperature 0.1. As the
  reference code, background pixels are contrasted against but are not anchors
  (`background_anchors`). Unlike it, pixels are contrasted within one slice (its two views),
  not across the whole batch, which bounds memory at 256 x 256 with 24 slices.
  The reference draws its pseudo-labels from a network first trained on the labeled slices;
  here that network is trained at the same time: this phase adds `sup` on the labeled view.
Stage "finetune": `sup` on labeled slices from the pre-trained backbone; heads are dropped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mona.contrastive import (
    DenseProjectionHead,
    GlobalProjectionHead,
    PretrainThenFinetune,
    nt_xent,
    raw_slices,
    supcon_loss,
    two_views,
)
from mona.losses import supervised_loss
from mona.method import Batch, MethodContext
from mona.registry import register


def subsample(x: Tensor, stride: int) -> Tensor:
    """Rows and columns 0, stride, 2 stride, ... of the last two axes (features or labels)."""
    return x[..., ::stride, ::stride]


def local_pixel_loss(
    view_a: Tensor,
    view_b: Tensor,
    labels: Tensor,
    temperature: float,
    background_anchors: bool = False,
) -> Tensor:
    """SupCon over the pixels of each slice's two views: same label = positive.

    view_a, view_b: (B, P, D) embeddings of the same P pixels; labels (B, P). Mean over the
    slices that have an anchor; 0 (attached) when none has.
    """
    losses = []
    for a, b, label in zip(view_a, view_b, labels, strict=True):
        pixels = torch.cat([a, b])
        label = torch.cat([label, label])
        anchors = torch.arange(len(label), device=label.device)
        if not background_anchors:
            anchors = anchors[label != 0]
        if len(anchors) == 0:
            continue
        positive = label[anchors][:, None] == label[None, :]
        losses.append(supcon_loss(pixels, positive, temperature, anchors))
    if not losses:
        return view_a.sum() * 0.0
    return torch.stack(losses).mean()


@register("scs")
class SCS(PretrainThenFinetune):
    display_name = "SCS"
    defaults = {
        "global_temperature": 0.5,
        "local_temperature": 0.1,
        "stride": 4,
        "global_fraction": 0.5,
        "background_anchors": False,
        "projection_dim": 128,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        if ctx.stage == "pretrain":
            dim = int(self.hp["projection_dim"])
            self.global_head = GlobalProjectionHead(self.net.bottleneck_channels, dim)
            self.local_head = DenseProjectionHead(self.net.decoder_channels[-1], dim)

    def in_global_phase(self, step: int) -> bool:
        return step < self.hp["global_fraction"] * self.ctx.max_iterations

    def pretrain_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if self.in_global_phase(step):
            images, _, _ = raw_slices(batch)
            view_a, view_b = two_views(self.ctx.augmenter, images)
            z = self.global_head(self.net.encode(torch.cat([view_a, view_b]))[-1])
            loss = nt_xent(*z.chunk(2), self.hp["global_temperature"])
            return {"loss": loss, "global_contrast": loss}
        return self._local_step(batch)

    def _local_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        view_a = torch.cat([batch.labeled_image, batch.unlabeled_image])
        view_b = self.ctx.augmenter.photometric(view_a)
        output = self.net(torch.cat([view_a, view_b]))
        logits_a = output.logits[: len(view_a)]
        sup = supervised_loss(logits_a[:n], batch.labeled_mask)
        pseudo = logits_a[n:].detach().argmax(dim=1)
        labels = torch.cat([batch.labeled_mask, pseudo])
        stride = int(self.hp["stride"])
        embedded = self.local_head(subsample(output.decoder[-1], stride))  # (2B, D, h, w)
        pixels_a, pixels_b = embedded.flatten(2).transpose(1, 2).chunk(2)  # (B, P, D) each
        local = local_pixel_loss(
            pixels_a,
            pixels_b,
            subsample(labels, stride).flatten(1),
            self.hp["local_temperature"],
            bool(self.hp["background_anchors"]),
        )
        return {"loss": sup + local, "sup": sup, "local_contrast": local}
