"""UniMatch and BCP: each trains through the engine and moves its loss, and each characteristic
operation computes what the official code computes on a case small enough to check by hand."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from baselines.bcp import copy_paste_mask, largest_components, mix, region_losses
from baselines.unimatch import (
    confident_loss,
    cutmix_boxes,
    derangement,
    paste,
    perturbed_logits,
)
from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import load_torch, read_json
from mona.losses import soft_dice_loss
from mona.models import build_backbone
from tests.test_baselines_consistency import SMALL, train

METHODS = ["unimatch", "bcp"]


def train_stages(processed, root, method: str, iterations: int = 2) -> Trainer:
    """Every stage of `method` in order, each starting from the previous one's model.pt."""
    from mona.registry import get_method

    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    previous = None
    for stage in get_method(method).stages:
        spec = RunSpec(
            dataset="acdc", method=method, ratio="10", seed=0, stage=stage,
            processed_dir=processed, run_dir=root / stage, split=split,
            labeled=labeled_subset(split, manifest, "10", 0), previous_stage=previous,
        )  # fmt: skip
        config = TrainConfig(iterations=iterations, batch_labeled=2, batch_unlabeled=2, **SMALL)
        trainer = Trainer(spec, config)
        trainer.run()
        previous = root / stage / "model.pt"
    return trainer


@pytest.fixture(scope="module")
def trained(processed_acdc, tmp_path_factory):
    return {m: train_stages(processed_acdc, tmp_path_factory.mktemp(m), m) for m in METHODS}


@pytest.mark.parametrize("name", METHODS)
def test_trains_with_finite_losses_and_a_gradient_for_every_weight(trained, name):
    trainer = trained[name]
    log = [
        json.loads(line) for line in (trainer.spec.run_dir / "log.jsonl").read_text().splitlines()
    ]
    assert [entry["step"] for entry in log] == [1, 2]
    assert all(math.isfinite(value) for entry in log for value in entry.values())
    method = trainer.method
    method.zero_grad(set_to_none=True)
    method.train_step(trainer.make_batch(2), 2)["loss"].backward()
    missing = [
        n for n, p in method.inference_net().named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all()
    ]  # fmt: skip
    assert not missing, f"no finite gradient for {missing}"


# UniMatch -----------------------------------------------------------------------------------


def test_derangement_gives_every_image_another_partner():
    torch.manual_seed(0)
    for count in (2, 3, 7):
        for _ in range(20):
            partner = derangement(count, torch.device("cpu"))
            assert sorted(partner.tolist()) == list(range(count))
            assert (partner != torch.arange(count)).all()
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, torch.device("cpu"))


def test_cutmix_boxes_are_one_fitting_rectangle_of_the_drawn_area_or_nothing():
    torch.manual_seed(0)
    boxes = cutmix_boxes(400, 32, 32, 0.5, (0.02, 0.4), (0.3, 1 / 0.3), torch.device("cpu"))
    area = boxes.sum((1, 2)) / (32 * 32)
    drawn = area > 0
    assert 0.4 < drawn.float().mean() < 0.6  # p = 0.5
    # int() truncation of each side loses at most one row and one column of the drawn area
    assert area[drawn].max() <= 0.4 and area[drawn].min() >= 0.005
    for box in boxes[drawn][:50]:
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        height, width = len(rows), len(cols)
        assert box.sum() == height * width  # one solid rectangle
        assert rows.max() - rows.min() + 1 == height and cols.max() - cols.min() + 1 == width
    never = cutmix_boxes(10, 8, 8, 0.0, (0.02, 0.4), (0.3, 3.3), torch.device("cpu"))
    assert never.sum() == 0


def test_paste_takes_the_partner_inside_the_box_for_images_and_labels():
    box = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    own, other = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    assert paste(other, own, box).tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]
    own_label, other_label = torch.full((1, 2, 2), 2), torch.full((1, 2, 2), 3)
    assert paste(other_label, own_label, box).tolist() == [[[2, 3], [2, 2]]]


class _Recorder:
    def __init__(self, net):
        self.net, self.features = net, None
        self.decode = net.decode

    def __call__(self, features):
        self.features = features
        return self.decode(features)


