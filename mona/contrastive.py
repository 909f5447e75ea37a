"""Pieces shared by contrastive methods: projection heads, views and InfoNCE-type losses.

Every loss takes raw embeddings (N, D), L2-normalises them itself (cosine similarity, in float32
even under bf16 autocast) and says which pairs attract through boolean masks. Both families of
the literature are here because their denominators differ: `supcon_loss` (Khosla et al. 2020,
and SimCLR's NT-Xent) divides by every other embedding, `pair_contrastive_loss` (Chaitanya et
al. 2020) by the positive plus the listed negatives only, so other positives are neither pulled
nor pushed.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mona.augment import Augmenter
from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet

# Finite stand-in for log(0): keeps logsumexp and its gradient finite when a row is all masked.
_MASKED_LOGIT = -1e9


class GlobalProjectionHead(nn.Module):
    """Global average pooling then a two-layer MLP (SimCLR's g): feature map -> one vector."""

    def __init__(self, in_channels: int, out_dim: int = 128, hidden: int | None = None):
        super().__init__()
        hidden = hidden or in_channels
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(features.mean(dim=(2, 3)))


class DenseProjectionHead(nn.Module):
    """Two 1x1 convolutions with BatchNorm and ReLU between: one vector per pixel."""

    def __init__(self, in_channels: int, out_dim: int = 128, hidden: int | None = None):
        super().__init__()
        hidden = hidden or in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_dim, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


def cosine_logits(anchors: Tensor, contrast: Tensor, temperature: float) -> Tensor:
    """Cosine similarities (A, N) of anchors (A, D) with contrast (N, D), divided by temperature.

    Computed in float32 even under autocast: bf16's 8-bit mantissa, divided by t = 0.1, would
    perturb the logits by several hundredths.
    """
    with torch.autocast(anchors.device.type, enabled=False):
        a = F.normalize(anchors.float(), dim=-1)
        c = F.normalize(contrast.float(), dim=-1)
        return a @ c.T / temperature


def supcon_loss(
    embeddings: Tensor,
    positive: Tensor,
    temperature: float,
    anchor_index: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out), mean over anchors.

    For anchor i: -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) ).
    `positive` (A, N) marks P(i) for the anchors `anchor_index` (default: every embedding,
    A = N); an anchor is never its own positive. Anchors without a positive are skipped; with
    none at all the loss is 0 (still attached to the graph).
    """
    n = embeddings.shape[0]
    if anchor_index is None:
        anchor_index = torch.arange(n, device=embeddings.device)
    logits = cosine_logits(embeddings[anchor_index], embeddings, temperature)
    rows = torch.arange(len(anchor_index), device=embeddings.device)
    is_self = torch.zeros_like(positive, dtype=torch.bool)
    is_self[rows, anchor_index] = True
    logits = logits.masked_fill(is_self, _MASKED_LOGIT)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positive = positive & ~is_self
    count = positive.sum(dim=1)
    has_positive = count > 0
    if not bool(has_positive.any()):
        return embeddings.sum() * 0.0
    summed = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(summed[has_positive] / count[has_positive]).mean()


def nt_xent(view_a: Tensor, view_b: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent: row i of `view_a` and of `view_b` are the only positive pair.

    Mean over the 2N anchors of -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t)).
    """
    n = view_a.shape[0]
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(view_a.device)
    positive = F.one_hot(partner, 2 * n).bool()
    return supcon_loss(torch.cat([view_a, view_b]), positive, temperature)


def pair_contrastive_loss(
    embeddings: Tensor, positive: Tensor, negative: Tensor, temperature: float
) -> Tensor:
    """Chaitanya et al.'s loss, mean over every ordered positive pair (i, p).

    l(i, p) = -log( exp(s_ip / t) / (exp(s_ip / t) + sum_{n in negative(i)} exp(s_in / t)) ).
    Pairs that are neither positive nor negative are ignored. With no positive pair the loss
    is 0 (still attached to the graph).
    """
    n = embeddings.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    pairs = positive & ~eye
    if not bool(pairs.any()):
        return embeddings.sum() * 0.0
    logits = cosine_logits(embeddings, embeddings, temperature)
    negatives = logits.masked_fill(~(negative & ~eye), _MASKED_LOGIT).logsumexp(1, keepdim=True)
    per_pair = torch.logaddexp(logits, negatives) - logits
    return per_pair[pairs].mean()


def two_views(augmenter: Augmenter, images: Tensor) -> tuple[Tensor, Tensor]:
    """Two independent geometric + photometric views of the same slices (no CutMix: it would
    paste other slices into a view and blur which pairs are positive)."""
    views = []
    for _ in range(2):
        geometric, _mask = augmenter.geometric(images)
        views.append(augmenter.photometric(geometric))
    return views[0], views[1]


def raw_slices(batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """Every raw slice of the batch, labels ignored: (images, positions, volume ids).

    Labeled and unlabeled slices come from separate stores whose volume indices both start at
    0; unlabeled ids are shifted past the labeled ones so equal ids mean the same store volume.
    """
    images = torch.cat([batch.labeled_raw_image, batch.unlabeled_raw_image])
    positions = torch.cat([batch.labeled_position, batch.unlabeled_position])
    offset = int(batch.labeled_volume.max()) + 1 if batch.labeled_volume.numel() else 0
    volumes = torch.cat([batch.labeled_volume, batch.unlabeled_volume + offset])
    return images, positions, volumes


def load_backbone(net: nn.Module, method_state: dict[str, Tensor], prefix: str = "net.") -> None:
    """Load the entries of a whole method state under `prefix` into `net`, strictly.

    Lets a fine-tuning stage start from a pre-training stage that had extra heads: those
    entries are dropped, but every backbone weight must be there.
    """
    state = {k[len(prefix) :]: v for k, v in method_state.items() if k.startswith(prefix)}
    net.load_state_dict(state)


class PretrainThenFinetune(Method):
    """Contrastive pre-training of the backbone, then `sup` fine-tuning from its weights.

    Fine-tuning reads only labeled slices (the whole batch, as UNet-L), loads the pre-trained
    backbone and drops the projection heads. Subclasses build their heads when
    `ctx.stage == "pretrain"` and implement `pretrain_step`.
    """

    stages = ("pretrain", "finetune")

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        if ctx.stage not in self.stages:
            raise ValueError(f"{self.name} trains in stages {self.stages}, not {ctx.stage!r}")
        self.net = ctx.build_backbone()

    @classmethod
    def reads_unlabeled(cls, stage: str) -> bool:
        return stage == "pretrain"

    def start_from(self, previous_stage: dict[str, torch.Tensor]) -> None:
        load_backbone(self.net, previous_stage)

    @abstractmethod
    def pretrain_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Losses of one pre-training step."""

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if self.ctx.stage == "finetune":
            sup = supervised_loss(self.net(batch.labeled_image).logits, batch.labeled_mask)
            return {"loss": sup, "sup": sup}
        return self.pretrain_step(batch, step)

    def inference_net(self) -> SegmentationNet:
        return self.net
