"""The small interface every method implements; the engine does everything else.

A method builds its networks in `__init__`, computes its losses in `train_step` and names the
network used at test time. It never writes files, loops, steps optimizers or moves data: that is
the engine's job, so every method is trained and measured the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mona.augment import Augmenter
from mona.losses import consistency_weight
from mona.models import SegmentationNet, build_backbone
from mona.optim import SGD


@dataclass
class Batch:
    """One training step's data, already on the training device.

    `*_image` are weak views (the default student input); `*_raw_*` the same slices without
    augmentation, for methods that build their own views with `ctx.augmenter`. Positions are
    (slice index + 1) / depth within the slice's volume; `*_volume` index the volumes.
    """

    labeled_image: torch.Tensor
    labeled_mask: torch.Tensor
    unlabeled_image: torch.Tensor
    labeled_raw_image: torch.Tensor
    labeled_raw_mask: torch.Tensor
    unlabeled_raw_image: torch.Tensor
    labeled_position: torch.Tensor
    unlabeled_position: torch.Tensor
    labeled_volume: torch.Tensor
    unlabeled_volume: torch.Tensor

    @property
    def num_labeled(self) -> int:
        return self.labeled_image.shape[0]


@dataclass
class MethodContext:
    """What a method may know about the run it is part of."""

    num_classes: int
    in_channels: int
    backbone: str
    widths: list[int]
    upsample: str
    max_iterations: int
    augmenter: Augmenter
    stage: str = "train"
    hparams: dict[str, Any] = field(default_factory=dict)
    # Steps over which ramps and delayed starts are laid out (None: the whole run). The engine
    # sets the steps during which the lr stays within 10x of its start, or the whole run where
    # a baseline follows its reference code's absolute ramps (`protocol.baselines`).
    ramp_iterations: int | None = None
    optimizer: str = "sgd"  # `train.optimizer`: sgd (the paper's) | adamw

    def __post_init__(self) -> None:
        if self.ramp_iterations is None:
            self.ramp_iterations = self.max_iterations

    def build_backbone(self) -> SegmentationNet:
        return build_backbone(
            self.backbone, self.in_channels, self.num_classes, self.widths, self.upsample
        )


class Method(nn.Module, ABC):
    """Base class of every registered method.

    Class attributes describe the method to the DAG: `stages` it trains in order, whether it
    learns from every training patient (`labeled_pool = "all"`, the same run for every labeled
    ratio) and whether it reads unlabeled data. `defaults` are its hyperparameters; the config's
    `methods.<name>` section overrides them and may not add unknown keys. `phases` splits an
    iteration into steps with their own optimizers (most methods: one).
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ("train",)
    labeled_pool: ClassVar[str] = "subset"
    uses_unlabeled: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    # The reference code whose training `protocol.baselines: reference` reproduces
    # (`mona.config.REFERENCE_PROTOCOLS`); None: always the config's schedule.
    reference_code: ClassVar[str | None] = None
    # Steps of one iteration, in order: (method to call, indices of the optimizers it steps;
    # None = every optimizer). Each gets its own backward and optimizer step, so a later phase
    # sees the weights an earlier one just updated (DAN: segmenter, then discriminator).
    phases: ClassVar[tuple[tuple[str, tuple[int, ...] | None], ...]] = (("train_step", None),)

    def __init__(self, ctx: MethodContext):
        super().__init__()
        self.ctx = ctx
        self.hp = {**self.defaults, **ctx.hparams}

    @abstractmethod
    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Losses of one step; the engine back-propagates `loss` and logs every entry."""

    @abstractmethod
    def inference_net(self) -> SegmentationNet:
        """The network evaluated at test time (and carried into the next stage)."""

    def unsupervised_weight(self, step: int) -> float | None:
        """Weight of the unlabeled term at `step`; None for a method without a ramped term.

        Methods with the hyperparameters `consistency` and `consistency_rampup` (and optionally
        `consistency_start`, a fraction) get SSL4MIS's ramp laid over `ctx.ramp_iterations`.
        """
        if "consistency_rampup" not in self.hp:
            return None
        length = self.ctx.ramp_iterations
        if step < float(self.hp.get("consistency_start", 0.0)) * length:
            return 0.0
        return consistency_weight(
            step, length, float(self.hp["consistency"]), float(self.hp["consistency_rampup"])
        )

    @classmethod
    def reads_unlabeled(cls, stage: str) -> bool:
        """Whether `stage` reads unlabeled slices; if not, the whole batch is labeled."""
        return cls.uses_unlabeled

    def after_step(self, step: int) -> None:
        """Called after the optimizer step (EMA teachers, memory banks)."""

    def configure_optimizers(
        self, lr: float, momentum: float, weight_decay: float
    ) -> list[SGD | torch.optim.Optimizer]:
        """One optimizer over every trainable parameter; override for several."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [self.make_optimizer(params, lr, momentum, weight_decay)]

    def make_optimizer(
        self, params: Any, lr: float, momentum: float, weight_decay: float
    ) -> SGD | torch.optim.Optimizer:
        """The config's optimizer (`train.optimizer`) over `params`: SGD with momentum (the
        paper's; `mona.optim.SGD`) or AdamW (betas 0.9 / 0.999, `momentum` unused)."""
        if self.ctx.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def start_from(self, previous_stage: dict[str, torch.Tensor]) -> None:
        """Load the previous stage's method state (default: the whole state, strictly)."""
        self.load_state_dict(previous_stage)
