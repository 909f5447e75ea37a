"""What a config's schedule does to each method's unsupervised term, before any GPU hour.

A ramp laid over the whole run under a schedule that cuts the lr tenfold early gives a term
that reaches full weight only when the weights can no longer move. `unsupervised_schedule`
evaluates, step by step, the lr factor and the unsupervised weight a run of a method would use
(from the same `TrainConfig`, `MethodContext` and `Method.unsupervised_weight` the engine uses),
so the effective weight x lr can be summed and compared between methods and switches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mona.augment import Augmenter
from mona.config import augment_config, method_hparams, protocol, split_variant, train_config
from mona.method import MethodContext
from mona.registry import load_methods


@dataclass
class WeightSchedule:
    """Per step: lr factor (lr / its start) and unsupervised weight (None: no ramped term)."""

    method: str
    iterations: int
    ramp_iterations: int
    lr: float
    lr_factor: list[float]
    weight: list[float] | None

    def weighted_lr_sum(self) -> float | None:
        """sum_t lr(t) x w(t): how far the unsupervised term can move the weights."""
        if self.weight is None:
            return None
        return self.lr * sum(f * w for f, w in zip(self.lr_factor, self.weight, strict=True))

    def full_weight_step(self, tolerance: float = 1e-9) -> int | None:
        """The first step at which the weight reaches its final (largest) value."""
        if not self.weight:
            return None
        top = max(self.weight)
        return next(i for i, w in enumerate(self.weight) if w >= top * (1 - tolerance))


def unsupervised_schedule(
    config: dict,
    method: str,
    num_classes: int = 4,
    stage: str | None = None,
    ramp_over_run: bool = False,
    dataset: str | None = None,
) -> WeightSchedule:
    """The lr factor and unsupervised weight of every step of `method` under `config` (with
    `dataset`'s own train keys, if it has any).

    `ramp_over_run` lays ramps over the whole run whatever the schedule (how they were laid
    before ramps followed the lr), for comparison.
    """
    name = split_variant(method)[0]
    cls = load_methods(tuple(config.get("plugins", [])))[name]
    stage = stage or cls.stages[-1]
    train = train_config(config, method, dataset)
    iterations = train.iterations_for(stage)
    reference = protocol(config)["baselines"] == "reference"
    ramp = iterations if reference or ramp_over_run else train.ramp_iterations(iterations)
    ctx = MethodContext(
        num_classes=num_classes, in_channels=1, backbone=train.backbone,
        widths=[4, 4, 4, 4, 4] if train.backbone == "unet" else list(train.widths),
        upsample=train.upsample, max_iterations=iterations,
        augmenter=Augmenter(augment_config(config, method), torch.Generator()),
        stage=stage, hparams=method_hparams(config, method), ramp_iterations=ramp,
    )  # fmt: skip
    instance = cls(ctx)
    factors = [train.lr_factor(step, iterations) for step in range(iterations)]
    first = instance.unsupervised_weight(0)
    weights = None
    if first is not None:
        weights = [float(instance.unsupervised_weight(step)) for step in range(iterations)]
    return WeightSchedule(method, iterations, ramp, train.lr_for(stage, name), factors, weights)
