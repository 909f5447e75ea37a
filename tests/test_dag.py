"""A tiny end-to-end DAG run: synthetic raw -> preprocess -> split -> train -> evaluate -> table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def tiny_config(raw="synthetic") -> dict:
    """The repository's test config (.test/config/config.yaml), with the raw folder given."""
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config["datasets"]["acdc"]["raw"] = raw
    return config


def run_dag(workdir: Path, config: dict, *targets: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
         "--cores", "2", *targets],
        capture_output=True, text=True,
    )  # fmt: skip


def test_tiny_dag_produces_table1_with_provenance(tmp_path, assert_drawn):
    details = ("results/report/table1_classes.html", "results/figures/curves/table1/acdc.png")
    result = run_dag(tmp_path, tiny_config(), "results/table1.csv", *details)
    assert result.returncode == 0, result.stderr[-3000:]
    classes = pd.read_csv(tmp_path / "results" / "table1.classes.csv")
    assert set(classes["class"]) == {"RV", "Myo", "LV"} and set(classes.n_seeds) == {2}
    assert "acdc: HD95 per class" in (tmp_path / details[0]).read_text()
    assert_drawn(tmp_path / details[1])
    table = pd.read_csv(tmp_path / "results" / "table1.csv")
    assert list(table.method) == ["UNet-F", "MT"]
    assert list(table.n_seeds) == [2, 2]
    assert table.dsc_mean.between(0, 100).all()
    assert list(table.paper_dsc) == [89.9, 80.1]
    metrics = json.loads((tmp_path / "runs/acdc/mt/r10/s1/metrics.json").read_text())
    for key in ("method", "dataset", "ratio", "seed", "iterations", "code_version", "device",
                "data_fingerprint", "test_data_fingerprint", "packages", "threads"):
        assert metrics.get(key) is not None, key
    assert len(set(table.test_data)) == 1  # every row scored on the same test bytes
    assert metrics["protocol"]["empty"] == "strict" and metrics["train"]["backbone"] == "unet"
    for timing in ("train.train.benchmark.tsv", "evaluate.benchmark.tsv"):  # written by the job
        job = pd.read_csv(tmp_path / "runs/acdc/mt/r10" / timing, sep="\t")
        assert list(job.columns) == ["s", "max_rss", "cpu_time"] and (job.iloc[0] > 0).all()
    packages = metrics["packages"]  # what could change a number, recorded with it
    assert packages["torch"] and packages["numpy"] and packages["scipy"] and packages["snakemake"]
    labeled = json.loads((tmp_path / "runs/acdc/mt/r10/s1/train/labeled.json").read_text())
    assert len(labeled["patients"]) == 1
    assert (tmp_path / "runs/acdc/unet_f/rall/s0/metrics.json").exists()
    # the plateau check: UNet-F's first seed at 4x the 3 iterations, in the table's bound rows
    plateau = json.loads((tmp_path / "runs/acdc/unet_f/rall/x4/s0/metrics.json").read_text())
    assert plateau["iterations"] == 12 and plateau["seed"] == 0
    assert table.plateau_iterations.tolist()[0] == 12 and pd.isna(table.plateau_iterations[1])
    assert "Plateau check, acdc: UNet-F's first seed trained 12 iterations" in (
        tmp_path / "results" / "table1.md"
    ).read_text()

    def planned(config: dict) -> dict[str, int]:
        result = run_dag(tmp_path, config, "results/table1.csv", "-n", "--quiet", "rules")
        assert result.returncode == 0, result.stderr[-3000:]
        return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M)}

    assert "train" not in planned(tiny_config())  # nothing changed, nothing to do
    # a changed evaluation switch re-scores every run without retraining any
    official = tiny_config()
    official["protocol"]["empty"] = "official"
    assert planned(official) == {"evaluate": 2, "plateau_evaluate": 1, "table": 1, "total": 4}
    # a changed schedule retrains (and re-scores) every run
    longer = tiny_config()
    longer["train"]["iterations"] = 4
    assert planned(longer)["train"] == 2 and planned(longer)["plateau_train"] == 1
    # a dataset's own train keys: the value in force decides, not where it is written
    same = tiny_config()
    same["datasets"]["acdc"]["train"] = {"iterations": 3}
    assert "train" not in planned(same)
    own = tiny_config()
    own["datasets"]["acdc"]["train"] = {"iterations": 4}
    assert planned(own)["train"] == 2 and planned(own)["plateau_train"] == 1


