"""Table 5's contrastive frameworks: their losses by hand, their queues and teachers, training."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import read_json, write_json
from mona.methods import glcon
from mona.methods.frameworks import (
    ISD,
    Embeddings,
    KnnMoCo,
    MoCo,
    SimCLR,
    byol_loss,
    info_nce,
    nearest_mask,
)
from mona.methods.glcon import FRAMEWORKS, teacher_log_distribution
from mona.registry import load_methods
from mona.report import table5
from mona.report.compare import comparison_frame

TINY = {"widths": [4, 8, 16, 32, 64], "image_size": 32, "batch_labeled": 2, "batch_unlabeled": 2}
STAGE1 = {"view_size": 8, "proj_dim": 16, "memory_size": 3}  # crops below the slice size
NAMES = ("moco", "knn_moco", "simclr", "byol", "isd")


def trainer_for(processed: Path, run_dir: Path, framework: str, **hparams) -> Trainer:
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    spec = RunSpec(
        dataset="acdc", method="mona", ratio="10", seed=0, stage="pretrain",
        processed_dir=processed, run_dir=run_dir, split=split,
        labeled=labeled_subset(split, manifest, "10", 0),
        hparams={**STAGE1, "pretrain_framework": framework, **hparams},
    )  # fmt: skip
    config = TrainConfig(stage_iterations={"pretrain": 2}, log_every=1, checkpoint_every=100,
                         **TINY)  # fmt: skip
    return Trainer(spec, config)


def learns(module: nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return bool(grads) and all(g is not None and g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------------------ the losses


def test_info_nce_with_a_queue_equals_a_hand_value():
    query = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0], [5.0, 0.0]])
    positive = torch.tensor([[True, False, False, False]])
    valid = torch.tensor([True, True, True, False])  # an empty queue slot is no negative
    t = 0.2
    terms = [math.exp(math.sqrt(0.5) / t), math.exp(0.0), math.exp(-1.0 / t)]
    expected = -math.log(terms[0] / sum(terms))
    assert info_nce(query, candidates, positive, t, valid).item() == pytest.approx(expected)
    # two positives: the mean of their log-probabilities
    both = torch.tensor([[True, True, False, False]])
    two = -0.5 * (math.log(terms[0] / sum(terms)) + math.log(terms[1] / sum(terms)))
    assert info_nce(query, candidates, both, t, valid).item() == pytest.approx(two)


def test_knn_moco_extra_positives_are_the_k_nearest_valid_queue_entries():
    angles = torch.tensor([0.1, 1.2, 0.3, 2.5, 0.05, 0.6])
    queue = torch.stack([angles.cos(), angles.sin()], dim=1)
    key = torch.tensor([[1.0, 0.0]])
    valid = torch.tensor([True, True, True, True, False, True])  # slot 4 is nearest but empty
    chosen = nearest_mask(key, queue, 3, valid)
    assert chosen.tolist() == [[True, False, True, False, False, True]]  # angles 0.1, 0.3, 0.6
    only_two = torch.tensor([False, True, False, True, False, False])
    assert nearest_mask(key, queue, 3, only_two).tolist() == [only_two.tolist()]


def test_knn_moco_global_loss_counts_the_neighbours_as_positives(processed_acdc, tmp_path):
    trainer = trainer_for(processed_acdc, tmp_path, "knn_moco", k=1, proj_dim=2)
    knn = trainer.method.pretrain
    assert isinstance(knn, KnnMoCo)
    knn.queue.enqueue(F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.2]]), dim=-1))
    query, key = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.1]])
    t = KnnMoCo.temperature
    cos = [
        F.cosine_similarity(query, key).item(),
        0.0,
        F.cosine_similarity(query, torch.tensor([[1.0, 0.2]])).item(),
    ]
    log_z = math.log(sum(math.exp(c / t) for c in cos))
    expected = -0.5 * ((cos[0] / t - log_z) + (cos[2] / t - log_z))
    assert knn.global_loss(query, key).item() == pytest.approx(expected, rel=1e-5)
    moco_like = -(cos[0] / t - log_z)
    knn.neighbours = False  # the same queue without neighbours: MoCo v2's loss
    assert knn.global_loss(query, key).item() == pytest.approx(moco_like, rel=1e-5)


def test_simclr_nt_xent_equals_a_hand_value_for_two_pairs(processed_acdc, tmp_path):
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    t = SimCLR.temperature
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = (z @ z.T).tolist()
    partner = [2, 3, 0, 1]
    expected = 0.0
    for i in range(4):
        others = sum(math.exp(sim[i][j] / t) for j in range(4) if j != i)
        expected -= math.log(math.exp(sim[i][partner[i]] / t) / others)
    expected /= 4
    simclr = trainer_for(processed_acdc, tmp_path, "simclr").method.pretrain
    crops = torch.stack([a, a])  # two slices with the same two crops
    embeddings = Embeddings(a, b, crops, torch.stack([b, b]))
    global_loss, local_loss = simclr.instance_losses(embeddings)
    assert global_loss.item() == pytest.approx(expected, rel=1e-5)
    assert local_loss.item() == pytest.approx(expected, rel=1e-5)
    assert not hasattr(simclr, "teacher")  # both views go through the student


def test_byol_loss_is_two_minus_two_cosine_and_has_no_negatives():
    prediction = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    target = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    expected = ((2 - 2 * math.sqrt(0.5)) + (2 - 2 * -1.0)) / 2
    assert byol_loss(prediction, target).item() == pytest.approx(expected)
    # each row only sees its own target: identical (collapsed) rows cost nothing
    same = torch.ones(4, 3)
    assert byol_loss(same, 2 * same).item() == pytest.approx(0.0, abs=1e-6)


def test_isd_loss_is_kl_teacher_to_student_over_the_bank_before_its_keys_join(
    processed_acdc, tmp_path
):
    isd = trainer_for(processed_acdc, tmp_path, "isd", proj_dim=2, tau_s=0.5, tau_t=0.25)
    isd = isd.method.pretrain
    assert isinstance(isd, ISD)
    bank = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    isd.banks.memory.enqueue(bank)
    student, teacher = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.6, 0.8]])
    crops = torch.zeros(1, 1, 2) + 1.0
    global_loss, _ = isd.instance_losses(Embeddings(student, teacher, crops, crops))
    # anchors: the two bank entries only; the teacher's own key joins after the comparison
    s = [math.sqrt(0.5), math.sqrt(0.5)]
    t_sim = [0.8, 0.6]
    p_s = [math.exp(x / 0.5) / sum(math.exp(y / 0.5) for y in s) for x in s]
    p_t = [math.exp(x / 0.25) / sum(math.exp(y / 0.25) for y in t_sim) for x in t_sim]
    expected = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    assert global_loss.item() == pytest.approx(expected, rel=1e-5)
    assert int(isd.banks.memory.count) == 3
    assert torch.allclose(isd.banks.memory.entries()[-1], torch.tensor([0.6, 0.8]))


def test_teacher_target_on_a_hand_built_bank_is_the_hand_softmax_of_its_k_nearest():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    valid = torch.tensor([True, True, True, False])
    teacher = torch.tensor([[0.8, 0.6]])
    log_t = teacher_log_distribution(teacher, anchors, 0.1, k=2, valid=valid)
    # cosines 0.8, 0.6, -0.8 (invalid: -0.6); the 2 nearest valid anchors keep mass
    z = math.exp(8.0) + math.exp(6.0)
    expected = [math.exp(8.0) / z, math.exp(6.0) / z, 0.0, 0.0]
    assert log_t.exp()[0].tolist() == pytest.approx(expected, abs=1e-6)
    everything = teacher_log_distribution(teacher, anchors, 0.1, valid=valid).exp()[0]
    z = math.exp(8.0) + math.exp(6.0) + math.exp(-8.0)
    assert everything[2].item() == pytest.approx(math.exp(-8.0) / z, rel=1e-4)


@pytest.mark.parametrize("name", ["isd", "glcon"])
def test_relational_anchors_never_hold_the_current_steps_keys(
    processed_acdc, tmp_path, monkeypatch, name
):
    trainer = trainer_for(processed_acdc, tmp_path, name)
    framework = trainer.method.pretrain
    keys: list[torch.Tensor] = []
    for head in (framework.teacher_global_head, framework.teacher_local_head):
        head.register_forward_hook(lambda m, i, out: keys.append(out.detach().clone()))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = glcon.relational_kl

    def recording(student, teacher, anchors, *args, valid=None, **kwargs):
        seen.append((anchors.clone(), valid.clone()))
        return original(student, teacher, anchors, *args, valid=valid, **kwargs)

    monkeypatch.setattr(glcon, "relational_kl", recording)
    for step in range(3):
        keys.clear()
        seen.clear()
        framework.train_step(trainer.make_batch(step), step)
        framework.after_step(step)
        assert len(seen) == 2 and len(keys) == 2
        for key, (anchors, valid) in zip(keys, seen, strict=True):
            key = F.normalize(key.flatten(0, -2), dim=-1)
            if step == 0:
                assert not valid.any()  # an empty bank: nothing to compare with yet
                continue
            assert valid.any()
            cosine = key @ F.normalize(anchors[valid], dim=-1).T
            assert cosine.max() < 0.9999, f"step {step}: a current key is among the anchors"
    banks = framework.banks
    newest = F.normalize(keys[0], dim=-1)
    assert torch.allclose(banks.memory.entries()[-len(newest):], newest, atol=1e-6)


# ------------------------------------------------------------------- queue and key encoder


def test_moco_queue_is_fifo_of_the_keys_and_the_key_encoder_is_the_ema(processed_acdc, tmp_path):
    trainer = trainer_for(processed_acdc, tmp_path, "moco")
    moco = trainer.method.pretrain
    assert type(moco) is MoCo and moco.queue.size == 3
    keys = []
    moco.teacher_global_head.register_forward_hook(lambda m, i, out: keys.append(out.clone()))
    optimizer = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.1)
    for step in range(3):
        before = [p.detach().clone() for p in moco.teacher.parameters()]
        head_before = [p.detach().clone() for p in moco.teacher_global_head.parameters()]
        optimizer.zero_grad()
        moco.train_step(trainer.make_batch(step), step)["loss"].backward()
        optimizer.step()
        moco.after_step(step)
        alpha = MoCo.momentum  # constant, as MoCo (no warm-up)
        for teacher, old, student in (
            (moco.teacher, before, moco.student),
            (moco.teacher_global_head, head_before, moco.global_head),
        ):
            for t, b, s in zip(teacher.parameters(), old, student.parameters(), strict=True):
                assert torch.allclose(t, alpha * b + (1 - alpha) * s, atol=1e-6)
    assert not any(p.requires_grad for p in moco.teacher.parameters())
    newest = F.normalize(torch.cat(keys), dim=-1)[-3:]  # 3 steps x 2 keys, bank of 3
    assert torch.allclose(moco.queue.entries(), newest, atol=1e-6)
    assert MoCo.momentum == 0.999 and MoCo.temperature == 0.2


# --------------------------------------------------------------------- through the engine


@pytest.mark.parametrize("name", NAMES)
def test_each_framework_trains_through_the_engine(processed_acdc, tmp_path, name):
    trainer = trainer_for(processed_acdc, tmp_path, name)
    record = trainer.run()
    assert record["iterations"] == 2
    framework = trainer.method.pretrain
    assert type(framework) is FRAMEWORKS[name]
    assert trainer.method.inference_net() is framework.student
    framework.zero_grad(set_to_none=True)
    losses = framework.train_step(trainer.make_batch(2), 2)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["inst_global"] > 0 and losses["inst_local"] > 0
    losses["loss"].backward()
    parts = ["student", "global_head", "local_head"]
    parts += ["global_predictor", "local_predictor"] if framework.predictor else []
    for part in parts:
        assert learns(getattr(framework, part)), part
    if framework.momentum is not None:
        assert all(p.grad is None for p in framework.teacher.parameters())


def test_frameworks_are_registered_with_the_paper_names():
    load_methods()
    names = {name: cls.display_name for name, cls in FRAMEWORKS.items()}
    assert names == {
        "glcon": "GLCon", "moco": "MoCov2", "knn_moco": "kNN-MoCo", "simclr": "SimCLR",
        "byol": "BYOL", "isd": "ISD",
    }  # fmt: skip


# ------------------------------------------------------------------------------- Table 5

REPO = Path(__file__).resolve().parent.parent
RUN = "runs/{dataset}/{method}/r{ratio}/s{seed}"


def table5_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["seeds"] = [0, 1]
    return config


def fake_metrics(path: Path, method: str, ratio: int, seed: int, dsc: float) -> None:
    write_json(
        {
            "dataset": "acdc", "method": "mona", "run_method": method, "ratio": str(ratio),
            "seed": seed, "code_version": "abc", "device": "cpu",
            "summary": {"dsc": dsc, "asd": 10 * dsc, "asd_excluded": 0},
        },
        path,
    )  # fmt: skip


def test_table5_rows_pair_each_framework_run_with_its_stage_and_the_paper(tmp_path):
    config = table5_config()
    assert table5.config_problems(config) == []
    paths = table5.metrics_paths(
        config, str(tmp_path / RUN), lambda dataset, method, ratio: str(ratio)
    )
    assert len(paths) == 6 * 3 * 2 * 2  # frameworks x ratios x settings x seeds
    moco = str(tmp_path / "runs/acdc/mona~pretrain_framework=moco/r5/s1")
    assert f"{moco}/pretrain/metrics.json" in paths and f"{moco}/metrics.json" in paths
    pattern = re.compile(r"runs/acdc/(?P<method>[^/]+)/r5/s(?P<seed>\d)/(?P<stage>pretrain/)?")
    at_five = [(p, m) for p in paths if (m := pattern.search(p))]
    for path, match in at_five:
        seed = int(match["seed"])
        dsc = (0.4 if match["stage"] else 0.8) + 0.1 * seed
        fake_metrics(Path(path), match["method"], 5, seed, dsc)
    paths = [path for path, _ in at_five]
    assert len(paths) == 6 * 2 * 2
    frame = table5.write_table(config, paths, tmp_path / "t5.csv", tmp_path / "t5.md")
    assert len(frame) == 2 * 3 * 6
    at5 = frame[frame.ratio_pct == 5].set_index(["setting", "method"])
    assert at5.loc[("pretrain_only", "MoCov2"), "dsc_mean"] == pytest.approx(45.0)
    assert at5.loc[("pretrain_only", "MoCov2"), "dsc_std"] == pytest.approx(math.sqrt(50))
    assert at5.loc[("with_finetune", "kNN-MoCo"), "dsc_mean"] == pytest.approx(85.0)
    assert at5.loc[("pretrain_only", "GLCon"), "method_id"] == "mona"
    assert at5.loc[("with_finetune", "MONA"), "method_id"] == "mona"  # GLCon + fine-tuning
    assert at5.loc[("with_finetune", "MONA"), "paper_dsc"] == 89.1
    assert at5.loc[("pretrain_only", "BYOL"), "paper_asd"] == 9.15
    assert pd.isna(at5.loc[("with_finetune", "BYOL"), "paper_dsc"])  # illegible in the paper
    assert (at5.n_seeds == 2).all() and set(frame.data) == {"synthetic"}
    assert frame[frame.ratio_pct == 1].n_seeds.eq(0).all()  # only r5 has metrics here
    paper = set(table5.paper_numbers().framework)
    assert set(frame.method) == paper
    assert "MoCov2 (pre-training only)" in (tmp_path / "t5.md").read_text()

    cells = comparison_frame(config, [table5.comparison(config, paths)])
    moco = cells[
        (cells.setting == "pretrain_only") & (cells.framework == "MoCov2")
        & (cells.ratio_pct == 5) & (cells.metric == "dsc")
    ].iloc[0]  # fmt: skip
    assert (moco.n_seeds, moco.seed_min, moco.seed_max) == (2, 40.0, 50.0)
    assert moco.delta == pytest.approx(45.0 - 56.2) and not bool(moco.paper_within_seeds)
    mona = cells[
        (cells.framework == "MONA") & (cells.ratio_pct == 5) & (cells.metric == "dsc")
    ].iloc[0]  # GLCon with fine-tuning: seeds 80 and 90 %, paper 89.1
    assert mona.delta == pytest.approx(85.0 - 89.1) and bool(mona.paper_within_seeds)
    assert cells.table.eq("table5").all() and cells[cells.ratio_pct == 1].n_seeds.eq(0).all()


def test_table5_config_problems_name_unknown_frameworks_and_datasets():
    config = table5_config()
    config["table5"] = {"dataset": "brats", "frameworks": ["moco", "dino"]}
    problems = table5.config_problems(config)
    assert len(problems) == 2  # moco is registered
    assert "'brats'" in problems[0] and "'dino'" in problems[1]


def test_snakemake_plans_table5_from_both_stages_of_each_framework_run(tmp_path):
    (tmp_path / "seeds.yaml").write_text("seeds: [0]\n")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "config.yaml"),
        str(tmp_path / "seeds.yaml"), "--dry-run", "results/table5.csv",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    # 6 frameworks x 3 ratios: two training stages each, each stage scored once
    assert int(jobs["train"]) == 36
    assert int(jobs["evaluate_stage"]) == 18 and int(jobs["evaluate"]) == 18
    assert int(jobs["table5"]) == 1
    assert "runs/acdc/mona~pretrain_framework=knn_moco/r1/s0/pretrain/metrics.json" in (
        result.stdout
    )
