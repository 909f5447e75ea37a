"""Uncertainty-aware mean teacher (Yu et al. 2019) as in SSL4MIS
`train_uncertainty_aware_mean_teacher_2D.py`.

Like MT, the EMA teacher sees the unlabeled weak views plus noise clamp(0.1 N(0, 1), -0.2, 0.2)
and its softmax is the target of the student's softmax (squared error per class and pixel).
Eight more noisy teacher passes estimate the uncertainty of each pixel as the entropy of their
mean softmax; only pixels whose uncertainty is below (0.75 + 0.25 ramp(t)) ln 2 count, and the
masked squared error is `sum(mask * mse) / (2 * sum(mask) + 1e-16)`, the reference's
normalisation (its 2 is kept whatever the number of classes, as is ln 2, so that numbers compare
with the reference's ACDC runs). As in the reference:
- the target comes from its own noisy pass, separate from the uncertainty passes, and the
  uncertainty passes run two noisy copies of the unlabeled batch per forward (this sets the
  teacher's BatchNorm batch statistics, the teacher running in train mode like the student);
- the threshold ramps over `ctx.ramp_iterations`, the consistency weight `w(t)` too, with no
  delayed start (unlike MT);
- the entropy uses exact 0 log 0 = 0 instead of the reference's log(p + 1e-6).
"""

from __future__ import annotations

import math

import torch

from baselines.entropy_min import pixel_entropy
from mona.losses import ema_update, frozen_copy, sigmoid_rampup, supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register

COPIES_PER_FORWARD = 2


def uncertainty_threshold(step: int, ramp_iterations: int, rampup: float) -> float:
    """(0.75 + 0.25 ramp) ln 2: strict at the start (fewer pixels pass), ln 2 at the end."""
    length = max(rampup * ramp_iterations, 1.0)
    return (0.75 + 0.25 * sigmoid_rampup(step / length)) * math.log(2)


def predictive_uncertainty(pass_probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean softmax of T passes: (T, B, C, H, W) -> (B, 1, H, W)."""
    return pixel_entropy(pass_probs.float().mean(0)).unsqueeze(1)


def uncertainty_mask(pass_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """1.0 where the teacher passes agree enough (uncertainty < threshold), else 0.0."""
    return (predictive_uncertainty(pass_probs) < threshold).float()


def masked_consistency(
    student_probs: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """sum(mask * (p_s - p_t)^2) / (2 sum(mask) + 1e-16); mask (B, 1, H, W) counts pixels."""
    squared = (student_probs.float() - teacher_probs.float()) ** 2
    return (mask * squared).sum() / (2 * mask.sum() + 1e-16)


@register("uamt")
class UncertaintyAwareMeanTeacher(Method):
    display_name = "UAMT"
    reference_code = "ssl4mis"
    defaults = {
        "ema_decay": 0.99,
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "threshold_rampup": 1.0,
        "uncertainty_passes": 8,
        "noise_std": 0.1,
        "noise_clip": 0.2,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        passes = self.hp["uncertainty_passes"]
        if passes < 1:
            raise ValueError(f"methods.uamt: uncertainty_passes must be >= 1, got {passes}")
        self.net = ctx.build_backbone()
        self.teacher = frozen_copy(self.net)

    def _noisy(self, images: torch.Tensor) -> torch.Tensor:
        noise = (torch.randn_like(images) * self.hp["noise_std"]).clamp(
            -self.hp["noise_clip"], self.hp["noise_clip"]
        )
        return images + noise

    @torch.no_grad()
    def teacher_passes(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of `uncertainty_passes` noisy teacher passes: (T, B, C, H, W)."""
        total = self.hp["uncertainty_passes"]
        chunks = []
        for start in range(0, total, COPIES_PER_FORWARD):
            copies = min(COPIES_PER_FORWARD, total - start)
            logits = self.teacher(self._noisy(images.repeat(copies, 1, 1, 1))).logits
            chunks.append(logits.float().softmax(1).unflatten(0, (copies, len(images))))
        return torch.cat(chunks)

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        unlabeled = batch.unlabeled_image
        logits = self.net(torch.cat([batch.labeled_image, unlabeled])).logits
        sup = supervised_loss(logits[:n], batch.labeled_mask)
        with torch.no_grad():
            teacher_probs = self.teacher(self._noisy(unlabeled)).logits.float().softmax(1)
        threshold = uncertainty_threshold(
            step, self.ctx.ramp_iterations, self.hp["threshold_rampup"]
        )
        mask = uncertainty_mask(self.teacher_passes(unlabeled), threshold)
        consistency = masked_consistency(logits[n:].float().softmax(1), teacher_probs, mask)
        weight = self.unsupervised_weight(step)
        return {
            "loss": sup + weight * consistency,
            "sup": sup,
            "consistency": consistency,
            "certain_fraction": mask.mean(),
        }

    def after_step(self, step: int) -> None:
        ema_update(self.teacher, self.net, step, self.hp["ema_decay"])

    def inference_net(self) -> SegmentationNet:
        return self.net
