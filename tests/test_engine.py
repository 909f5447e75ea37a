"""The engine trains every method the same way, resumes exactly and refuses NaN."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mona.data.splits import labeled_subset, make_split
from mona.engine import NonFiniteLossError, RunSpec, TrainConfig, Trainer
from mona.io import UnreadableFileError, load_array, load_torch, read_json, write_json

SMALL = {"widths": [4, 8, 16, 32, 64], "image_size": 32, "log_every": 2, "checkpoint_every": 3}


def make_spec(processed: Path, run_dir: Path, method: str, ratio: str = "10", **kw) -> RunSpec:
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    return RunSpec(
        dataset="acdc",
        method=method,
        ratio=ratio,
        seed=0,
        stage="train",
        processed_dir=processed,
        run_dir=run_dir,
        split=split,
        labeled=labeled_subset(split, manifest, ratio, 0),
        **kw,
    )


def train(processed, run_dir, method, iterations=4, **kw):
    config = TrainConfig(iterations=iterations, batch_labeled=2, batch_unlabeled=2, **SMALL)
    trainer = Trainer(make_spec(processed, run_dir, method, **kw), config)
    return trainer, trainer.run()


def test_unet_l_trains_moves_the_loss_and_writes_its_record(processed_acdc, tmp_path):
    trainer, record = train(processed_acdc, tmp_path, "unet_l", iterations=12)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    saved = torch.load(tmp_path / "model.pt")
    assert saved["method"] == "unet_l" and saved["num_classes"] == 4
    assert torch.load(tmp_path / "checkpoint.pt")["step"] == 12
    for key in ("method", "dataset", "ratio", "seed", "iterations", "code_version", "device"):
        assert key in record
    # supervised methods read labeled slices only, with the whole batch
    assert trainer.batch_labeled == 4 and trainer.batch_unlabeled == 0


def test_mean_teacher_teacher_is_the_ema_of_the_student(processed_acdc, tmp_path):
    trainer, _ = train(processed_acdc, tmp_path / "a", "mt", iterations=1)
    method = trainer.method
    # after one step (step 0), alpha = min(1 - 1/1, 0.99) = 0 -> teacher equals student
    for t, s in zip(method.teacher.parameters(), method.net.parameters(), strict=True):
        assert torch.equal(t, s)
    before = [p.detach().clone() for p in method.teacher.parameters()]
    batch = trainer.make_batch(1)
    losses = method.train_step(batch, 1)
    assert set(losses) >= {"loss", "sup", "consistency"}
    losses["loss"].backward()
    torch.optim.SGD(method.net.parameters(), lr=0.1).step()
    method.after_step(1)  # alpha = 0.5
    for t, b, s in zip(method.teacher.parameters(), before, method.net.parameters(), strict=True):
        assert torch.allclose(t, 0.5 * b + 0.5 * s)
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_same_seed_same_weights(processed_acdc, tmp_path):
    a, _ = train(processed_acdc, tmp_path / "a", "mt", iterations=3)
    b, _ = train(processed_acdc, tmp_path / "b", "mt", iterations=3)
    for x, y in zip(a.method.state_dict().values(), b.method.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_non_finite_loss_stops_with_a_clear_message(processed_acdc, tmp_path):
    config = TrainConfig(iterations=4, batch_labeled=2, batch_unlabeled=2, lr=1e30, **SMALL)
    trainer = Trainer(make_spec(processed_acdc, tmp_path, "unet_l"), config)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        trainer.run()
    assert not (tmp_path / "model.pt").exists()


def test_unknown_hyperparameter_is_refused(processed_acdc, tmp_path):
    spec = make_spec(processed_acdc, tmp_path, "mt", hparams={"ema_decy": 0.9})
    with pytest.raises(ValueError, match="ema_decy"):
        Trainer(spec, TrainConfig(iterations=1, **SMALL))


def test_a_method_that_labels_every_patient_refuses_a_labeled_ratio(processed_acdc, tmp_path):
    # runs/acdc/unet_f/r5 would silently train UNet-L at 5 % under UNet-F's name
    with pytest.raises(ValueError, match="rall"):
        Trainer(make_spec(processed_acdc, tmp_path, "unet_f", "5"), TrainConfig(**SMALL))
    trainer = Trainer(make_spec(processed_acdc, tmp_path, "unet_f", "all"), TrainConfig(**SMALL))
    manifest = read_json(processed_acdc / "manifest.json")
    train_patients = set(make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)["train"])
    assert set(trainer.spec.labeled["patients"]) == train_patients


def test_best_val_keeps_the_best_validated_weights(processed_acdc, tmp_path):
    spec = make_spec(processed_acdc, tmp_path, "unet_l", protocol={"checkpoint": "best_val"})
    config = TrainConfig(iterations=4, batch_labeled=2, batch_unlabeled=2, val_every=2, **SMALL)
    record = Trainer(spec, config).run()
    scores = [
        json.loads(line)
        for line in (tmp_path / "log.jsonl").read_text().splitlines()
        if "val_dice" in line
    ]
    assert [s["step"] for s in scores] == [2, 4]
    assert record["best_val"]["score"] == max(s["val_dice"] for s in scores)
    assert (tmp_path / "model.pt").exists()
    best = torch.load(tmp_path / "best.pt")["inference_state"]
    final = torch.load(tmp_path / "model.pt")["inference_state"]
    assert all(torch.equal(best[k], final[k]) for k in best)


def _cli_train(config_path, processed, split_path, run_dir):
    return [
        sys.executable, "-m", "mona.cli", "train", "--config", str(config_path),
        "--dataset", "acdc", "--method", "mt", "--ratio", "10", "--seed", "0",
        "--manifest", str(processed / "manifest.json"), "--split", str(split_path),
        "--run-dir", str(run_dir),
    ]  # fmt: skip


def test_killed_run_resumes_and_ends_with_the_uninterrupted_weights(processed_acdc, tmp_path):
    train_cfg = {
        "iterations": 40, "batch_labeled": 2, "batch_unlabeled": 2, "image_size": 32,
        "widths": [8, 16, 32, 64, 128], "checkpoint_every": 5, "log_every": 5,
    }  # fmt: skip
    config = {
        "datasets": {"acdc": {"kind": "acdc", "raw": str(processed_acdc)}},
        "ratios": [10],
        "seeds": [0],
        "tables": {"table1": {"datasets": ["acdc"], "methods": ["mt"]}},
        "train": train_cfg,
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    split_path = tmp_path / "split.json"
    manifest = read_json(processed_acdc / "manifest.json")
    write_json(make_split(manifest, "paper", [0.6, 0.2, 0.2], 0), split_path)

    whole = tmp_path / "whole"
    subprocess.run(_cli_train(config_path, processed_acdc, split_path, whole), check=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli_train(config_path, processed_acdc, split_path, killed))
    checkpoint = killed / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint)["step"] >= 10:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model.pt").exists()
    subprocess.run(_cli_train(config_path, processed_acdc, split_path, killed), check=True)
    log = (killed / "log.jsonl").read_text()
    assert '"event": "resume"' in log
    steps = [json.loads(line)["step"] for line in log.splitlines() if '"loss"' in line]
    assert steps == sorted(set(steps)), "steps after the last checkpoint are logged twice"

    a = torch.load(whole / "model.pt")["method_state"]
    b = torch.load(killed / "model.pt")["method_state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_finished_run_asked_again_trains_again_and_stale_checkpoints_are_set_aside(
    processed_acdc, tmp_path
):
    first, record = train(processed_acdc, tmp_path, "unet_l", iterations=3)
    (tmp_path / "model.pt").unlink()  # what Snakemake does before re-running a job (-F)
    again, record_again = train(processed_acdc, tmp_path, "unet_l", iterations=3)
    assert record_again["resumed_from"] == 0  # really retrained, not served from checkpoint.pt
    assert '"event": "resume"' not in (tmp_path / "log.jsonl").read_text()
    # other settings (here: more iterations) must not resume from this checkpoint
    longer, longer_record = train(processed_acdc, tmp_path, "unet_l", iterations=4)
    assert longer_record["resumed_from"] == 0
    assert (tmp_path / "checkpoint.stale.pt").exists()


def _partial_run(processed: Path, run_dir: Path, **kw) -> Trainer:
    """A run of 6 iterations stopped after its checkpoint at step 3."""
    config = TrainConfig(iterations=6, batch_labeled=2, batch_unlabeled=2, **SMALL)
    trainer = Trainer(make_spec(processed, run_dir, "unet_l", **kw), config)
    trainer.iterations = 3
    trainer.run()
    return Trainer(make_spec(processed, run_dir, "unet_l", **kw), config)


def test_changed_training_data_or_previous_weights_never_resume(processed_acdc, tmp_path):
    resumed = _partial_run(processed_acdc, tmp_path / "same")
    assert resume_step(resumed) == 3  # nothing changed: resumes
    data = tmp_path / "data"
    shutil.copytree(processed_acdc, data)
    trainer = _partial_run(data, tmp_path / "changed")
    manifest = read_json(data / "manifest.json")
    patient = trainer.spec.labeled["patients"][0]
    case = next(c for c in manifest["cases"] if c["patient_id"] == patient)
    image = np.load(data / case["image"])
    np.save(data / case["image"], image + 0.5)  # the labeled patient's raw image changed
    assert resume_step(trainer) == 0
    previous = tmp_path / "stage1.pt"
    torch.save({"a": torch.zeros(1)}, previous)
    trainer = _partial_run(processed_acdc, tmp_path / "prev", previous_stage=None)
    spec = trainer.spec
    first = Trainer.fingerprint(_with_previous(trainer, previous))
    torch.save({"a": torch.ones(1)}, previous)  # stage 1 retrained, same path
    assert Trainer.fingerprint(_with_previous(trainer, previous)) != first
    assert spec.previous_stage is None


def test_a_record_names_the_bytes_it_trained_on(processed_acdc, tmp_path):
    _, first = train(processed_acdc, tmp_path / "first", "unet_l", iterations=1)
    _, again = train(processed_acdc, tmp_path / "again", "unet_l", iterations=1)
    assert first["data_fingerprint"] == again["data_fingerprint"]
    data = tmp_path / "data"
    shutil.copytree(processed_acdc, data)
    manifest = read_json(data / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    case = next(c for c in manifest["cases"] if c["patient_id"] in split["train"])
    np.save(data / case["label"], np.load(data / case["label"])[::-1].copy())
    _, changed = train(data, tmp_path / "changed", "unet_l", iterations=1)
    assert changed["data_fingerprint"] != first["data_fingerprint"]
    recorded = read_json(tmp_path / "changed" / "train.json")
    assert recorded["data_fingerprint"] == changed["data_fingerprint"]


def test_a_cpu_record_names_the_processor_and_the_kernels_it_ran():
    from mona.provenance import cpu_model, device_description

    described = device_description(torch.device("cpu"))
    assert cpu_model() in described
    assert f"({torch.backends.cpu.get_cpu_capability()})" in described


def resume_step(trainer: Trainer) -> int:
    trainer._fingerprint = trainer.fingerprint()
    return trainer._resume()[0]


def _with_previous(trainer: Trainer, previous: Path) -> Trainer:
    trainer.spec = RunSpec(**{**trainer.spec.__dict__, "previous_stage": previous})
    return trainer


def test_unreadable_checkpoint_is_set_aside_and_the_run_starts_afresh(processed_acdc, tmp_path):
    trainer = _partial_run(processed_acdc, tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated by a full disk
    (tmp_path / ".model.pt.tmp-999999").write_bytes(b"half")  # a killed write's leftover
    record = trainer.run()
    assert record["resumed_from"] == 0
    assert (tmp_path / "checkpoint.unreadable.pt").exists()
    assert not (tmp_path / ".model.pt.tmp-999999").exists()
    assert torch.load(tmp_path / "model.pt")["method"] == "unet_l"


def test_non_finite_weights_are_never_checkpointed(processed_acdc, tmp_path):
    config = TrainConfig(iterations=20, batch_labeled=2, batch_unlabeled=2, lr=1e12,
                         widths=[4, 8, 16, 32, 64], image_size=32, log_every=10,
                         checkpoint_every=2)  # fmt: skip
    trainer = Trainer(make_spec(processed_acdc, tmp_path, "unet_l"), config)
    with pytest.raises(NonFiniteLossError):
        trainer.run()
    checkpoint = tmp_path / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint)["method_state"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        assert torch.load(checkpoint)["step"] < 10


def test_truncated_artefacts_name_their_file(processed_acdc, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(processed_acdc, data)
    manifest = read_json(data / "manifest.json")
    array = data / manifest["cases"][0]["image"]
    array.write_bytes(array.read_bytes()[:200])
    with pytest.raises(UnreadableFileError, match=re.escape(str(array))):
        load_array(array, mmap_mode="r")
    (data / "manifest.json").write_text('{"cases": [')
    with pytest.raises(UnreadableFileError, match="manifest.json"):
        Trainer(make_spec(data, tmp_path / "run", "unet_l"), TrainConfig())
    model = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(3)}, model)
    model.write_bytes(model.read_bytes()[:50])
    with pytest.raises(UnreadableFileError, match="model.pt"):
        load_torch(model)


@pytest.mark.parametrize("name", ["split.json", "train.json", "metrics.json", "manifest.json"])
def test_truncated_json_artefacts_name_their_file(tmp_path, name):
    path = tmp_path / name
    write_json({"train": [1, 2, 3], "seed": 0}, path)
    path.write_text(path.read_text()[:12])
    with pytest.raises(UnreadableFileError, match=re.escape(str(path))):
        read_json(path)


def test_train_optimizer_adamw_is_used_by_every_optimizer_the_method_builds(
    processed_acdc, tmp_path
):
    config = TrainConfig(iterations=2, batch_labeled=2, batch_unlabeled=2, optimizer="adamw",
                         lr=1e-3, **SMALL)  # fmt: skip
    for method in ("unet_l", "cps"):
        trainer = Trainer(make_spec(processed_acdc, tmp_path / method, method), config)
        assert trainer.optimizers and all(
            isinstance(o, torch.optim.AdamW) for o in trainer.optimizers
        )
        before = [p.detach().clone() for p in trainer.method.parameters()]
        record = trainer.run()
        assert record["train"]["optimizer"] == "adamw"
        after = list(trainer.method.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
