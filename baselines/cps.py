"""Cross pseudo supervision (Chen et al. 2021) as in SSL4MIS `train_cross_pseudo_supervision_2D.py`.

Two backbones of the same architecture with different initialisations and one SGD optimizer
each. Both see the whole batch; each network is trained with
`sup + w * CE(own logits_u, argmax of the other's softmax_u)`, the pseudo-labels carrying no
gradient, and the method's loss is the sum of both.

Choices where the reference is silent or differs:
- `init: default` (as SSL4MIS's current script, which defines Kaiming and Xavier initialisers
  but builds both networks with the framework's default init, two different random draws);
  `init: kaiming_xavier` is an earlier revision's Kaiming-normal first and Xavier-normal second
  network (every 2D convolution's weight; BatchNorm weight 1, bias 0);
- network 1 is the test-time network; SSL4MIS validates both and keeps the best of each, with
  no rule for which one is reported;
- SSL4MIS's lr is poly: its script also sets lr = 0.01 x 0.1^(t / 2500) at every 2500th
  iteration, but the poly update overwrites it at the next one, so that decay lasts one step;
- the ramp `w(t)` is the SSL4MIS one (0.1, laid over `ctx.ramp_iterations`), applied from the
  first step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register

INITS = ("default", "kaiming_xavier")


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
    reference_code = "ssl4mis"
    defaults = {"consistency": 0.1, "consistency_rampup": 1.0, "init": "default"}

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        if self.hp["init"] not in INITS:
            raise ValueError(f"cps init must be one of {INITS}, not {self.hp['init']!r}")
        self.net = ctx.build_backbone()
        self.net_2 = ctx.build_backbone()
        if self.hp["init"] == "kaiming_xavier":
            initialise(self.net, nn.init.kaiming_normal_)
            initialise(self.net_2, nn.init.xavier_normal_)

    def configure_optimizers(
        self, lr: float, momentum: float, weight_decay: float
    ) -> list[torch.optim.Optimizer]:
        return [
            self.make_optimizer(net.parameters(), lr, momentum, weight_decay)
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
        weight = self.unsupervised_weight(step)
        return {
            "loss": sup_1 + weight * pseudo_1 + sup_2 + weight * pseudo_2,
            "sup": sup_1,
            "sup_2": sup_2,
            "pseudo": pseudo_1,
            "pseudo_2": pseudo_2,
        }

    def inference_net(self) -> SegmentationNet:
        return self.net
