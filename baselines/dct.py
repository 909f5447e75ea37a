"""Deep co-training, the SSL4MIS single-network variant (`train_deep_co_training_2D.py`):
rotation consistency of one network.

The network sees labeled + unlabeled weak views in one batch (`sup` on the labeled part), then,
in a second forward, the unlabeled views rotated by a random multiple of 90 degrees r (one r per
step, r = 0 included, as in the reference). The two predictions must agree once rotated:
`0.5 [MSE(sg p(r x), r p(x)) + MSE(p(r x), sg r p(x))]`, each branch learning towards the other
half-way. Weight: the ramp `w(t)` over the ramp span (`ctx.ramp_iterations`), no delayed start.
"""

from __future__ import annotations

import torch

from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register

SPATIAL_DIMS = (2, 3)


def rotation_consistency(
    probs: torch.Tensor, rotated_input_probs: torch.Tensor, quarter_turns: int
) -> torch.Tensor:
    """0.5 [MSE(sg p(r x), r p(x)) + MSE(p(r x), sg r p(x))] for r = `quarter_turns` x 90 deg.

    `probs` = p(x), `rotated_input_probs` = p(r x); zero exactly when the prediction commutes
    with the rotation.
    """
    rotated = torch.rot90(probs.float(), quarter_turns, SPATIAL_DIMS)
    other = rotated_input_probs.float()
    return 0.5 * (
        torch.mean((other.detach() - rotated) ** 2) + torch.mean((other - rotated.detach()) ** 2)
    )


@register("dct")
class DeepCoTraining(Method):
    display_name = "DCT"
    reference_code = "ssl4mis"
    defaults = {"consistency": 0.1, "consistency_rampup": 1.0}

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()

    def draw_rotation(self) -> int:
        """Number of quarter turns, uniform in {0, 1, 2, 3} (global torch RNG, CPU)."""
        return int(torch.randint(4, ()))

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        logits = self.net(torch.cat([batch.labeled_image, batch.unlabeled_image])).logits.float()
        sup = supervised_loss(logits[:n], batch.labeled_mask)
        turns = self.draw_rotation()
        rotated_input = torch.rot90(batch.unlabeled_image, turns, SPATIAL_DIMS)
        rotated_logits = self.net(rotated_input).logits.float()
        consistency = rotation_consistency(
            logits[n:].softmax(1), rotated_logits.softmax(1), turns
        )
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * consistency, "sup": sup, "consistency": consistency}

    def inference_net(self) -> SegmentationNet:
        return self.net
