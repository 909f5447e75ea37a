"""Mean teacher (Tarvainen & Valpola 2017) as in SSL4MIS `train_mean_teacher_2D.py`.

The student sees labeled + unlabeled weak views in one batch; the EMA teacher sees the unlabeled
views plus clamped Gaussian noise. Consistency = MSE between the two softmaxes, weighted by the
ramp `w(t)`, and switched off for the first `consistency_start` fraction of the ramp's span
(SSL4MIS: 1000 of 30 000 iterations; `mona.method.Method.unsupervised_weight`).
"""

from __future__ import annotations

import torch

from mona.losses import ema_update, frozen_copy, supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


@register("mt")
class MeanTeacher(Method):
    display_name = "MT"
    reference_code = "ssl4mis"
    defaults = {
        "ema_decay": 0.99,
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "consistency_start": 1000 / 30000,
        "noise_std": 0.1,
        "noise_clip": 0.2,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()
        self.teacher = frozen_copy(self.net)

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        logits = self.net(images).logits
        sup = supervised_loss(logits[:n], batch.labeled_mask)
        noise = (torch.randn_like(batch.unlabeled_image) * self.hp["noise_std"]).clamp(
            -self.hp["noise_clip"], self.hp["noise_clip"]
        )
        with torch.no_grad():
            teacher_probs = self.teacher(batch.unlabeled_image + noise).logits.float().softmax(1)
        consistency = torch.mean((logits[n:].float().softmax(1) - teacher_probs) ** 2)
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * consistency, "sup": sup, "consistency": consistency}

    def after_step(self, step: int) -> None:
        ema_update(self.teacher, self.net, step, self.hp["ema_decay"])

    def inference_net(self) -> SegmentationNet:
        return self.net
