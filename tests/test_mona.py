"""MONA: its losses against hand values, its banks and samplers, and both stages via the engine."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mona.augment import AugmentConfig, Augmenter
from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import read_json
from mona.methods.anatomy import (
    ClassMemory,
    EquivarianceTransform,
    RepresentationHead,
    StrongGeometry,
    acf_loss,
    class_means,
    equivariance_loss,
    nearest_neighbour_loss,
    official_equivariance_loss,
    sample_negatives,
    sample_per_class,
    unsupervised_ce,
)
from mona.methods.glcon import (
    FRAMEWORKS,
    CropProjectionHead,
    FifoMemory,
    crop_boxes,
    crop_means,
    relational_kl,
)
from mona.registry import get_method

TINY = {"widths": [4, 8, 16, 32, 64], "image_size": 32, "batch_labeled": 2, "batch_unlabeled": 2}
STAGE1 = {"view_size": 8, "proj_dim": 16}  # crops smaller than the 32 x 32 slices
STAGE2 = {"embed_dim": 16, "rep_width": 8, "queries": 16, "keys": 8, "class_memory": 32}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- stage 1


def test_relational_kl_equals_a_hand_value_and_k_keeps_the_nearest_anchors():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    student = torch.tensor([[1.0, 1.0]])  # cos 0.7071, 0.7071, -0.7071
    teacher = torch.tensor([[1.0, 0.0]])  # cos 1, 0, -1
    tau_s, tau_t = 0.5, 1.0
    s = [math.exp(c / tau_s) for c in (0.70710678, 0.70710678, -0.70710678)]
    t = [math.exp(c / tau_t) for c in (1.0, 0.0, -1.0)]
    p_s = [x / sum(s) for x in s]
    p_t = [x / sum(t) for x in t]
    expected = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    value = relational_kl(student, teacher, anchors, tau_s, tau_t)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # k = 2: the teacher spreads only over its two nearest anchors; the student over all three
    t2 = [t[0] / (t[0] + t[1]), t[1] / (t[0] + t[1])]
    expected_k = sum(pt * math.log(pt / ps) for pt, ps in zip(t2, p_s[:2], strict=True))
    value_k = relational_kl(student, teacher, anchors, tau_s, tau_t, k=2)
    assert value_k.item() == pytest.approx(expected_k, rel=1e-5)
    # an invalid anchor is ignored by both distributions
    valid = torch.tensor([True, True, False])
    s2 = [s[0] / (s[0] + s[1]), s[1] / (s[0] + s[1])]
    expected_v = sum(pt * math.log(pt / ps) for pt, ps in zip(t2, s2, strict=True))
    value_v = relational_kl(student, teacher, anchors, tau_s, tau_t, valid=valid)
    assert value_v.item() == pytest.approx(expected_v, rel=1e-5)


def test_fifo_memory_keeps_the_newest_entries_oldest_first():
    bank = FifoMemory(size=4, dim=1)
    assert bank.entries().numel() == 0 and not bank.valid_mask().any()
    bank.enqueue(torch.tensor([[1.0], [2.0], [3.0]]))
    assert bank.entries().flatten().tolist() == [1.0, 2.0, 3.0]
    bank.enqueue(torch.tensor([[4.0], [5.0]]))
    assert bank.entries().flatten().tolist() == [2.0, 3.0, 4.0, 5.0]
    bank.enqueue(torch.arange(6.0, 12.0).unsqueeze(1))  # more than the size at once
    assert bank.entries().flatten().tolist() == [8.0, 9.0, 10.0, 11.0]
    assert int(bank.count) == 4 and bank.valid_mask().all()
    assert {"memory", "pointer", "count"} <= set(bank.state_dict())


def test_crop_projection_equals_projecting_every_pixel_then_averaging():
    torch.manual_seed(0)
    head = CropProjectionHead(3, 5).eval()
    maps = torch.randn(2, 3, 10, 12)
    top, left, side = crop_boxes(2, 10, 12, count=4, size=6, generator=generator())
    assert side == 6 and int(top.max()) <= 4 and int(left.max()) <= 6
    per_pixel = head.out(head.hidden(maps).permute(0, 2, 3, 1))  # (B, H, W, D)
    for b, n in itertools.product(range(2), range(4)):
        t, lft = int(top[b, n]), int(left[b, n])
        expected = per_pixel[b, t : t + 6, lft : lft + 6].mean(dim=(0, 1))
        assert torch.allclose(head(maps, top, left, side)[b, n], expected, atol=1e-5)
    # the crop side is clipped to the image
    assert crop_boxes(1, 10, 12, count=1, size=64, generator=generator())[2] == 10
    assert crop_means(maps, top, left, side).shape == (2, 4, 3)


# ------------------------------------------------------------------------------- stage 2


def test_acf_loss_equals_a_hand_value_with_class_mean_positives():
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    means, counts = class_means(embeddings.T.reshape(1, 2, 1, 3), labels.view(1, 1, 3), 2)
    assert counts.tolist() == [2.0, 1.0]
    assert torch.allclose(means, torch.tensor([[0.8, 0.4], [0.0, 1.0]]))
    # queries: the two class-0 embeddings; their negatives: two keys of class 1, [0, 1]
    negatives = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    t = 0.5
    pos_cos = [0.8 / math.hypot(0.8, 0.4), (0.48 + 0.32) / math.hypot(0.8, 0.4)]
    neg_cos = [0.0, 0.8]
    per_query = [
        -math.log(math.exp(p / t) / (math.exp(p / t) + 2 * math.exp(n / t)))
        for p, n in zip(pos_cos, neg_cos, strict=True)
    ]
    value = acf_loss(embeddings[:2], labels[:2], means, negatives, t)
    assert value.item() == pytest.approx(sum(per_query) / 2, rel=1e-5)
    # a class-1 query joins: the result is the mean of the two class means
    q1 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0.0)))
    both = acf_loss(embeddings, labels, means, negatives, t)
    assert both.item() == pytest.approx((sum(per_query) / 2 + q1) / 2, rel=1e-5)


def test_queries_are_hard_first_then_easy():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, -1, -1])
    confidence = torch.tensor([0.99, 0.5, 0.98, 0.6, 0.99, 0.9, 0.1, 0.99, 0.0, 0.0])
    hard = confidence < 0.97
    for seed in range(5):
        index, classes = sample_per_class(labels, 3, 3, generator(seed), priority=hard)
        chosen = dict.fromkeys(range(3))
        for c in range(3):
            chosen[c] = set(index[classes == c].tolist())
        assert chosen[0] == {1, 3, 5}  # exactly the hard class-0 pixels
        assert chosen[1] == {6, 7}  # fewer than 3: the hard one, then the easy one
        assert chosen[2] == set()  # absent class, and ignored pixels never drawn
    # four queries of class 0: the three hard ones and one easy one
    index, classes = sample_per_class(labels, 3, 4, generator(1), priority=hard)
    picked = set(index[classes == 0].tolist())
    assert {1, 3, 5} < picked and len(picked - {1, 3, 5}) == 1


def test_class_memory_is_fifo_per_class_with_a_fixed_capacity():
    bank = ClassMemory(num_classes=3, size=3, dim=1)
    bank.enqueue(torch.tensor([[1.0], [2.0], [10.0]]), torch.tensor([0, 0, 1]))
    bank.enqueue(torch.tensor([[3.0], [4.0], [11.0]]), torch.tensor([0, 0, 1]))
    assert bank.entries(0).flatten().tolist() == [2.0, 3.0, 4.0]
    assert bank.entries(1).flatten().tolist() == [10.0, 11.0]
    assert bank.entries(2).numel() == 0
    assert bank.count.tolist() == [3, 2, 0]
    prototypes = bank.prototypes()
    assert prototypes[2].abs().sum() == 0 and prototypes[0].item() == pytest.approx(1.0)


def test_negatives_come_from_other_non_empty_classes_only():
    bank = ClassMemory(num_classes=4, size=5, dim=2)
    bank.enqueue(torch.randn(7, 2), torch.tensor([0, 0, 1, 1, 1, 3, 3]))
    index, has_negative = sample_negatives(
        bank.prototypes(), bank.count, keys=200, temperature=0.5, bank_size=5,
        generator=generator(),
    )  # fmt: skip
    assert index.shape == (4, 200) and has_negative.all()
    classes, position = index // 5, index % 5
    for c in range(4):
        assert c not in classes[c].tolist() and 2 not in classes[c].tolist()
    assert (position < bank.count[classes]).all()  # filled slots only
    lonely = ClassMemory(num_classes=2, size=5, dim=2)
    lonely.enqueue(torch.randn(2, 2), torch.tensor([0, 0]))
    _, has_negative = sample_negatives(
        lonely.prototypes(), lonely.count, 4, 0.5, 5, generator()
    )
    assert has_negative.tolist() == [False, True]


def flip_transform(batch: int, size: int, photometric: bool = False) -> EquivarianceTransform:
    """A horizontal flip (exact on pixel centres), optionally with photometric noise."""
    config = AugmentConfig(
        rotate_deg=0.0, scale=(1.0, 1.0), flip_p=1.0,
        jitter_p=1.0 if photometric else 0.0, blur_p=0.0,
    )  # fmt: skip
    augmenter = Augmenter(config, generator())
    return EquivarianceTransform.draw(augmenter, torch.zeros(batch, 1, size, size))


def test_equivariance_loss_is_zero_for_a_commuting_network_and_positive_otherwise():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 8, 8)
    transform = flip_transform(2, 8)
    assert transform.valid.all()
    pointwise = nn.Conv2d(1, 3, 1)  # acts pixel by pixel: commutes with a flip
    asymmetric = nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():
        asymmetric.weight[:, :, :, 0] += 2.0  # looks left, not right

    def loss_of(net: nn.Module, t: EquivarianceTransform) -> float:
        probs = net(images).softmax(1)
        return equivariance_loss(probs, net(t.input(images)).softmax(1), t).item()

    assert loss_of(pointwise, transform) == pytest.approx(0.0, abs=1e-6)
    assert loss_of(asymmetric, transform) > 1e-3
    # photometric noise on the input breaks the match of even a pointwise network
    assert loss_of(pointwise, flip_transform(2, 8, photometric=True)) > 1e-4


def test_official_equivariance_counts_confident_foreground_only_and_moves_only_f_of_tx():
    torch.manual_seed(0)
    transform = flip_transform(1, 4)
    target = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    moved = torch.zeros(1, 3, 4, 4, requires_grad=True)  # uniform prediction on T(x)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 1, 0] = 1  # one foreground pixel at column 0; the flip moves it to column 3
    labels[0, 2, 1] = 2  # a second one, below the confidence threshold
    confidence = torch.ones(1, 4, 4)
    confidence[0, 2, 1] = 0.5
    loss = official_equivariance_loss(target, moved, labels, confidence, transform, 0.7)
    p = torch.tensor([0.7, 0.2, 0.1])
    expected = (p * (p.log() - math.log(1 / 3))).sum()  # KL(p || uniform) at that one pixel
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert moved.grad[0, :, 1, 3].abs().sum() > 0  # the foreground pixel, moved by T
    untouched = moved.grad.clone()
    untouched[0, :, 1, 3] = 0
    assert untouched.abs().sum() == 0  # background and unconfident pixels do not count
    # an all-background prediction is no longer free: the foreground pixel costs it
    background = torch.full((1, 3, 4, 4), -10.0)
    background[:, 0] = 10.0
    free = official_equivariance_loss(target, background, labels, confidence, transform, 0.7)
    assert free.item() > 1.0
    # the paper's every-pixel form scores the same all-background map as perfectly equivariant
    flat = background.softmax(1)
    assert equivariance_loss(flat, flat, transform).item() == pytest.approx(0.0, abs=1e-6)


def test_nearest_neighbour_loss_pulls_to_the_k_nearest_with_gradient_on_the_student():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    valid = torch.tensor([True, True, True, False])
    student = torch.tensor([[2.0, 0.2]], requires_grad=True)
    loss = nearest_neighbour_loss(student, memory, valid, neighbours=2)
    e = F.normalize(student.detach(), dim=-1)[0]
    expected = (((e - memory[0]) ** 2).sum() + ((e - memory[1]) ** 2).sum()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    empty = nearest_neighbour_loss(student, memory, torch.zeros(4, dtype=torch.bool), 2)
    assert empty.item() == 0.0 and empty.requires_grad


def test_unsupervised_ce_counts_confident_pixels_over_all_valid_pixels():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, 0] = math.log(3.0)  # p = (0.75, 0.25)
    pseudo = torch.tensor([[[0, 1, 1, 0]]])
    confidence = torch.tensor([[[0.99, 0.99, 0.5, 0.99]]])
    valid = torch.tensor([[[True, True, True, False]]])
    value = unsupervised_ce(logits, pseudo, confidence, valid, threshold=0.97)
    assert value.item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 3, rel=1e-6)


def test_strong_geometry_carries_weak_frame_maps_into_the_strong_view():
    config = AugmentConfig(jitter_p=0.0, blur_p=0.0, deform_p=1.0, cutmix_p=1.0)
    augmenter = Augmenter(config, generator(3))
    images = torch.rand(4, 1, 16, 16)
    geometry = StrongGeometry.draw(augmenter, images)
    view = geometry.view(augmenter, images)  # no photometric noise: the geometry alone
    assert torch.allclose(view, geometry.apply(images))
    assert (geometry.source != torch.arange(4).view(4, 1, 1)).any()  # CutMix pasted something
    # a map that is the image itself, carried over, equals the strong view inside the image
    maps = torch.cat([images, 2 * images], dim=1)
    carried = geometry.apply(maps)
    assert torch.allclose(carried[:, :1], view) and torch.allclose(carried[:, 1:], 2 * view)
    assert 0.5 < geometry.valid.float().mean() <= 1.0


def test_representation_head_gives_one_vector_per_pixel_at_the_image_size():
    head = RepresentationHead([16, 8, 4], width=6, embed_dim=5)
    maps = [torch.randn(2, 16, 4, 4), torch.randn(2, 8, 8, 8), torch.randn(2, 4, 16, 16)]
    hidden = head.hidden(maps, (16, 16))
    assert hidden.shape == (2, 6, 16, 16)
    assert head.embed(hidden.permute(0, 2, 3, 1)).shape == (2, 16, 16, 5)
    assert head.hidden(maps, (32, 32)).shape == (2, 6, 32, 32)


# --------------------------------------------------------------------------- through the engine


def make_spec(processed: Path, run_dir: Path, stage: str, **kw) -> RunSpec:
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    return RunSpec(
        dataset="acdc", method="mona", ratio="10", seed=0, stage=stage,
        processed_dir=processed, run_dir=run_dir, split=split,
        labeled=labeled_subset(split, manifest, "10", 0), **kw,
    )  # fmt: skip


def tiny_config() -> TrainConfig:
    return TrainConfig(
        stage_iterations={"pretrain": 2, "finetune": 2}, log_every=1, checkpoint_every=100,
        **TINY,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(processed_acdc, tmp_path_factory) -> Path:
    """Two GLCon iterations through the engine; the stage-1 run folder."""
    run_dir = tmp_path_factory.mktemp("mona") / "pretrain"
    spec = make_spec(processed_acdc, run_dir, "pretrain", hparams=dict(STAGE1))
    Trainer(spec, tiny_config()).run()
    return run_dir


def gradients_of_one_step(trainer: Trainer, step: int = 2) -> dict[str, torch.Tensor]:
    method = trainer.method
    method.zero_grad(set_to_none=True)
    losses = method.train_step(trainer.make_batch(step), step)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    losses["loss"].backward()
    return losses


def learns(module: nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return bool(grads) and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_glcon_trains_student_heads_and_predictors_and_fills_its_bank(
    processed_acdc, pretrained
):
    spec = make_spec(processed_acdc, pretrained.parent / "again", "pretrain",
                     hparams=dict(STAGE1))  # fmt: skip
    trainer = Trainer(spec, tiny_config())
    glcon = trainer.method.pretrain
    first = gradients_of_one_step(trainer, 0)
    assert first["inst_global"] == 0 and first["inst_local"] == 0  # empty banks
    assert int(glcon.banks.memory.count) == 2  # this step's two keys, after the comparison
    assert int(glcon.banks.local_memory.count) == 2 * 36  # and their crops
    losses = gradients_of_one_step(trainer, 1)
    assert {"sup", "inst_global", "inst_local"} <= set(losses)
    assert losses["inst_local"] > 0 and losses["inst_global"] > 0
    for part in ("global_head", "global_predictor", "local_head", "local_predictor"):
        assert learns(getattr(glcon, part)), part
    assert all(p.grad is None for p in glcon.teacher.parameters())
    saved = torch.load(pretrained / "model.pt")["method_state"]
    assert int(saved["pretrain.banks.memory.count"]) == 4  # two iterations of two keys


def test_stage_two_starts_from_stage_one_weights(processed_acdc, pretrained, tmp_path):
    stage1 = torch.load(pretrained / "model.pt")["method_state"]
    spec = make_spec(processed_acdc, tmp_path, "finetune", hparams=dict(STAGE2),
                     previous_stage=pretrained / "model.pt")  # fmt: skip
    trainer = Trainer(spec, tiny_config())
    method = trainer.method
    for net in (method.student, method.teacher):
        for name, value in net.state_dict().items():
            assert torch.equal(value, stage1[f"pretrain.student.{name}"]), name
    fresh = Trainer(make_spec(processed_acdc, tmp_path / "fresh", "finetune",
                              hparams=dict(STAGE2)), tiny_config())  # fmt: skip
    assert not torch.equal(
        fresh.method.student.state_dict()["down.0.0.weight"],
        stage1["pretrain.student.down.0.0.weight"],
    )


SWITCHES = list(itertools.product([False, True], repeat=3))
AUG_PAIRS = [("weak", "weak"), ("strong", "weak"), ("strong", "strong")]  # weak/strong above


@pytest.mark.parametrize(
    ("switches", "augs", "eqv_mode"),
    [(s, ("weak", "strong"), "paper") for s in SWITCHES]
    + [((True, True, True), a, "paper") for a in AUG_PAIRS]
    + [((False, True, False), a, "official") for a in (("weak", "strong"), *AUG_PAIRS)],
)
def test_stage_two_runs_and_trains_what_each_switch_turns_on(
    processed_acdc, pretrained, tmp_path, switches, augs, eqv_mode
):
    tailness, consistency, diversity = switches
    hparams = {
        **STAGE2, "tailness": tailness, "consistency": consistency, "diversity": diversity,
        "student_aug": augs[0], "teacher_aug": augs[1], "eqv_mode": eqv_mode,
    }  # fmt: skip
    spec = make_spec(processed_acdc, tmp_path, "finetune", hparams=hparams,
                     previous_stage=pretrained / "model.pt")  # fmt: skip
    trainer = Trainer(spec, tiny_config())
    record = trainer.run()
    assert record["stage"] == "finetune" and (tmp_path / "model.pt").exists()
    method = trainer.method
    losses = gradients_of_one_step(trainer)
    expected = {"sup", "unsup"} | {
        name for name, on in zip(("contrast", "eqv", "nn"), switches, strict=True) if on
    }
    assert set(losses) - {"loss"} == expected
    assert learns(method.student)
    assert hasattr(method, "rep_head") == (tailness or diversity)
    if tailness or diversity:
        assert learns(method.rep_head)
    assert all(p.grad is None for p in method.teacher.parameters())
    if tailness:
        assert int(method.class_memory.count.sum()) > 0
    if diversity:  # three steps of four images each (bank of 36)
        assert int(method.nn_memory.count) == 12 and losses["nn"] > 0


def test_the_unsupervised_term_reaches_the_student_through_confident_pixels(
    processed_acdc, pretrained, tmp_path
):
    hparams = {**STAGE2, "delta0": 0.0, "tailness": False, "consistency": False,
               "diversity": False, "lambda3": 1.0}  # fmt: skip
    spec = make_spec(processed_acdc, tmp_path, "finetune", hparams=hparams,
                     previous_stage=pretrained / "model.pt")  # fmt: skip
    trainer = Trainer(spec, tiny_config())
    losses = gradients_of_one_step(trainer, 0)
    assert losses["unsup"] > 0  # every pixel is confident at delta0 = 0


def test_bad_switch_values_are_refused(processed_acdc, tmp_path):
    for hparams, message in (
        ({"teacher_aug": "medium"}, "teacher_aug"),
        ({"tailness": "yes"}, "tailness"),
        ({"pretrain_framework": "nope"}, "glcon"),
        ({"eqv_mode": "both"}, "eqv_mode"),
    ):
        spec = make_spec(processed_acdc, tmp_path, "finetune", hparams=hparams)
        with pytest.raises(ValueError, match=message):
            Trainer(spec, tiny_config())


def test_registration_describes_two_stages_and_paper_defaults():
    cls = get_method("mona")
    assert cls.stages == ("pretrain", "finetune") and cls.display_name == "MONA"
    d = cls.defaults
    assert (d["lambda1"], d["lambda2"], d["lambda3"], d["lambda4"]) == (0.01, 1.0, 1.0, 1.0)
    assert (d["delta0"], d["nn_k"], d["embed_dim"], d["k"], d["view_set"], d["view_size"]) == (
        0.97, 5, 512, 5, 36, 64,
    )
    assert (d["tau_s"], d["tau_t"], d["temperature"], d["ema"]) == (0.1, 0.01, 0.5, 0.99)
    assert (d["student_aug"], d["teacher_aug"], d["queries"], d["keys"]) == (
        "weak", "strong", 256, 512,
    )
    assert "glcon" in FRAMEWORKS and d["pretrain_framework"] == "glcon"
    assert "k" not in cls.finetune_only and {"lambda1", "nn_k", "embed_dim"} <= cls.finetune_only


def test_stage_two_teacher_is_a_constant_0_99_ema_from_the_first_step(
    processed_acdc, pretrained, tmp_path
):
    spec = make_spec(processed_acdc, tmp_path, "finetune", hparams=dict(STAGE2),
                     previous_stage=pretrained / "model.pt")  # fmt: skip
    trainer = Trainer(spec, tiny_config())
    method = trainer.method
    gradients_of_one_step(trainer, 0)
    torch.optim.SGD(method.student.parameters(), lr=0.5).step()
    before = [p.detach().clone() for p in method.teacher.parameters()]
    method.after_step(0)  # a warm-up alpha would be 0 here: the teacher a copy of the student
    moved = False
    for t, b, s in zip(method.teacher.parameters(), before, method.student.parameters(),
                       strict=True):  # fmt: skip
        assert torch.allclose(t, 0.99 * b + 0.01 * s, atol=1e-6)
        moved |= not torch.equal(t, s)
    assert moved


def test_official_direction_the_teacher_labels_the_weak_batch_the_student_the_strong_view(
    processed_acdc, pretrained, tmp_path
):
    hparams = {**STAGE2, "student_aug": "strong", "teacher_aug": "weak", "tailness": False,
               "consistency": False, "diversity": False}  # fmt: skip
    spec = make_spec(processed_acdc, tmp_path, "finetune", hparams=hparams,
                     previous_stage=pretrained / "model.pt")  # fmt: skip
    trainer = Trainer(spec, tiny_config())
    method = trainer.method
    seen: dict[str, torch.Tensor] = {}
    method.teacher.register_forward_pre_hook(lambda m, a: seen.setdefault("teacher", a[0]))
    method.student.register_forward_pre_hook(lambda m, a: seen.setdefault("student", a[0]))
    batch = trainer.make_batch(0)
    method.train_step(batch, 0)
    n = batch.num_labeled
    assert torch.equal(seen["teacher"][n:], batch.unlabeled_image)  # pseudo-labels: weak
    assert not torch.equal(seen["student"][n:], batch.unlabeled_image)  # trained on strong
    assert torch.equal(seen["student"][:n], batch.labeled_image)