@pytest.mark.parametrize("levels", ["all", "bottleneck"])
def test_feature_perturbation_drops_whole_channels_of_the_chosen_encoder_maps(levels):
    torch.manual_seed(0)
    net = build_backbone("unet", 1, 4, [4, 8, 16, 32, 64]).eval()
    recorder = _Recorder(net)
    net.decode = recorder
    images = torch.rand(3, 1, 32, 32)
    clean, noisy = perturbed_logits(net, images, levels, p=0.5)
    features = recorder.features
    torch.testing.assert_close(clean, net(images).logits)  # eval mode: the clean half is net(x)
    last = len(features) - 1
    for level, stacked in enumerate(features):
        kept, dropped = stacked.chunk(2)
        if levels == "bottleneck" and level != last:
            torch.testing.assert_close(dropped, kept)
            continue
        per_channel = dropped.flatten(2) / kept.flatten(2).where(kept.flatten(2) != 0, 1.0)
        scale = per_channel[..., 0]
        # each (sample, channel) map is either zeroed or doubled as a whole
        assert set(scale.round(decimals=4).unique().tolist()) <= {0.0, 2.0}
        torch.testing.assert_close(dropped, kept * scale[..., None, None])
        assert 0 < (scale == 0).float().mean() < 1


def test_confident_ce_sums_over_confident_pixels_and_divides_by_all_pixels():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2 classes, 1, 2)
    target = torch.tensor([[[0, 1]]])
    confidence = torch.tensor([[[0.96, 0.5]]])
    by_hand = math.log(1 + math.exp(-2.0)) / 2  # only the first pixel counts, over 2 pixels
    got = confident_loss(logits, target, confidence, 0.95, "ce")
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    assert confident_loss(logits, target, confidence, 0.99, "ce").item() == 0.0


def test_confident_dice_counts_only_the_confident_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    confidence = torch.rand(2, 3, 3)
    keep = confidence >= 0.5
    probs = logits.softmax(1)
    # the kept pixels alone, laid out as one row, give the same pooled Dice
    flat_probs = probs.permute(1, 0, 2, 3)[:, keep].T[None, :, :, None].permute(0, 2, 1, 3)
    flat_target = target[keep][None, :, None]
    expected = soft_dice_loss(flat_probs, flat_target)
    got = confident_loss(logits, target, confidence, 0.5, "dice")
    torch.testing.assert_close(got, expected)
    assert confident_loss(logits, target, confidence, 2.0, "dice").item() == pytest.approx(0.0)


def test_unimatch_loss_weights_two_strong_views_and_the_perturbed_view(trained):
    method = trained["unimatch"].method
    method.hp = {**method.hp, "conf_thresh": 0.0}  # every pixel confident: all terms active
    losses = method.train_step(trained["unimatch"].make_batch(3), 3)
    lam = method.hp["lambda_fp"]
    expected = (losses["sup"] + (1 - lam) * losses["strong"] + lam * losses["fp"]) / 2
    torch.testing.assert_close(losses["loss"], expected)
    assert losses["strong"] > 0 and losses["fp"] > 0 and losses["confident"] == 1.0


def test_unimatch_targets_come_from_the_clean_weak_view_and_the_partner_in_the_box(
    trained, monkeypatch
):
    """With a network that echoes its input's class map, the strong views' targets must be the
    weak view's labels outside the box and the partner's inside."""
    method = trained["unimatch"].method
    captured = {}
    import baselines.unimatch as module

    def spy(logits, target, confidence, threshold, kind):
        captured.setdefault("targets", []).append(target.clone())
        return logits.float().mean() * 0

    monkeypatch.setattr(module, "confident_loss", spy)
    torch.manual_seed(1)
    boxes = {}
    real_boxes = module.cutmix_boxes

    def remember(*args, **kwargs):
        box = real_boxes(*args, **kwargs)
        boxes.setdefault("all", []).append(box)
        return box

    monkeypatch.setattr(module, "cutmix_boxes", remember)
    partners = {}
    real_derangement = module.derangement

    def remember_partner(count, device):
        partners["p"] = real_derangement(count, device)
        return partners["p"]

    monkeypatch.setattr(module, "derangement", remember_partner)
    batch = trained["unimatch"].make_batch(4)
    net = method.net
    before = copy.deepcopy(net.state_dict())  # the step's train-mode passes move BN statistics
    method.train_step(batch, 4)
    net.load_state_dict(before)
    n = batch.num_labeled
    weak_targets = captured["targets"][2]  # the feature-perturbation term: the weak labels
    net.eval()
    with torch.no_grad():
        partner_labels = net(batch.unlabeled_image).logits.argmax(1)[partners["p"]]
    net.train()
    for view, box in zip(captured["targets"][:2], boxes["all"], strict=True):
        inside = box.bool()
        assert torch.equal(view[~inside], weak_targets[~inside])
        assert torch.equal(view[inside], partner_labels[inside])
    assert weak_targets.shape == batch.unlabeled_image[:, 0].shape
    assert n == batch.labeled_image.shape[0]