def test_bad_raw_data_stops_the_dag_naming_the_file(tmp_path):
    raw = tmp_path / "raw"
    from mona.data.synthetic import generate

    generate("acdc", raw, patients=4, slices=(4, 4), size=32, seed=0)
    victim = sorted(raw.glob("training/patient002/*_gt.nii.gz"))[0]
    victim.write_bytes(b"not a nifti file at all")
    config = tiny_config(raw=str(raw))
    result = run_dag(tmp_path, config, "data/processed/acdc/manifest.json")
    assert result.returncode != 0
    log = result.stderr + "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert victim.name in log
    assert not (tmp_path / "data" / "processed" / "acdc").exists()
    leftovers = [p for p in (tmp_path / "data").rglob("*") if "tmp" in p.name]
    assert leftovers == []


def test_bad_config_key_is_named_before_anything_runs(tmp_path):
    config = tiny_config()
    config["train"]["iterashuns"] = 3
    result = run_dag(tmp_path, config, "-n", "results/table1.csv")
    assert result.returncode != 0
    assert "iterashuns" in result.stderr + result.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_paper_config_plans_the_full_grid_on_stand_in_paths(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for name in config["datasets"]:
        stand_in = tmp_path / name
        stand_in.mkdir()
        config["datasets"][name]["raw"] = str(stand_in)
    tables = ("results/table1.csv", "results/table4.csv")
    result = run_dag(tmp_path, config, *tables, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
    # per dataset: 14 methods x 3 ratios + UNet-F once; GCL, SCS, PLC, MONA train twice
    per_dataset = {"train": 14 * 3 + 1 + 4 * 3, "evaluate": 14 * 3 + 1}
    assert {rule: int(jobs[rule]) for rule in per_dataset} == {
        rule: 3 * count for rule, count in per_dataset.items()
    }
    assert int(jobs["preprocess"]) == 3 and "synthesize" not in jobs
    # the default target is everything the report shows: every table, figure and page
    result = run_dag(tmp_path, config, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
    for rule in ("ablation_table", "ablation_figure", "table5", "qualitative_figure"):
        assert rule in jobs, rule
    assert int(jobs["table_page"]) == 6  # Tables 1-5 and the beyond table
    assert int(jobs["class_table"]) == 3  # per-class pages of Tables 1, 4 and the beyond table
    assert int(jobs["training_curves"]) == 5  # one per (table, dataset)
    # the beyond table adds UniMatch (one stage) and BCP (two) on ACDC and LiTS at 3 ratios
    beyond = run_dag(tmp_path, config, "results/table_beyond.csv", "-n", "--quiet", "rules")
    assert beyond.returncode == 0, beyond.stderr[-3000:]
    beyond_jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", beyond.stdout, re.MULTILINE))
    # unet_f once, unet_l/gcl/scs/plc/unimatch/mona/bcp per ratio, +1 stage for gcl/scs/plc/mona/bcp
    assert int(beyond_jobs["train"]) == 2 * (1 + 7 * 3 + 5 * 3)
    assert int(jobs["ablation_figure"]) == 3  # Figures 7-9


def test_a_throwaway_baseline_from_a_plugin_file_is_planned_by_the_dag(tmp_path):
    plugin = tmp_path / "throwaway.py"
    plugin.write_text(
        "from mona.losses import supervised_loss\n"
        "from mona.method import Method\n"
        "from mona.registry import register\n\n\n"
        "@register('throwaway')\n"
        "class Throwaway(Method):\n"
        "    display_name = 'Throwaway'\n"
        "    defaults = {'weight': 0.1}\n\n"
        "    def __init__(self, ctx):\n"
        "        super().__init__(ctx)\n"
        "        self.net = ctx.build_backbone()\n\n"
        "    def train_step(self, batch, step):\n"
        "        logits = self.net(batch.labeled_image).logits\n"
        "        return {'loss': supervised_loss(logits, batch.labeled_mask)}\n\n"
        "    def inference_net(self):\n"
        "        return self.net\n"
    )
    config = tiny_config()
    config["plugins"] = [str(plugin)]
    config["tables"]["table1"]["methods"] = ["unet_l", "throwaway"]
    config["methods"] = {"throwaway": {"weight": 0.5}}
    result = run_dag(tmp_path, config, "-n", "results/table1.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "method=throwaway" in result.stdout
    assert "runs/acdc/throwaway/r10/s1/metrics.json" in result.stdout


def test_a_failed_retrain_never_leaves_its_old_scores_standing(tmp_path):
    config = tiny_config()
    config["tables"]["table1"]["methods"] = ["unet_l"]
    config["seeds"] = [0]
    assert run_dag(tmp_path, config, "results/table1.csv").returncode == 0
    diverging = tiny_config()
    diverging["tables"]["table1"]["methods"] = ["unet_l"]
    diverging["seeds"] = [0]
    diverging["train"].update(iterations=4, lr=1e12)
    failed = run_dag(tmp_path, diverging, "results/table1.csv")
    assert failed.returncode != 0
    assert not (tmp_path / "runs/acdc/unet_l/r10/s0/train/model.pt").exists()
    log = (tmp_path / "runs/acdc/unet_l/r10/train.train.log").read_text()
    assert "NonFiniteLossError" in log and "non-finite" in log  # the cause is in the rule's log
    # the old metrics.json is still on disk, but the table must not be built from it
    again = run_dag(tmp_path, diverging, "results/table1.csv", "-n", "--quiet", "rules")
    assert again.returncode == 0, again.stderr[-3000:]
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", again.stdout, re.M))
    assert planned.get("train") == "1" and planned.get("evaluate") == "1", again.stdout


def test_bad_values_are_refused_when_the_dag_is_planned_all_at_once(tmp_path):
    bad = tiny_config()
    bad["protocol"]["split"] = "papr"
    bad["protocol"]["asd"] = "both"
    bad["datasets"]["acdc"]["fractions"] = [0.9, 0.9, 0.9]
    bad["methods"]["mt"] = {"ema_decay": "high"}
    result = run_dag(tmp_path, bad, "results/table1.csv", "-n")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - config")]
    assert len(lines) == 4, result.stderr[-2000:]  # every problem, once each, one line each
    for key in ("protocol.split", "protocol.asd", "datasets.acdc.fractions", "methods.mt"):
        assert any(key in line for line in lines), key
    assert len(result.stderr) < 3000  # no schema dump


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("runs/acdc/mt~ema_decy=0.9/r10/s0/metrics.json", "no hyperparameter 'ema_decy'"),
        ("runs/acdc/mt~ema_decay=.nan/r10/s0/metrics.json", "must be finite"),
        ("runs/acdc/mt/r999/s0/metrics.json", "ratio folder r999 is not one this config plans"),
        ("runs/acdc/mt/r10.0/s0/metrics.json", "ratio folder r10.0 is not one this config plans"),
        ("runs/acdc/mt/r0/s0/metrics.json", "ratio folder r0 is not one this config plans"),
    ],
)
def test_targets_the_config_does_not_plan_are_refused(tmp_path, target, message):
    result = run_dag(tmp_path, tiny_config(), target, "-n")
    assert result.returncode != 0 and message in result.stderr + result.stdout


def test_every_datasets_bad_raw_files_are_reported_in_one_run(tmp_path):
    from mona.data.synthetic import generate

    victims = []
    config = tiny_config()
    for name, seed in (("acdc", 0), ("second", 1)):
        raw = tmp_path / f"raw_{name}"
        generate("acdc", raw, patients=4, slices=(4, 4), size=32, seed=seed)
        victim = sorted(raw.glob("training/patient003/*_gt.nii.gz"))[0]
        victim.write_bytes(b"not a nifti file at all")
        victims.append(victim)
        config["datasets"][name] = {**config["datasets"]["acdc"], "raw": str(raw)}
    config["tables"]["table1"]["datasets"] = ["acdc", "second"]
    result = run_dag(tmp_path, config, "results/table1.csv", "--cores", "1")  # one at a time
    assert result.returncode != 0
    log = result.stderr + "".join(p.read_text() for p in tmp_path.rglob("*.log"))
    for victim in victims:
        assert str(victim) in log or victim.name in log, victim
    assert str(victims[1].parent.parent.parent) in log


def test_a_config_file_stands_alone_without_the_embedded_defaults(tmp_path):
    # config/paper.yaml names no lr and `methods: {}`: merged over config/config.yaml it would
    # train at the embedded default's lr 0.05 with MONA's 32x32-scaled view size
    config = tiny_config()
    config["seeds"] = [0]
    config["convergence"] = None
    config["tables"] = {"table1": {"datasets": ["acdc"], "methods": ["unet_l"]}}
    del config["train"]["lr"]
    config["methods"] = {}
    config.pop("table5", None)
    # run where the Snakefile's own default is found, as from the repository's root
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    result = run_dag(tmp_path, config, "results/table1.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "runs/acdc/unet_l/r10/s0/train/train.json").read_text())
    assert record["train"]["lr"] == 0.01  # the engine's (the paper's), not the default's 0.05
    # an override on the command line still lands on top of the file in use
    result = run_dag(tmp_path, config, "results/table1.csv", "-n", "--config", "seeds=[0,1]")
    assert result.returncode == 0 and "runs/acdc/unet_l/r10/s1" in result.stdout


def test_ratios_labeling_the_same_patients_are_trained_once(tmp_path):
    # the default's MM-WHS has 15 training volumes: 1 % and 5 % both label one patient
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    result = run_dag(tmp_path, config, "results/table4.csv", "results/table1.csv", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = set(re.findall(r"runs/(\w+)/mt/r(\w+)/s0/train/model\.pt", result.stdout))
    assert trained == {("mmwhs", "1"), ("mmwhs", "10")} | {
        (dataset, ratio) for dataset in ("acdc", "lits") for ratio in ("1", "5", "10")
    }
