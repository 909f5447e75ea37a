"""Deep adversarial network (Zhang et al. 2017) as in SSL4MIS `train_adversarial_network_2D.py`.

A small fully convolutional discriminator `D` sees an image and a softmax and says whether the
prediction came from a labeled slice. Each iteration alternates, as SSL4MIS does, in two engine
phases with their own optimizers:
1. segmenter step (`train_step`, SGD): `sup + w * BCE(D(u), labeled)` on the unlabeled part,
   `D` fixed (eval mode, detached parameters through `torch.func.functional_call`, so the
   gradient reaches the segmenter only);
2. discriminator step (`discriminator_step`, Adam): a fresh forward pass of the segmenter just
   updated, in eval mode and without gradient, then `BCE(D(l), labeled) + BCE(D(u), unlabeled)`
   on the whole batch.

Other choices:
- `D` follows SSL4MIS `FCDiscriminator` (4x4 stride-2 convolutions from the softmax and from the
  image, summed, then three more with LeakyReLU 0.2 and channel dropout 0.5), but ends with
  global average pooling and one logit (SSL4MIS: a fixed-size pooling and a 2-way linear layer
  whose cross-entropy equals this binary cross-entropy), so any image size works;
- `D` runs in eval mode (no dropout) for the adversarial term, as SSL4MIS's `DAN.eval()`, and
  in train mode for its own step;
- SSL4MIS gives `D` Adam at a constant lr 1e-4 (its poly schedule touches the segmenter's
  optimizer only). The engine rescales every group's `initial_lr`, which no `initial_lr` can undo,
  so `D`'s optimizer restores its own lr before each step (`ConstantLrAdam`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


class FCDiscriminator(nn.Module):
    """Image + softmax -> one logit per sample (high: from a labeled slice)."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 64):
        super().__init__()
        self.from_probs = nn.Conv2d(num_classes, width, 4, stride=2, padding=1)
        self.from_image = nn.Conv2d(in_channels, width, 4, stride=2, padding=1)
        layers: list[nn.Module] = []
        for i in range(3):
            layers.append(nn.Conv2d(width << i, width << (i + 1), 4, stride=2, padding=1))
            layers.append(nn.LeakyReLU(0.2))
            if i < 2:
                layers.append(nn.Dropout2d(0.5))
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width << 3, 1, kernel_size=1)

    def forward(self, probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.body(self.from_probs(probs) + self.from_image(image))
        return self.classifier(x.mean((2, 3), keepdim=True)).flatten()


class ConstantLrAdam(torch.optim.Adam):
    """Adam that steps at its own fixed lr whatever schedule the engine writes into `lr`."""

    def __init__(self, params, lr: float, betas: tuple[float, float]):
        super().__init__(params, lr=lr, betas=betas)
        for group in self.param_groups:
            group["constant_lr"] = lr

    def step(self, closure=None):
        for group in self.param_groups:
            group["lr"] = group["constant_lr"]
        return super().step(closure)


@register("dan")
class DeepAdversarialNetwork(Method):
    display_name = "DAN"
    reference_code = "ssl4mis"
    phases = (("train_step", (0,)), ("discriminator_step", (1,)))
    defaults = {
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "discriminator_lr": 1e-4,
        "discriminator_betas": [0.9, 0.99],
        "discriminator_width": 64,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()
        self.discriminator = FCDiscriminator(
            ctx.num_classes, ctx.in_channels, self.hp["discriminator_width"]
        )

    def configure_optimizers(
        self, lr: float, momentum: float, weight_decay: float
    ) -> list[torch.optim.Optimizer]:
        segmenter = self.make_optimizer(self.net.parameters(), lr, momentum, weight_decay)
        beta1, beta2 = self.hp["discriminator_betas"]
        discriminator = ConstantLrAdam(
            self.discriminator.parameters(), self.hp["discriminator_lr"], (beta1, beta2)
        )
        return [segmenter, discriminator]

    def fixed_discriminator(self, probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """`D` in eval mode with detached parameters: a gradient path to the segmenter only."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        frozen.update(dict(self.discriminator.named_buffers()))
        was_training = self.discriminator.training
        self.discriminator.eval()
        logits = functional_call(self.discriminator, frozen, (probs, image))
        self.discriminator.train(was_training)
        return logits

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Phase 1: the segmenter's loss, `D` fixed."""
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        logits = self.net(images).logits.float()
        sup = supervised_loss(logits[:n], batch.labeled_mask)
        fooled = self.fixed_discriminator(logits[n:].softmax(1), images[n:]).float()
        adversarial = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * adversarial, "sup": sup, "adversarial": adversarial}

    def discriminator_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Phase 2: `D` tells labeled from unlabeled predictions of the updated segmenter."""
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            probs = self.net(images).logits.float().softmax(1)
        self.net.train(was_training)
        judged = self.discriminator(probs, images).float()
        is_labeled = (torch.arange(len(judged), device=judged.device) < n).to(judged.dtype)
        return {"loss": F.binary_cross_entropy_with_logits(judged, is_labeled)}

    def inference_net(self) -> SegmentationNet:
        return self.net