def test_unimatch_rejects_unknown_switches(trained):
    from baselines.unimatch import UniMatch

    ctx = trained["unimatch"].method.ctx
    for key, value in (("unsup_loss", "mse"), ("fp_levels", "skips")):
        ctx_bad = type(ctx)(**{**ctx.__dict__, "hparams": {key: value}})
        with pytest.raises(ValueError, match=key):
            UniMatch(ctx_bad)


def test_unimatch_few_steps_lower_its_loss(processed_acdc, tmp_path):
    trainer = train(processed_acdc, tmp_path, "unimatch", iterations=24)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first, last = log[:6], log[-6:]
    assert sum(e["loss"] for e in last) < 0.9 * sum(e["loss"] for e in first)
    assert trainer.method.net.training


# BCP -----------------------------------------------------------------------------------------


def test_copy_paste_box_is_two_thirds_of_each_side_anywhere_that_fits():
    torch.manual_seed(0)
    tops = set()
    for _ in range(300):
        mask = copy_paste_mask(32, 30, 2 / 3, torch.device("cpu"))
        inside = (mask == 0).nonzero()
        top, left = inside.min(0).values.tolist()
        bottom, right = inside.max(0).values.tolist()
        assert (bottom - top + 1, right - left + 1) == (21, 20)  # int(32 * 2/3), int(30 * 2/3)
        assert int((mask == 0).sum()) == 21 * 20 and set(mask.unique().tolist()) == {0, 1}
        tops.add(top)
    assert tops == set(range(32 - 21))  # numpy's randint(0, 11): 0 .. 10
    with pytest.raises(ValueError, match="box_fraction"):
        copy_paste_mask(4, 4, 0.1, torch.device("cpu"))


def test_bidirectional_mix_swaps_what_lies_inside_and_outside_the_box():
    mask = torch.tensor([[1, 1], [0, 1]])  # one pixel of box, bottom left
    labeled = torch.full((1, 1, 2, 2), 1.0)
    unlabeled = torch.full((1, 1, 2, 2), 2.0)
    into_unlabeled = mix(unlabeled, labeled, mask)
    into_labeled = mix(labeled, unlabeled, mask)
    assert into_unlabeled.tolist() == [[[[2.0, 2.0], [1.0, 2.0]]]]
    assert into_labeled.tolist() == [[[[1.0, 1.0], [2.0, 1.0]]]]
    labels = mix(torch.full((1, 2, 2), 3), torch.full((1, 2, 2), 1), mask)
    assert labels.tolist() == [[[3, 3], [1, 3]]]


def test_region_losses_weigh_each_region_against_its_own_target():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = 2.0  # pixel 0 leans to class 0; pixel 1 is 50/50
    mask = torch.tensor([[1, 0]])  # pixel 0 outside the box, pixel 1 inside
    outside_target = torch.tensor([[[0, 0]]])
    inside_target = torch.tensor([[[1, 1]]])
    dice, ce = region_losses(logits, outside_target, inside_target, mask, 0.5, 1.0)
    ce_outside = math.log(1 + math.exp(-2.0))  # pixel 0 against class 0
    ce_inside = math.log(2.0)  # pixel 1 against class 1
    assert ce.item() == pytest.approx(0.5 * ce_outside + 1.0 * ce_inside, rel=1e-6)
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    # outside: one pixel of class 0 -> class 0 Dice 2p0/(p0^2+1), class 1 (absent) 0 / p1^2
    dice_out = 1 - ((2 * p[0]) / (p[0] ** 2 + 1) + 0.0) / 2
    dice_in = 1 - (0.0 + (2 * 0.5) / (0.25 + 1)) / 2
    assert dice.item() == pytest.approx(float(0.5 * dice_out + dice_in), rel=1e-5)


