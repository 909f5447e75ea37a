"""Interpolation consistency training (Verma et al. 2019) as in SSL4MIS
`train_interpolation_consistency_training_2D.py`.

The unlabeled weak views are split into two halves u0, u1 and mixed per pair (an odd count
pairs its last view with the first, so every view is used) with lambda ~ Beta(0.2, 0.2):
`(1 - lambda) u0 + lambda u1`. The student sees the labeled views and the mixes in one batch
(`sup` on the labeled part); its softmax on a mix must match the same mix of the EMA teacher's
softmaxes on u0 and u1 (MSE). As in the reference, one lambda per pair, the teacher runs u0
and u1 in two forwards (its BatchNorm batch statistics are per half), and the weight is the
ramp `w(t)` over `ctx.ramp_iterations`, no delayed start.
"""

from __future__ import annotations

import torch

from mona.losses import ema_update, frozen_copy, supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


def mix(first: torch.Tensor, second: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(1 - lam) first + lam second, `lam` of shape (B, 1, 1, 1) (one factor per pair)."""
    return first * (1.0 - lam) + second * lam


def interpolation_consistency(
    mixed_probs: torch.Tensor,
    teacher_first: torch.Tensor,
    teacher_second: torch.Tensor,
    lam: torch.Tensor,
) -> torch.Tensor:
    """MSE between the student's softmax on the mixes and the mix of the teacher's softmaxes."""
    target = mix(teacher_first.float(), teacher_second.float(), lam.float()).detach()
    return torch.mean((mixed_probs.float() - target) ** 2)


def mixing_pairs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Halves (u0, u1) to mix pairwise; an odd count pairs the last image with the first."""
    count = len(images)
    if count < 2:
        raise ValueError("ict needs at least 2 unlabeled images per batch to mix")
    pairs = (count + 1) // 2
    second = images[pairs:]
    if count % 2:
        second = torch.cat([second, images[:1]])
    return images[:pairs], second


@register("ict")
class InterpolationConsistency(Method):
    display_name = "ICT"
    reference_code = "ssl4mis"
    defaults = {
        "ema_decay": 0.99,
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "alpha": 0.2,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()
        self.teacher = frozen_copy(self.net)

    def draw_mix_factors(self, pairs: int, device: torch.device) -> torch.Tensor:
        """lambda ~ Beta(alpha, alpha), one per pair, shape (pairs, 1, 1, 1)."""
        alpha = torch.tensor(float(self.hp["alpha"]))
        lam = torch.distributions.Beta(alpha, alpha).sample((pairs,))
        return lam.view(pairs, 1, 1, 1).to(device)

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        first, second = mixing_pairs(batch.unlabeled_image)
        pairs = len(first)
        lam = self.draw_mix_factors(pairs, first.device)
        mixed = mix(first, second, lam.to(first.dtype))
        logits = self.net(torch.cat([batch.labeled_image, mixed])).logits.float()
        sup = supervised_loss(logits[:n], batch.labeled_mask)
        with torch.no_grad():
            teacher_first = self.teacher(first).logits.float().softmax(1)
            teacher_second = self.teacher(second).logits.float().softmax(1)
        consistency = interpolation_consistency(
            logits[n:].softmax(1), teacher_first, teacher_second, lam
        )
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * consistency, "sup": sup, "consistency": consistency}

    def after_step(self, step: int) -> None:
        ema_update(self.teacher, self.net, step, self.hp["ema_decay"])

    def inference_net(self) -> SegmentationNet:
        return self.net
