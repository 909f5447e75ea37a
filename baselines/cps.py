"""Cross pseudo supervision (Chen et al. 2021) as in SSL4MIS `train_cross_pseudo_supervision_2D.py`.

Two backbones of the same architecture with different initialisations (SSL4MIS: Kaiming normal
for the first, Xavier normal for the second, on every 2D convolution's weight, BatchNorm set to
weight 1 and bias 0) and one SGD optimizer each. Both see the whole batch; each network is
trained with `sup + w * CE(own logits_u, argmax of the other's softmax_u)`, the pseudo-labels
carrying no gradient, and the method's loss is the sum of both.

Choices where the reference is silent or differs:
- network 1 (the Kaiming one) is the test-time network; SSL4MIS validates both and keeps the
  best of each, with no rule for which one is reported;
- the engine's one lr schedule drives both optimizers (SSL4MIS's 2D script applies both a poly
  and a step-every-2500 decay; the config's `train.schedule` chooses one);
- the ramp `w(t)` is the SSL4MIS one (0.1, over the whole run), applied from the first step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mona.losses import consistency_weight, supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


def initialise(net: nn.Module, conv_init: Callable[[torch.Tensor], object]) -> nn.Module:
    """Re-initialise every Conv2d weight with `conv_init`; BatchNorm weight 1, bias 0."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                conv_init(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
    return net


def cross_pseudo_losses(
    logits_1: torch.Tensor, logits_2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(logits_1, argmax logits_2), CE(logits_2, argmax logits_1)); argmaxes carry no grad."""
    pseudo_1 = logits_1.detach().argmax(1)
    pseudo_2 = logits_2.detach().argmax(1)
    return F.cross_entropy(logits_1, pseudo_2), F.cross_entropy(logits_2, pseudo_1)


@register("cps")
class CrossPseudoSupervision(Method):
    display_name = "CPS"
    defaults = {"consistency": 0.1, "consistency_rampup": 1.0}

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = initialise(ctx.build_backbone(), nn.init.kaiming_normal_)
        self.net_2 = initialise(ctx.build_backbone(), nn.init.xavier_normal_)

    def configure_optimizers(
        self, lr: float, momentum: float, weight_decay: float
    ) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
            for net in (self.net, self.net_2)
        ]

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        logits_1 = self.net(images).logits.float()
        logits_2 = self.net_2(images).logits.float()
        sup_1 = supervised_loss(logits_1[:n], batch.labeled_mask)
        sup_2 = supervised_loss(logits_2[:n], batch.labeled_mask)
        pseudo_1, pseudo_2 = cross_pseudo_losses(logits_1[n:], logits_2[n:])
        weight = consistency_weight(
            step, self.ctx.max_iterations, self.hp["consistency"], self.hp["consistency_rampup"]
        )
        return {
            "loss": sup_1 + weight * pseudo_1 + sup_2 + weight * pseudo_2,
            "sup": sup_1,
            "sup_2": sup_2,
            "pseudo": pseudo_1,
            "pseudo_2": pseudo_2,
        }

    def inference_net(self) -> SegmentationNet:
        return self.net
