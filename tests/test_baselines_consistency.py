"""UNet-F/L, EM, MT, UAMT, DCT and ICT: each trains through the engine, and each consistency
term computes what its definition says on inputs whose answer is known by hand."""

from __future__ import annotations

import json
import math

import pytest
import scipy.stats
import torch
from torch import nn

from baselines.dct import rotation_consistency
from baselines.entropy_min import entropy_term
from baselines.ict import interpolation_consistency, mix
from baselines.uamt import (
    masked_consistency,
    predictive_uncertainty,
    uncertainty_mask,
    uncertainty_threshold,
)
from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import read_json
from mona.models.base import SegmentationNet
from mona.registry import get_method

SMALL = {"widths": [4, 8, 16, 32, 64], "image_size": 32, "log_every": 1, "checkpoint_every": 100}
METHODS = ["unet_f", "unet_l", "em", "mt", "uamt", "dct", "ict"]


def train(processed, run_dir, method: str, iterations: int = 2) -> Trainer:
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    ratio = "all" if get_method(method).labeled_pool == "all" else "10"
    spec = RunSpec(
        dataset="acdc", method=method, ratio=ratio, seed=0, stage="train",
        processed_dir=processed, run_dir=run_dir, split=split,
        labeled=labeled_subset(split, manifest, ratio, 0),
    )  # fmt: skip
    config = TrainConfig(iterations=iterations, batch_labeled=2, batch_unlabeled=2, **SMALL)
    trainer = Trainer(spec, config)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def trained(processed_acdc, tmp_path_factory) -> dict[str, Trainer]:
    """Each method after two engine steps (one run per method, shared by the tests below)."""
    return {m: train(processed_acdc, tmp_path_factory.mktemp(m), m) for m in METHODS}


# every method: trains, learns, keeps its teacher out of the optimizer -------------------------