def test_largest_component_keeps_one_8_connected_blob_per_class():
    labels = torch.tensor(
        [[[1, 0, 0, 2, 0],
          [0, 1, 0, 0, 0],
          [0, 0, 0, 1, 1],
          [2, 2, 0, 1, 1]]]
    )  # fmt: skip
    kept = largest_components(labels, 4)
    # class 1: the diagonal pair (8-connected, 2 px) loses to the 4-pixel square
    # class 2: two blobs, 1 px and 2 px: the pair stays
    expected = torch.tensor(
        [[[0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0],
          [0, 0, 0, 1, 1],
          [2, 2, 0, 1, 1]]]
    )  # fmt: skip
    assert torch.equal(kept, expected)
    diagonal = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 0]]])
    assert torch.equal(largest_components(diagonal, 2), diagonal)  # one blob under 8-connectivity


def test_bcp_self_training_starts_student_and_teacher_from_stage_one(trained):
    method = trained["bcp"].method
    stage_one = load_torch(trained["bcp"].spec.previous_stage, map_location="cpu")["method_state"]
    fresh = type(method)(method.ctx)
    fresh.start_from(stage_one)
    for name, value in fresh.net.state_dict().items():
        torch.testing.assert_close(value, stage_one[f"net.{name}"])
        torch.testing.assert_close(fresh.teacher.state_dict()[name], value)


def test_bcp_teacher_is_a_constant_decay_ema(trained):
    method = trained["bcp"].method
    before = [p.clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        for p in method.net.parameters():
            p.add_(1.0)
    method.after_step(0)  # step 0: no warm-up of the decay
    decay = method.hp["ema_decay"]
    for old, new, student in zip(
        before, method.teacher.parameters(), method.net.parameters(), strict=True
    ):
        torch.testing.assert_close(new, decay * old + (1 - decay) * student)


def test_bcp_targets_and_weights_follow_each_region(trained, monkeypatch):
    import baselines.bcp as module

    method = trained["bcp"].method
    calls = []
    real = module.region_losses

    def spy(logits, outside, inside, mask, w_out, w_in):
        calls.append((outside.clone(), inside.clone(), mask.clone(), w_out, w_in))
        return real(logits, outside, inside, mask, w_out, w_in)

    monkeypatch.setattr(module, "region_losses", spy)
    pseudo = []
    real_pseudo = method.pseudo_labels
    monkeypatch.setattr(
        method, "pseudo_labels", lambda x: pseudo.append(real_pseudo(x)) or pseudo[-1]
    )
    batch = trained["bcp"].make_batch(3)
    method.train_step(batch, 3)
    (u_out, u_in, mask, uw_out, uw_in), (l_out, l_in, _, lw_out, lw_in) = calls
    half = len(u_out)
    assert torch.equal(u_out, pseudo[0]) and torch.equal(l_in, pseudo[1])  # teacher's labels
    assert torch.equal(u_in, batch.labeled_mask[:half])  # labeled a pasted into unlabeled a
    assert torch.equal(l_out, batch.labeled_mask[half : 2 * half])  # labeled b around ub
    u_weight = method.hp["u_weight"]
    assert (uw_out, uw_in, lw_out, lw_in) == (u_weight, 1.0, 1.0, u_weight)
    assert int((mask == 0).sum()) == int(32 * 2 / 3) ** 2


def test_bcp_pseudo_labels_are_the_teachers_argmax_reduced_to_largest_components(trained):
    method = trained["bcp"].method
    images = trained["bcp"].make_batch(4).unlabeled_image
    method.teacher.eval()  # deterministic forward for the comparison
    try:
        raw = method.teacher(images).logits.argmax(1)
        got = method.pseudo_labels(images)
    finally:
        method.teacher.train()
    assert torch.equal(got, largest_components(raw, method.ctx.num_classes))
    method.hp = {**method.hp, "largest_component": False}
    method.teacher.eval()
    try:
        assert torch.equal(method.pseudo_labels(images), raw)
    finally:
        method.teacher.train()
        method.hp = {**method.hp, "largest_component": True}


def test_bcp_few_steps_lower_each_stages_loss(processed_acdc, tmp_path):
    train_stages(processed_acdc, tmp_path, "bcp", iterations=24)
    for stage in ("pretrain", "selftrain"):
        lines = (tmp_path / stage / "log.jsonl").read_text().splitlines()
        log = [json.loads(line) for line in lines]
        first, last = log[:6], log[-6:]
        assert sum(e["loss"] for e in last) < 0.95 * sum(e["loss"] for e in first), stage
