"""Cross-consistency training (Ouali et al. 2020), as in SSL4MIS
`train_cross_consistency_training_2D.py`.

One encoder feeds the main decoder and, through a perturbation each, one auxiliary decoder per
entry of `perturbations` (SSL4MIS `UNet_CCT`: feature noise, dropout, feature dropout). Every
decoder sees the whole batch: `sup` is averaged over all decoders on the labeled part (SSL4MIS
sums the 4 CE and 4 Dice terms and divides by 8), and the consistency is the mean, over the
auxiliary decoders, of the MSE between the main and the auxiliary softmax on the unlabeled part,
weighted by the ramp `w(t)` from the first step.

Choices where the reference is silent or tied to its network class:
- each auxiliary decoder is the decoder + head of a fresh backbone whose encoder is dropped
  (`SegmentationNet.drop_encoder`), so any backbone works;
- every encoder feature map is perturbed, with fresh randomness per map and per decoder;
- gradients flow through both softmaxes of the consistency, as in SSL4MIS (the CCT paper
  detaches the main prediction);
- the random draws use torch's generator (SSL4MIS draws the feature-dropout threshold with numpy)
  so that a step is a function of the engine's per-step seed.
The perturbation functions live here and are reused by URPC's pyramid heads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from mona.losses import supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register

Perturbation = Callable[[torch.Tensor], torch.Tensor]


def feature_noise(x: torch.Tensor, uniform_range: float = 0.3) -> torch.Tensor:
    """`x + x * n`, n ~ U(-r, r) drawn per (channel, row, col) and shared by the batch (SSL4MIS)."""
    noise = (torch.rand(x.shape[1:], device=x.device, dtype=x.dtype) * 2 - 1) * uniform_range
    return x + x * noise


def random_dropout(x: torch.Tensor, p: float = 0.3) -> torch.Tensor:
    """Element-wise dropout that stays on whatever the module mode (only used while training)."""
    return F.dropout(x, p, training=True)


def attention_dropout(x: torch.Tensor, low: float = 0.7, high: float = 0.9) -> torch.Tensor:
    """Zero the most attended region of each sample.

    Attention is the channel mean; a pixel is dropped where its attention reaches `t` times the
    sample's peak attention, with one `t ~ U(low, high)` for the batch (SSL4MIS FeatureDropout).
    """
    attention = x.mean(1, keepdim=True)
    peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
    fraction = torch.empty((), device=x.device).uniform_(low, high)
    return x * (attention < peak * fraction).to(x.dtype)


def make_perturbation(name: str, hp: dict) -> Perturbation:
    """The perturbation called `name`, with its strength taken from the method's hyperparameters."""
    if name == "feature_noise":
        return partial(feature_noise, uniform_range=hp["noise_range"])
    if name == "dropout":
        return partial(random_dropout, p=hp["dropout"])
    if name == "feature_dropout":
        low, high = hp["drop_threshold"]
        return partial(attention_dropout, low=low, high=high)
    if name == "none":
        return lambda x: x
    raise ValueError(
        f"unknown perturbation {name!r}: use feature_noise, dropout, feature_dropout or none"
    )


def cross_consistency(main_probs: torch.Tensor, aux_probs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over auxiliary decoders of the mean squared difference to the main softmax."""
    return torch.stack([torch.mean((main_probs - p) ** 2) for p in aux_probs]).mean()


@register("cct")
class CrossConsistencyTraining(Method):
    display_name = "CCT"
    reference_code = "ssl4mis"
    defaults = {
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "perturbations": ["feature_noise", "dropout", "feature_dropout"],
        "noise_range": 0.3,
        "dropout": 0.3,
        "drop_threshold": [0.7, 0.9],
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.net = ctx.build_backbone()
        if not self.hp["perturbations"]:
            raise ValueError("methods.cct.perturbations: name at least one auxiliary decoder")
        self.perturbations = [make_perturbation(n, self.hp) for n in self.hp["perturbations"]]
        self.aux_nets = nn.ModuleList()
        for _ in self.perturbations:
            self.aux_nets.append(ctx.build_backbone().drop_encoder())

    def aux_logits(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each auxiliary decoder's logits on its own perturbed copy of the encoder features."""
        return [
            aux.head(aux.decode([perturb(f) for f in features])[-1])
            for aux, perturb in zip(self.aux_nets, self.perturbations, strict=True)
        ]

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        n = batch.num_labeled
        images = torch.cat([batch.labeled_image, batch.unlabeled_image])
        features = self.net.encode(images)
        main = self.net.head(self.net.decode(features)[-1]).float()
        aux = [logits.float() for logits in self.aux_logits(features)]
        sup = torch.stack(
            [supervised_loss(logits[:n], batch.labeled_mask) for logits in [main, *aux]]
        ).mean()
        consistency = cross_consistency(
            main[n:].softmax(1), [logits[n:].softmax(1) for logits in aux]
        )
        weight = self.unsupervised_weight(step)
        return {"loss": sup + weight * consistency, "sup": sup, "consistency": consistency}

    def inference_net(self) -> SegmentationNet:
        return self.net