@pytest.mark.parametrize("name", METHODS)
def test_trains_with_finite_losses_and_gradients_for_every_student_weight(trained, name):
    trainer = trained[name]
    lines = (trainer.spec.run_dir / "log.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in lines]
    assert [entry["step"] for entry in log] == [1, 2]
    assert all(math.isfinite(value) for entry in log for value in entry.values())

    method = trainer.method
    method.zero_grad(set_to_none=True)
    losses = method.train_step(trainer.make_batch(2), 2)
    losses["loss"].backward()
    student = list(method.inference_net().named_parameters())
    missing = [n for n, p in student if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"
    teacher = [p for n, p in method.named_parameters() if n.startswith("teacher.")]
    assert all(p.grad is None and not p.requires_grad for p in teacher)


@pytest.mark.parametrize(("name", "term"), [("em", "entropy"), ("dct", "consistency"),
                                            ("ict", "consistency")])  # fmt: skip
def test_the_unsupervised_term_alone_moves_the_student(trained, name, term):
    method = trained[name].method
    method.zero_grad(set_to_none=True)
    losses = method.train_step(trained[name].make_batch(3), 3)
    assert losses[term] > 0
    losses[term].backward()
    grads = [p.grad for p in method.inference_net().parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["mt", "uamt", "ict"])
def test_teacher_is_the_ema_of_the_student(processed_acdc, tmp_path, name):
    method = train(processed_acdc, tmp_path, name, iterations=1).method
    # step 0: alpha = min(1 - 1/1, 0.99) = 0, so the teacher is a copy of the student
    for t, s in zip(method.teacher.parameters(), method.net.parameters(), strict=True):
        assert torch.equal(t, s)
    before = [p.detach().clone() for p in method.teacher.parameters()]
    optimizer = torch.optim.SGD(method.net.parameters(), lr=0.1)
    loss = sum((p - 1).square().sum() for p in method.net.parameters())  # moves every weight
    loss.backward()
    optimizer.step()
    method.after_step(1)  # alpha = min(1 - 1/2, 0.99) = 0.5
    for t, b, s in zip(method.teacher.parameters(), before, method.net.parameters(), strict=True):
        assert not torch.equal(t, s)
        assert torch.allclose(t, 0.5 * b + 0.5 * s)


# UNet-F / UNet-L -----------------------------------------------------------------------------


def test_supervised_references_read_labeled_slices_only(trained):
    full, subset = trained["unet_f"], trained["unet_l"]
    train_slices = len(full.labeled) + len(full.unlabeled)
    assert len(full.unlabeled) == 0 and len(full.labeled) == train_slices > len(subset.labeled)
    for trainer in (full, subset):  # the whole batch is labeled
        batch = trainer.make_batch(0)
        assert batch.num_labeled == 4 and batch.unlabeled_image.shape[0] == 0
        losses = trainer.method.train_step(batch, 0)
        assert torch.equal(losses["loss"], losses["sup"])


# MT ------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """Wraps a network and keeps the inputs it was called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_mt_teacher_sees_the_unlabeled_views_plus_clamped_noise(trained):
    method = trained["mt"].method
    batch = trained["mt"].make_batch(5)
    teacher = method.teacher
    recorder = method.teacher = Recorder(teacher)
    try:
        method.train_step(batch, 5)
    finally:
        method.teacher = teacher
    (seen,) = recorder.inputs
    noise = seen - batch.unlabeled_image
    clip = method.hp["noise_clip"]
    assert noise.abs().max() <= clip + 1e-6 and noise.abs().max() > 0
    assert (noise.abs() > clip - 1e-6).float().mean() < 0.2  # N(0, 0.1) rarely reaches 0.2
    assert noise.std() == pytest.approx(method.hp["noise_std"], rel=0.25)


def test_mt_consistency_is_off_until_its_start_then_ramps_up(trained):
    method = trained["mt"].method
    batch = trained["mt"].make_batch(5)
    start = method.hp["consistency_start"] * method.ctx.ramp_iterations
    early = method.train_step(batch, 0)
    assert early["consistency"] > 0 and torch.equal(early["loss"], early["sup"])
    saved = method.ctx.ramp_iterations
    method.ctx.ramp_iterations = 3000  # start at iteration 100
    try:
        before = method.train_step(batch, 99)
        after = method.train_step(batch, 100)
        late = method.train_step(batch, 3000)
    finally:
        method.ctx.ramp_iterations = saved
    assert start < 1 and torch.equal(before["loss"], before["sup"])
    assert after["loss"] > after["sup"]
    weight = (late["loss"] - late["sup"]) / late["consistency"]
    assert weight.item() == pytest.approx(0.1, rel=1e-3)  # the ramp reaches `consistency`


# EM ------------------------------------------------------------------------------------------


def test_entropy_term_matches_hand_values_and_scipy():
    # two pixels, two classes: uniform (entropy ln 2 -> 1 after / ln 2) and (0.9, 0.1)
    probs = torch.tensor([[0.5, 0.9], [0.5, 0.1]]).view(1, 2, 1, 2)
    skewed = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert entropy_term(probs).item() == pytest.approx((1.0 + skewed) / 2, rel=1e-6)

    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    probs = logits.softmax(1)
    reference = scipy.stats.entropy(probs.double().numpy(), base=4, axis=1).mean()
    assert entropy_term(probs).item() == pytest.approx(reference, rel=1e-5)


def test_entropy_term_is_zero_for_one_hot_predictions():
    labels = torch.tensor([[[0, 3], [2, 1]]])
    one_hot = nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float().requires_grad_()
    value = entropy_term(one_hot)
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(one_hot.grad).all()


# UAMT ----------------------------------------------------------------------------------------


def uamt_passes() -> torch.Tensor:
    """(T=3, B=1, C=3, H=1, W=3): a confident pixel, a disputed one, a moderately sure one."""
    confident = [[0.98, 0.01, 0.01]] * 3
    disputed = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # mean uniform: ln 3
    moderate = [[0.8, 0.1, 0.1]] * 3
    passes = torch.tensor([confident, disputed, moderate])  # (W, T, C)
    return passes.permute(1, 2, 0).reshape(3, 1, 3, 1, 3)


def test_uncertainty_is_the_entropy_of_the_mean_of_the_passes():
    got = predictive_uncertainty(uamt_passes()).flatten().tolist()
    expected = [
        -(0.98 * math.log(0.98) + 0.02 * math.log(0.01)),
        math.log(3),
        -(0.8 * math.log(0.8) + 0.2 * math.log(0.1)),
    ]
    assert got == pytest.approx(expected, rel=1e-5)


def test_uncertainty_mask_drops_uncertain_pixels_and_relaxes_over_training():
    start = uncertainty_threshold(0, 1000, 1.0)
    end = uncertainty_threshold(1000, 1000, 1.0)
    assert start == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert end == pytest.approx(math.log(2))
    # the moderate pixel (entropy 0.639 nats) is refused early and accepted late
    assert uncertainty_mask(uamt_passes(), start).flatten().tolist() == [1.0, 0.0, 0.0]
    assert uncertainty_mask(uamt_passes(), end).flatten().tolist() == [1.0, 0.0, 1.0]


def test_masked_consistency_counts_only_certain_pixels():
    teacher = uamt_passes().mean(0)
    student = torch.full_like(teacher, 1 / 3)
    mask = torch.tensor([1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    squared = [
        sum((1 / 3 - t) ** 2 for t in (0.98, 0.01, 0.01)),
        sum((1 / 3 - t) ** 2 for t in (0.8, 0.1, 0.1)),
    ]
    expected = sum(squared) / (2 * 2 + 1e-16)
    assert masked_consistency(student, teacher, mask).item() == pytest.approx(expected, rel=1e-5)
    assert masked_consistency(student, teacher, torch.zeros_like(mask)).item() == 0.0


def test_uamt_teacher_passes_are_distinct_noisy_draws(trained):
    method = trained["uamt"].method
    images = trained["uamt"].make_batch(0).unlabeled_image
    passes = method.teacher_passes(images)
    assert passes.shape == (8, 2, 4, 32, 32)
    assert torch.allclose(passes.sum(2), torch.ones(8, 2, 32, 32))
    assert not torch.equal(passes[0], passes[1])


# DCT -----------------------------------------------------------------------------------------


class PointwiseNet(SegmentationNet):
    """A network whose output at a pixel depends on that pixel alone: it commutes with rot90."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 1), nn.Tanh())
        self.head = nn.Conv2d(6, num_classes, 1)
        self.decoder_channels, self.bottleneck_channels = [6], 6

    def encode(self, x):
        return [self.body(x)]

    def decode(self, features):
        return [features[-1]]


def test_rotation_consistency_is_zero_for_an_equivariant_network_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 6, 6)
    pointwise = PointwiseNet(3)
    spatial = nn.Conv2d(1, 3, 3, padding=1)
    for turns in (1, 2, 3):
        rx = torch.rot90(x, turns, (2, 3))
        probs, rotated_probs = pointwise(x).logits.softmax(1), pointwise(rx).logits.softmax(1)
        zero = rotation_consistency(probs, rotated_probs, turns)
        assert zero.item() == pytest.approx(0.0, abs=1e-12)
        positive = rotation_consistency(spatial(x).softmax(1), spatial(rx).softmax(1), turns)
        assert positive.item() > 1e-4


def test_rotation_consistency_splits_the_gradient_between_both_branches():
    torch.manual_seed(1)
    a = torch.rand(1, 2, 4, 4, requires_grad=True)
    b = torch.rand(1, 2, 4, 4, requires_grad=True)
    value = rotation_consistency(a, b, 1)
    value.backward()
    plain_a, plain_b = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    mse = torch.mean((b - torch.rot90(a, 1, (2, 3))) ** 2)
    mse.backward()
    # same value as the MSE; each branch receives half of the MSE's pull
    assert value.item() == pytest.approx(mse.item())
    assert torch.allclose(plain_a, 0.5 * a.grad) and torch.allclose(plain_b, 0.5 * b.grad)


def test_dct_step_sees_no_disagreement_from_an_equivariant_network(trained, monkeypatch):
    method = trained["dct"].method
    batch = trained["dct"].make_batch(0)
    monkeypatch.setattr(method, "draw_rotation", lambda: 1)
    assert method.train_step(batch, 0)["consistency"].item() > 0  # the UNet is not equivariant
    monkeypatch.setattr(method, "net", PointwiseNet(4))
    assert method.train_step(batch, 0)["consistency"].item() == pytest.approx(0.0, abs=1e-12)


def test_dct_draws_every_quarter_turn(trained):
    torch.manual_seed(0)
    draws = {trained["dct"].method.draw_rotation() for _ in range(64)}
    assert draws == {0, 1, 2, 3}


# ICT -----------------------------------------------------------------------------------------


def test_interpolation_target_is_the_mix_of_teacher_predictions():
    t0 = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1)
    t1 = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)
    lam = torch.tensor(0.25).view(1, 1, 1, 1)
    target = [0.75 * 0.9 + 0.25 * 0.2, 0.75 * 0.1 + 0.25 * 0.8]
    assert mix(t0, t1, lam).flatten().tolist() == pytest.approx(target)
    student = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)
    expected = ((0.5 - target[0]) ** 2 + (0.5 - target[1]) ** 2) / 2
    assert interpolation_consistency(student, t0, t1, lam).item() == pytest.approx(expected)


def test_ict_step_mixes_inputs_and_teacher_outputs_with_the_same_lambda(trained, monkeypatch):
    method = trained["ict"].method
    batch = trained["ict"].make_batch(0)
    method.teacher.load_state_dict(method.net.state_dict())
    method.eval()  # per-image predictions (BatchNorm running statistics, no dropout)
    try:
        for value in (0.0, 0.3):
            lam = torch.tensor(value).view(1, 1, 1, 1)
            monkeypatch.setattr(method, "draw_mix_factors", lambda pairs, device, lam=lam: lam)
            got = method.train_step(batch, 0)["consistency"]
            u0, u1 = batch.unlabeled_image[:1], batch.unlabeled_image[1:2]
            with torch.no_grad():
                student = method.net(mix(u0, u1, lam)).logits.softmax(1)
                p0, p1 = method.net(u0).logits.softmax(1), method.net(u1).logits.softmax(1)
            target = mix(p0, p1, lam)
            assert got.item() == pytest.approx(torch.mean((student - target) ** 2).item(), rel=1e-4)
            if value == 0.0:  # the mix is u0 itself and teacher == student
                assert got.item() == pytest.approx(0.0, abs=1e-10)
    finally:
        method.train()


def test_ict_mix_factors_follow_beta_alpha_alpha(trained):
    torch.manual_seed(0)
    lam = trained["ict"].method.draw_mix_factors(4000, torch.device("cpu"))
    assert lam.shape == (4000, 1, 1, 1)
    assert scipy.stats.kstest(lam.flatten().numpy(), scipy.stats.beta(0.2, 0.2).cdf).pvalue > 1e-3
