import math

import pytest
import torch
import torch.nn.functional as F

from mona.losses import consistency_weight, ema_update, soft_dice_loss, supervised_loss


def test_soft_dice_loss_matches_a_hand_computed_value():
    # two pixels, two classes; probabilities and targets chosen so each class is easy by hand
    probs = torch.tensor([[0.8, 0.4], [0.2, 0.6]]).reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # class 0: I = 0.8, sum p^2 = 0.64 + 0.16 = 0.8, sum t = 1 -> dice = 1.6 / 1.8
    # class 1: I = 0.6, sum p^2 = 0.04 + 0.36 = 0.4, sum t = 1 -> dice = 1.2 / 1.4
    expected = 1 - (1.6 / 1.8 + 1.2 / 1.4) / 2
    assert soft_dice_loss(probs, target, smooth=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_supervised_loss_is_half_ce_plus_dice():
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    expected = 0.5 * (F.cross_entropy(logits, target) + soft_dice_loss(logits.softmax(1), target))
    assert supervised_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_consistency_ramp_follows_the_ssl4mis_sigmoid():
    assert consistency_weight(0, 1000, 0.1, 1.0) == pytest.approx(0.1 * math.exp(-5))
    assert consistency_weight(500, 1000, 0.1, 1.0) == pytest.approx(0.1 * math.exp(-5 * 0.25))
    assert consistency_weight(5000, 1000, 0.1, 1.0) == pytest.approx(0.1)
    # SSL4MIS: sigmoid_rampup(iter // 150, 200) over its 30 000 iterations, in stairs
    stair = [consistency_weight(i, 30000, 0.1, 1.0) for i in (0, 149, 150, 299, 300)]
    assert stair[0] == stair[1] == pytest.approx(0.1 * math.exp(-5))
    assert stair[2] == stair[3] == pytest.approx(0.1 * math.exp(-5 * (199 / 200) ** 2))
    assert stair[4] == pytest.approx(0.1 * math.exp(-5 * (198 / 200) ** 2))


def test_ema_update_uses_the_warm_up_alpha():
    student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = teacher.weight.detach().clone()
    ema_update(teacher, student, step=1, decay=0.99)  # alpha = min(1 - 1/2, 0.99) = 0.5
    assert torch.allclose(teacher.weight, 0.5 * before + 0.5 * student.weight)
    before = teacher.weight.detach().clone()
    ema_update(teacher, student, step=10_000, decay=0.99)
    assert torch.allclose(teacher.weight, 0.99 * before + 0.01 * student.weight)
    before = teacher.weight.detach().clone()
    ema_update(teacher, student, step=1, decay=0.99, warmup=False)  # MONA's constant 0.99
    assert torch.allclose(teacher.weight, 0.99 * before + 0.01 * student.weight)
