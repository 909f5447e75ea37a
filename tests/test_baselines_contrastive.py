"""Contrastive baselines GCL, SCS and PLC: their losses, their pairs and their two stages."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from baselines.gcl import local_region_pairs, partition_of, partition_pairs
from baselines.plc import position_positives
from baselines.scs import local_pixel_loss, subsample
from mona.contrastive import load_backbone, nt_xent, pair_contrastive_loss, supcon_loss
from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import read_json

SMALL = {"widths": [4, 8, 16, 32, 64], "image_size": 32, "batch_labeled": 2, "batch_unlabeled": 2}
METHODS = ("gcl", "scs", "plc")


def make_spec(processed: Path, run_dir: Path, method: str, stage: str) -> RunSpec:
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    return RunSpec(
        dataset="acdc",
        method=method,
        ratio="10",
        seed=0,
        stage=stage,
        processed_dir=processed,
        run_dir=run_dir,
        split=split,
        labeled=labeled_subset(split, manifest, "10", 0),
    )


# generic losses -------------------------------------------------------------------------------
def test_nt_xent_equals_a_hand_computed_value_for_two_pairs():
    # cosines: a1.b1 = 1, a1.a2 = 0, a1.b2 = -1, a2.b1 = 0, a2.b2 = 0, b1.b2 = -1
    view_a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # lengths differ: the loss normalises
    view_b = torch.tensor([[1.0, 0.0], [-3.0, 0.0]])
    t = 0.5  # logits = cosine / t = 2 cosine
    a1 = b1 = -2 + math.log(math.exp(2) + 1 + math.exp(-2))  # positive 2, others 0 and -2
    a2 = math.log(3)  # positive 0, others 0 and 0
    b2 = math.log(1 + 2 * math.exp(-2))  # positive 0, others -2 and -2
    expected = (a1 + a2 + b1 + b2) / 4
    assert nt_xent(view_a, view_b, t).item() == pytest.approx(expected, rel=1e-6)


def test_similarities_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    view_a, view_b = torch.randn(8, 16), torch.randn(8, 16)
    exact = nt_xent(view_a, view_b, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = nt_xent(view_a, view_b, 0.1)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(exact.item(), rel=1e-6)


def test_pair_loss_counts_only_the_listed_negatives():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    positive = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    negative = torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    # l(0,1): s01 = 0, negative s02 = -1; l(1,0): s10 = 0, negative s12 = 0
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    loss = pair_contrastive_loss(embeddings, positive, negative, 1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_supcon_without_any_positive_is_zero_but_differentiable():
    embeddings = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(embeddings, torch.zeros(3, 3, dtype=torch.bool), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(embeddings.grad, torch.zeros(3, 4))


def test_load_backbone_keeps_the_prefixed_weights_only_and_strictly():
    net = torch.nn.Linear(2, 2)
    state = {"net.weight": torch.ones(2, 2), "net.bias": torch.zeros(2), "head.w": torch.ones(1)}
    load_backbone(net, state)
    assert torch.equal(net.weight, torch.ones(2, 2))
    with pytest.raises(RuntimeError, match="bias"):
        load_backbone(net, {"net.weight": torch.ones(2, 2)})


# pair definitions -----------------------------------------------------------------------------
def test_plc_positives_follow_the_position_threshold():
    positions = torch.tensor([0.125, 0.25, 0.5, 0.75, 1.0])
    positive = position_positives(positions, 0.35)
    # differences < 0.35: (0.125, 0.25) 0.125, (0.25, 0.5) 0.25, (0.5, 0.75), (0.75, 1.0)
    # but not (0.125, 0.5) = 0.375 nor (0.25, 0.75) = 0.5
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 4)]:
        expected[i, j] = expected[j, i] = True
    assert torch.equal(positive, expected)
    # strictly below the threshold: a difference of exactly 0.25 is not positive at 0.25
    assert not position_positives(torch.tensor([0.25, 0.5]), 0.25).any()
    # two views of one slice (difference 0) are positives, a slice is never its own
    both_views = position_positives(torch.tensor([0.5, 0.5]), 0.1)
    assert torch.equal(both_views, torch.tensor([[False, True], [True, False]]))


def test_gcl_partitions_split_the_position_axis_in_four():
    depth = 8
    positions = torch.tensor([(i + 1) / depth for i in range(depth)])
    assert partition_of(positions, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert partition_of(torch.tensor([0.25, 0.2501, 0.5, 0.75, 1.0]), 4).tolist() == [
        0, 1, 1, 2, 3,
    ]


def test_gcl_positives_are_one_partition_of_different_volumes_or_the_other_view():
    # slices: (volume, position) -> partition
    volumes = torch.tensor([0, 1, 0, 0, 1, 0])
    positions = torch.tensor([0.1, 0.2, 0.15, 0.6, 0.7, 0.1])  # index 5: index 0's other view
    positive, negative = partition_pairs(positions, volumes, 4)
    # partitions: 0, 0, 0, 2, 2, 0
    expected_positive = {(0, 1), (2, 1), (5, 1), (0, 5), (3, 4)}
    expected_positive |= {(j, i) for i, j in expected_positive}
    got = {(i, j) for i, j in positive.nonzero().tolist()}
    assert got == expected_positive
    # (0, 2): one partition of the same volume, different slices -> neither
    assert not positive[0, 2] and not negative[0, 2]
    # negatives: every pair of different partitions, nothing else
    part = torch.tensor([0, 0, 0, 2, 2, 0])
    assert torch.equal(negative, part[:, None] != part[None, :])


def test_gcl_local_regions_pair_the_same_region_of_the_two_views():
    positive, negative = local_region_pairs(images=2, regions=2)
    # order: (view, image, region) -> index: v * 4 + b * 2 + r
    expected_positive = {(0, 4), (1, 5), (2, 6), (3, 7)}
    expected_positive |= {(j, i) for i, j in expected_positive}
    assert {tuple(p) for p in positive.nonzero().tolist()} == expected_positive
    # negatives of region 0 of image 0, view 0: region 1 of image 0 in both views
    assert negative[0].nonzero().flatten().tolist() == [1, 5]


def reference_supcon(z: torch.Tensor, labels: list[int], anchors: list[int], t: float) -> float:
    """Plain-Python SupCon: same label = positive, every other pixel in the denominator."""
    z = [v / v.norm() for v in z]
    terms = []
    for i in anchors:
        others = [k for k in range(len(z)) if k != i]
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in others)
        positives = [p for p in others if labels[p] == labels[i]]
        logs = [math.log(math.exp(float(z[i] @ z[p]) / t) / denominator) for p in positives]
        terms.append(-sum(logs) / len(logs))
    return sum(terms) / len(terms)


def test_scs_contrasts_stride_4_pixels_with_same_label_positives():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 8, 8)  # views a and b of one slice
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 0, 0], labels[0, 0, 4], labels[0, 4, 0], labels[0, 4, 4] = 1, 1, 2, 0
    labels[0, 1, 1] = 3  # off the stride-4 grid: must not matter
    sub = subsample(features, 4)
    assert torch.equal(sub, features[:, :, [0, 4]][:, :, :, [0, 4]])
    pixels = sub.flatten(2).transpose(1, 2)  # (2, 4, 3)
    pixel_labels = subsample(labels, 4).flatten(1)
    assert pixel_labels.tolist() == [[1, 1, 2, 0]]
    loss = local_pixel_loss(pixels[:1], pixels[1:], pixel_labels, 0.1)
    z = torch.cat([pixels[0], pixels[1]]).double()
    both = [1, 1, 2, 0, 1, 1, 2, 0]
    # background pixels (3 and 7) are contrasted against but are not anchors
    expected = reference_supcon(z, both, [0, 1, 2, 4, 5, 6], 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    with_background = local_pixel_loss(pixels[:1], pixels[1:], pixel_labels, 0.1, True)
    assert with_background.item() == pytest.approx(
        reference_supcon(z, both, list(range(8)), 0.1), rel=1e-5
    )


# methods through the engine -------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_pretrain_stage_runs_both_phases_with_finite_losses(processed_acdc, tmp_path, method):
    config = TrainConfig(iterations=4, log_every=1, **SMALL)
    record = Trainer(make_spec(processed_acdc, tmp_path, method, "pretrain"), config).run()
    assert record["stage"] == "pretrain"
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(entry["loss"]) for entry in log)
    if method != "plc":  # first half global, second half local (global_fraction 0.5)
        assert ["global_contrast" in e for e in log] == [True, True, False, False]
        assert ["local_contrast" in e for e in log] == [False, False, True, True]


def _gradients_after(trainer: Trainer, step: int) -> None:
    trainer.method.zero_grad(set_to_none=True)
    losses = trainer.method.train_step(trainer.make_batch(step), step)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()


def _learns(*modules: torch.nn.Module) -> bool:
    grads = [p.grad for m in modules for p in m.parameters()]
    return (
        all(g is not None and torch.isfinite(g).all() for g in grads)
        and sum(float(g.abs().sum()) for g in grads) > 0
    )


def _idle(*modules: torch.nn.Module) -> bool:
    return all(p.grad is None for m in modules for p in m.parameters())


# (parts that learn, parts that stay idle) per method and phase; step 0 global, step 3 local
PHASES = {
    ("gcl", 0): (["net.down", "global_head"], ["net.up", "net.head", "local_head"]),
    ("gcl", 3): (["net.up.0", "net.up.1", "net.up.2", "local_head"],
                 ["net.down", "net.up.3", "net.head", "global_head"]),
    ("scs", 0): (["net.down", "global_head"], ["net.up", "net.head", "local_head"]),
    ("scs", 3): (["net.down", "net.up", "net.head", "local_head"], ["global_head"]),
    ("plc", 0): (["net.down", "head"], ["net.up", "net.head"]),
}


@pytest.mark.parametrize(("method", "step"), list(PHASES))
def test_gradients_reach_what_each_phase_trains(processed_acdc, tmp_path, method, step):
    config = TrainConfig(iterations=4, **SMALL)
    trainer = Trainer(make_spec(processed_acdc, tmp_path, method, "pretrain"), config)
    _gradients_after(trainer, step)
    learn, idle = PHASES[method, step]
    get = trainer.method.get_submodule
    assert _learns(*[get(name) for name in learn])
    assert _idle(*[get(name) for name in idle])


@pytest.mark.parametrize("method", METHODS)
def test_finetune_starts_from_the_pretrained_backbone(processed_acdc, tmp_path, method):
    config = TrainConfig(iterations=50, stage_iterations={"pretrain": 2, "finetune": 1}, **SMALL)
    pre = make_spec(processed_acdc, tmp_path / "pre", method, "pretrain")
    Trainer(pre, config).run()
    saved = torch.load(tmp_path / "pre" / "model.pt")
    fine_spec = replace(
        pre, stage="finetune", run_dir=tmp_path / "fine", previous_stage=tmp_path / "pre/model.pt"
    )
    fine = Trainer(fine_spec, config)
    assert fine.iterations == 1
    weights = fine.method.net.state_dict()
    assert set(fine.method.state_dict()) == {f"net.{k}" for k in weights}  # heads dropped
    for key, value in weights.items():
        assert torch.equal(value, saved["method_state"][f"net.{key}"]), key
    # the check can fail: pre-training moved the backbone away from its seeded initial weights
    fresh = Trainer(replace(fine_spec, previous_stage=None, run_dir=tmp_path / "fresh"), config)
    fresh_weights = fresh.method.net.state_dict()
    assert any(not torch.equal(weights[k], fresh_weights[k]) for k in weights)
    # fine-tuning is `sup` on labeled slices: every backbone parameter learns
    _gradients_after(fine, 0)
    assert _learns(fine.method.net)
    assert fine.run()["stage"] == "finetune"


def test_an_unknown_stage_is_refused(processed_acdc, tmp_path):
    with pytest.raises(ValueError, match="pretrain"):
        Trainer(make_spec(processed_acdc, tmp_path, "gcl", "train"), TrainConfig(**SMALL))



def test_a_stage_lr_of_its_own_starts_stage_1_there_and_leaves_fine_tuning_at_lr(
    processed_acdc, tmp_path
):
    config = TrainConfig(iterations=4, stage_iterations={"pretrain": 4},
                         stage_lr={"pretrain": 0.05}, lr=0.2, log_every=1,
                         checkpoint_every=100, **SMALL)  # fmt: skip
    pre = make_spec(processed_acdc, tmp_path / "pre", "gcl", "pretrain")
    trainer = Trainer(pre, config)
    starts = {g["initial_lr"] for o in trainer.optimizers for g in o.param_groups}
    assert starts == {0.05}
    record = trainer.run()
    assert record["train"]["stage_lr"] == {"pretrain": 0.05}
    log = [json.loads(line) for line in (tmp_path / "pre" / "log.jsonl").read_text().splitlines()]
    logged = [entry["lr"] for entry in log if "lr" in entry]
    assert logged == pytest.approx([0.05 * (1 - step / 4) ** 0.9 for step in range(4)])
    fine = Trainer(
        replace(pre, stage="finetune", run_dir=tmp_path / "fine",
                previous_stage=tmp_path / "pre" / "model.pt"),
        config,
    )  # fmt: skip
    assert {g["initial_lr"] for o in fine.optimizers for g in o.param_groups} == {0.2}
