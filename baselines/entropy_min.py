"""Entropy minimisation (Grandvalet & Bengio 2005) as in SSL4MIS `train_entropy_minimization_2D.py`.

One network sees labeled + unlabeled weak views in one batch; besides `sup` on the labeled part
it lowers the per-pixel entropy of its softmax, normalised by ln(C) so the term lies in [0, 1],
averaged over every pixel of the whole batch (labeled slices too, as the reference does).
Weight: the ramp `w(t)` over `ctx.ramp_iterations` (SSL4MIS: 0.1, 200 x 150 iterations).
The reference adds 1e-6 inside the log; here 0 log 0 is taken as 0 exactly, so a one-hot
prediction has entropy 0.
"""

from __future__ import annotations

import math

import torch

from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


def pixel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """-sum_c p log p over the class axis (dim 1), with 0 log 0 = 0."""
    probs = probs.float()
    tiny = torch.finfo(probs.dtype).tiny
    return -(probs * probs.clamp_min(tiny).log()).sum(1)


def entropy_term(probs: torch.Tensor) -> torch.Tensor:
    """Mean over pixels and images of the entropy divided by ln(C): 0 when confident, 1 uniform."""
    return pixel_entropy(probs).mean() / math.log(probs.shape[1])


@register("em")
class EntropyMinimization(Method):
    display_name = "EM"
    reference_code = "ssl4mis"
    defaults = {"consistency": 0.1, "consistency_rampup": 1.0}

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        logits = self.net(images).logits.float()
        sup = supervised_loss(logits[:n], batch.labeled_mask)
        entropy = entropy_term(logits.softmax(1))
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * entropy, "sup": sup, "entropy": entropy}

    def inference_net(self) -> SegmentationNet:
        return self.net
