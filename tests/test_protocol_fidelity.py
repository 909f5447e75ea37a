"""Paper/reference switches: ramps that follow the lr, `protocol.baselines`, SSL4MIS's weak
view, MONA's unsupervised CE and supervised weight, ICT's odd batches, CPS's init."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from mona.audit import unsupervised_schedule
from mona.augment import AugmentConfig, Augmenter
from mona.config import step_settings, train_config
from mona.engine import TrainConfig
from mona.losses import supervised_loss
from mona.method import MethodContext
from mona.methods.anatomy import unsupervised_ce, weighted_unsupervised_ce
from mona.registry import load_methods

ROOT = Path(__file__).resolve().parents[1]
RAMPED = ("em", "cct", "dan", "urpc", "dct", "ict", "mt", "uamt", "cps")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


# -------------------------------------------------------------------------- ramps and lr


def test_ramp_span_ends_at_the_last_step_with_the_lr_within_10x_of_its_start():
    step = TrainConfig(schedule="step", step_every=2500, step_gamma=0.1)
    assert step.ramp_iterations(30000) == 4999
    assert step.lr_factor(4999, 30000) == pytest.approx(0.1)
    assert step.lr_factor(5000, 30000) < 0.1
    poly = TrainConfig(schedule="poly", poly_power=0.9)
    last = poly.ramp_iterations(30000)
    assert last == math.floor(30000 * (1 - 0.1 ** (1 / 0.9)))  # 27 678: 92 % of the run
    assert poly.lr_factor(last, 30000) >= 0.1 > poly.lr_factor(last + 1, 30000)
    assert TrainConfig(schedule="step", step_gamma=0.5, step_every=10).ramp_iterations(1000) == 39
    assert TrainConfig(schedule="step", step_every=5000).ramp_iterations(3000) == 2999


@pytest.mark.parametrize("config_name", ["paper.yaml", "config.yaml"])
@pytest.mark.parametrize("method", RAMPED)
def test_each_ramped_baseline_reaches_full_weight_while_the_lr_is_at_least_10_percent(
    config_name, method
):
    config = load(config_name)
    schedule = unsupervised_schedule(config, method)
    full = schedule.full_weight_step()
    assert schedule.weight[full] == pytest.approx(0.1)  # SSL4MIS's consistency 0.1
    assert schedule.lr_factor[full] >= 0.1 - 1e-12, (method, full)
    before = unsupervised_schedule(config, method, ramp_over_run=True)
    if config["train"]["schedule"] == "step":  # the old layout: full weight at 1e-5 lr
        assert before.lr_factor[before.full_weight_step()] < 1e-3
        assert schedule.weighted_lr_sum() > 10 * before.weighted_lr_sum()


def test_reference_baselines_train_as_ssl4mis_with_absolute_ramps():
    config = load("paper.yaml")
    config["protocol"]["baselines"] = "reference"
    train = train_config(config, "mt")
    assert (train.schedule, train.iterations, train.batch_labeled, train.batch_unlabeled) == (
        "poly", 30000, 12, 12,
    )  # fmt: skip
    assert train_config(config, "mona").schedule == "step"  # MONA keeps the config's schedule
    mt = unsupervised_schedule(config, "mt")
    assert mt.ramp_iterations == 30000
    assert mt.weight[999] == 0.0 and mt.weight[1000] > 0  # SSL4MIS: off below iteration 1000
    # SSL4MIS: 0.1 * sigmoid_rampup(iter // 150, 200)
    for it in (1000, 1149, 1150, 15000, 29999):
        expected = 0.1 * math.exp(-5 * (1 - (it // 150) / 200) ** 2)
        assert mt.weight[it] == pytest.approx(expected)
    shared = load("paper.yaml")
    reference_mt = step_settings(config, "train", "acdc", "mt")
    assert reference_mt != step_settings(shared, "train", "acdc", "mt")
    assert step_settings(config, "train", "acdc", "mona")["train"] == step_settings(
        shared, "train", "acdc", "mona"
    )["train"]


# ------------------------------------------------------------------------ SSL4MIS's weak


def _dihedral(image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    rotations = [torch.rot90(image, k, dims=(-2, -1)) for k in range(4)]
    reflections = [torch.flip(r, dims=(-1,)) for r in rotations]
    return rotations, reflections


def test_ssl4mis_weak_view_is_a_reflection_half_the_time_and_never_interpolates():
    augmenter = Augmenter(AugmentConfig(weak="ssl4mis"), torch.Generator().manual_seed(0))
    base = torch.arange(64.0).view(1, 1, 8, 8) + 1
    images = base.repeat(400, 1, 1, 1)
    out, mask = augmenter.weak(images, images[:, 0].long())
    rotations, reflections = _dihedral(base[0])
    is_reflection = torch.stack([(out == r).flatten(1).all(1) for r in reflections]).any(0)
    is_turn = torch.stack([(out == r).flatten(1).all(1) for r in rotations[1:]]).any(0)
    assert 0.42 < is_reflection.float().mean() < 0.58  # rot90 then a flip: always a reflection
    assert not is_turn.any()  # a pure quarter turn is never produced
    assert set(out.unique().tolist()) <= set(base.unique().tolist()) | {0.0}  # nearest, 0 fill
    assert torch.equal(mask.float(), out[:, 0])  # the mask moves with the image
    unchanged = (out == base).flatten(1).all(1)
    assert 0.2 < unchanged.float().mean() < 0.36  # 1/4 untouched (+ the 0-degree rotations)


# ------------------------------------------------------------------------- MONA switches


def test_official_unsupervised_ce_weighs_every_pixel_by_the_images_confident_fraction():
    # one image of 2 x 2 pixels, two classes; one pixel of four passes the threshold
    logits = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]]])
    pseudo = torch.tensor([[[0, 1], [1, 0]]])
    confidence = torch.tensor([[[0.99, 0.6], [0.5, 0.7]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits, pseudo, reduction="none")[0]
    official = weighted_unsupervised_ce(logits, pseudo, confidence, valid, 0.97)
    assert official.item() == pytest.approx(0.25 * ce.mean().item(), rel=1e-6)
    paper = unsupervised_ce(logits, pseudo, confidence, valid, 0.97)
    assert paper.item() == pytest.approx(ce[0, 0].item() / 4, rel=1e-6)


def test_supervised_weight_scales_ce_plus_dice():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    assert supervised_loss(logits, target, 1.0).item() == pytest.approx(
        2 * supervised_loss(logits, target).item()
    )
    methods = load_methods()
    assert methods["mona"].defaults["sup_weight"] == 1.0  # the official code's CE + Dice
    assert methods["mona"].defaults["unsup_mode"] == "paper"


# --------------------------------------------------------------------------- ICT and CPS


def _ctx(**hparams) -> MethodContext:
    return MethodContext(
        num_classes=2, in_channels=1, backbone="unet", widths=[2, 2, 2, 2, 2],
        upsample="bilinear", max_iterations=10,
        augmenter=Augmenter(AugmentConfig(), torch.Generator()), hparams=hparams,
    )  # fmt: skip


def test_ict_pairs_every_unlabeled_view_of_an_odd_batch():
    from baselines.ict import mixing_pairs

    images = torch.arange(3.0).view(3, 1, 1, 1)
    first, second = mixing_pairs(images)
    assert first.flatten().tolist() == [0.0, 1.0] and second.flatten().tolist() == [2.0, 0.0]
    first, second = mixing_pairs(torch.arange(4.0).view(4, 1, 1, 1))
    assert first.flatten().tolist() == [0.0, 1.0] and second.flatten().tolist() == [2.0, 3.0]


def test_cps_default_init_is_the_frameworks_and_kaiming_xavier_is_an_option():
    cps = load_methods()["cps"]
    torch.manual_seed(0)
    default = cps(_ctx())
    torch.manual_seed(0)
    reference = load_methods()["unet_l"](_ctx())
    first_conv = next(m for m in default.net.modules() if isinstance(m, nn.Conv2d))
    ref_conv = next(m for m in reference.net.modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(first_conv.weight, ref_conv.weight)  # untouched default init
    second = next(m for m in default.net_2.modules() if isinstance(m, nn.Conv2d))
    assert not torch.equal(first_conv.weight, second.weight)
    torch.manual_seed(0)
    old = cps(_ctx(init="kaiming_xavier"))
    old_conv = next(m for m in old.net.modules() if isinstance(m, nn.Conv2d))
    assert not torch.equal(old_conv.weight, ref_conv.weight)
    with pytest.raises(ValueError, match="init"):
        cps(_ctx(init="he"))
