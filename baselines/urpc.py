"""Uncertainty-rectified pyramid consistency (Luo et al. 2021) as in SSL4MIS
`train_uncertainty_rectified_pyramid_consistency_2D.py`.

Deep supervision at 4 scales: the backbone's own head on the last decoder map and a 1x1 conv
head on each of the 3 decoder maps before it, every prediction upsampled to the input size.
`sup` is averaged over the scales on the labeled part. On the unlabeled part, with `m` the mean of
the scales' softmaxes and `D_s = KL(m || p_s)` per pixel, scale `s` adds
`mean(MSE(m, p_s) exp(-D_s)) / mean(exp(-D_s)) + mean(D_s)`; the consistency is the mean over
scales, weighted by the ramp `w(t)` from the first step.

Choices where the reference is silent or tied to its network class:
- the finest scale is the backbone's head, so the test-time network is exactly what is trained
  (SSL4MIS's finest output is its main `out_conv` too); the coarser heads are 1x1 convolutions
  (SSL4MIS uses 3x3) and their logits are upsampled with nearest neighbour (SSL4MIS's
  `F.interpolate` default);
- while training, the coarser heads' inputs are perturbed as in SSL4MIS `Decoder_URPC`, coarse to
  fine: dropout 0.5, feature dropout, feature noise (`head_perturbations`, "none" to switch off);
- `m` is not detached and the 1e-8 guard of the normalisation is kept, as in SSL4MIS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.cct import make_perturbation
from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register


def scale_divergences(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per scale, `D_s = KL(m || p_s)` per pixel (B, 1, H, W); `m` is the scales' mean softmax."""
    probs = [x.softmax(1) for x in logits]
    mean = torch.stack(probs).mean(0)
    mean_entropy_term = torch.xlogy(mean, mean)
    return [
        (mean_entropy_term - mean * x.log_softmax(1)).sum(1, keepdim=True) for x in logits
    ]


def rectified_pyramid_consistency(logits: list[torch.Tensor]) -> torch.Tensor:
    """URPC consistency of METHODS.md, averaged over the scales (each weighted by its own `D_s`)."""
    probs = [x.softmax(1) for x in logits]
    mean = torch.stack(probs).mean(0)
    terms = []
    for p, divergence in zip(probs, scale_divergences(logits), strict=True):
        weight = torch.exp(-divergence)
        rectified = torch.mean((mean - p) ** 2 * weight) / (torch.mean(weight) + 1e-8)
        terms.append(rectified + torch.mean(divergence))
    return torch.stack(terms).mean()


@register("urpc")
class UncertaintyRectifiedPyramidConsistency(Method):
    display_name = "URPC"
    reference_code = "ssl4mis"
    defaults = {
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "head_perturbations": ["dropout", "feature_dropout", "feature_noise"],
        "dropout": 0.5,
        "noise_range": 0.3,
        "drop_threshold": [0.7, 0.9],
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()
        names = self.hp["head_perturbations"]
        channels = self.net.decoder_channels
        if len(names) >= len(channels):
            raise ValueError(
                f"methods.urpc.head_perturbations: {len(names)} extra scales but the backbone "
                f"has only {len(channels)} decoder maps"
            )
        self.perturbations = [make_perturbation(name, self.hp) for name in names]
        self.scale_heads = nn.ModuleList(
            nn.Conv2d(c, ctx.num_classes, kernel_size=1)
            for c in channels[len(channels) - 1 - len(names) : -1]
        )

    def pyramid_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every scale at the input size, coarsest first, the backbone's head last."""
        maps = self.net.decode(self.net.encode(images))
        coarse = maps[len(maps) - 1 - len(self.scale_heads) : -1]
        size = images.shape[-2:]
        outputs = []
        for head, perturb, x in zip(self.scale_heads, self.perturbations, coarse, strict=True):
            x = perturb(x) if self.training else x
            outputs.append(F.interpolate(head(x), size=size, mode="nearest"))
        outputs.append(self.net.head(maps[-1]))
        return outputs

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        logits = [x.float() for x in self.pyramid_logits(images)]
        sup = torch.stack([supervised_loss(x[:n], batch.labeled_mask) for x in logits]).mean()
        consistency = rectified_pyramid_consistency([x[n:] for x in logits])
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * consistency, "sup": sup, "consistency": consistency}

    def inference_net(self) -> SegmentationNet:
        return self.net
