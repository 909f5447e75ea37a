"""Losses and schedules shared by methods (SSL4MIS conventions)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1e-5,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 - Dice per class on softmax probabilities, averaged over all classes (background too).

    Uses the squared-sum denominator of the SSL4MIS DiceLoss so numbers compare with it, pooled
    over the batch. `keep` (B, H, W), 1 for pixels to count, drops the others from every sum
    (the `ignore` of that DiceLoss: a hard selection, not a weighting).
    """
    one_hot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    if keep is not None:
        selected = keep.to(probs.dtype).unsqueeze(1)
        probs, one_hot = probs * selected, one_hot * selected
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    denominator = (probs * probs).sum(dims) + one_hot.sum(dims)
    return (1 - (2 * intersection + smooth) / (denominator + smooth)).mean()


def supervised_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: float = 0.5
) -> torch.Tensor:
    """`sup = weight * (CE + Dice)`: 0.5 in SSL4MIS's scripts, 1 in the official MONA code."""
    logits = logits.float()
    return weight * (
        F.cross_entropy(logits, target.long()) + soft_dice_loss(logits.softmax(1), target)
    )


def sigmoid_rampup(progress: float) -> float:
    """exp(-5 (1 - p)^2) for p = min(progress, 1): 0.0067 at the start, 1 at the end."""
    p = min(max(progress, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - p) ** 2)


# SSL4MIS advances its ramp once every 150 iterations, over 200 such steps.
RAMP_STEPS = 200


def consistency_weight(step: int, max_iterations: int, weight: float, rampup: float) -> float:
    """SSL4MIS weight `w(t)`, ramped over the first `rampup` fraction of training.

    SSL4MIS evaluates the ramp at `iter // 150` of 200 (30 000 iterations, its whole schedule:
    rampup = 1.0), so the weight rises in 200 stairs; the stairs here are `rampup *
    max_iterations / 200` iterations long, which keeps that shape under shorter schedules.
    """
    length = max(rampup * max_iterations, 1.0)
    stair = math.floor(step * RAMP_STEPS / length)
    return weight * sigmoid_rampup(stair / RAMP_STEPS)


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, step: int, decay: float, warmup: bool = True
) -> None:
    """Teacher <- alpha teacher + (1 - alpha) student.

    alpha = min(1 - 1/(step+1), decay) with `warmup` (SSL4MIS's mean teacher: the true average
    while it is the better estimate), else the constant `decay` (MONA's paper and code, MoCo,
    ISD). Parameters only, as in the reference mean-teacher code: the teacher runs in train
    mode and keeps its own BatchNorm statistics.
    """
    alpha = min(1.0 - 1.0 / (step + 1), decay) if warmup else decay
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(teacher_params, alpha)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - alpha)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy that never receives gradients: an EMA teacher, updated by `ema_update`."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
