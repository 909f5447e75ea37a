"""MONA's ablations: run names, shared pre-training, tables and figures, and a tiny DAG run."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from mona.config import validate_schema
from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import read_json, write_json
from mona.registry import load_methods
from mona.report.ablations import (
    ablation_runs,
    config_problems,
    draw_sweeps,
    metrics_paths,
    pretrain_source,
    share_pretrain,
    shared_pretrain_regex,
    write_figure,
    write_table,
)
from mona.report.compare import write_comparison, write_seed_scores

REPO = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
RUN = "runs/{dataset}/{method}/r{ratio}/s{seed}"


def test_run_names_leave_out_default_values():
    runs = ablation_runs(DEFAULT, "table2")
    names = {run.label: run.method_id for run in runs}
    assert names["MONA"] == "mona"
    assert names["Vanilla"] == "mona~consistency=false+diversity=false+tailness=false"
    assert names["w/ tailness + diversity"] == "mona~consistency=false"
    assert len(runs) == 8 and len(set(names.values())) == 8
    table3 = {run.label: run.method_id for run in ablation_runs(DEFAULT, "table3")}
    assert table3["student weak / teacher strong"] == "mona"  # the paper's default pair
    assert table3["student strong / teacher weak"] == "mona~student_aug=strong+teacher_aug=weak"
    fig9 = [run.method_id for run in ablation_runs(DEFAULT, "fig9")]
    assert "mona" in fig9 and "mona~delta0=1.0" in fig9 and "mona~nn_k=10" in fig9
    paths = metrics_paths(DEFAULT, "table2", RUN, lambda dataset, method, ratio: str(ratio))
    assert len(paths) == 8 * len(DEFAULT["seeds"])
    assert "runs/acdc/mona/r5/s0/metrics.json" in paths


def test_only_fine_tuning_variants_share_a_pre_training_run():
    methods = load_methods()
    pattern = re.compile(shared_pretrain_regex(methods))
    shares = {
        "mona": False,
        "mona~k=3": False,
        "mona~k=3+view_set=12": False,
        "mona~lambda1=0.1": True,
        "mona~consistency=false+diversity=false": True,
        "mona~k=3+lambda1=0.1": True,
        "mt~lambda1=0.1": False,
    }
    for method, expected in shares.items():
        assert bool(pattern.fullmatch(method)) == expected, method
    assert pretrain_source("mona~lambda1=0.1", methods) == "mona"
    assert pretrain_source("mona~k=3+lambda1=0.1+tailness=false", methods) == "mona~k=3"


def test_a_shared_pre_training_holds_the_weights_the_variant_would_train(
    processed_acdc, tmp_path
):
    """Stage 1 never reads fine-tuning keys: same seed -> the very same weights."""
    manifest = read_json(processed_acdc / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    config = TrainConfig(
        iterations=2, batch_labeled=2, batch_unlabeled=2, image_size=32,
        widths=[4, 8, 16, 32, 64], checkpoint_every=100,
    )  # fmt: skip
    states = []
    for name, hparams in (("base", {}), ("variant", {"lambda1": 0.1, "tailness": False})):
        spec = RunSpec(
            dataset="acdc", method="mona", ratio="10", seed=0, stage="pretrain",
            processed_dir=processed_acdc, run_dir=tmp_path / name, split=split,
            labeled=labeled_subset(split, manifest, "10", 0),
            hparams={"proj_dim": 16, "view_size": 8, **hparams},
        )  # fmt: skip
        Trainer(spec, config).run()
        states.append(torch.load(tmp_path / name / "model.pt")["method_state"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def fake_metrics(root: Path, method: str, seed: int, dsc: float, asd: float) -> Path:
    path = root / method / f"s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "dataset": "acdc", "method": "mona", "run_method": method, "ratio": "5",
            "seed": seed, "code_version": "abc", "device": "cpu",
            "summary": {"dsc": dsc, "asd": asd, "asd_excluded": 0},
        },
        path,
    )  # fmt: skip
    return path


def test_table2_aggregates_seeds_beside_the_paper(tmp_path):
    paths = [
        fake_metrics(tmp_path, "mona", 0, 0.80, 1.0),
        fake_metrics(tmp_path, "mona", 1, 0.90, 3.0),
        fake_metrics(tmp_path, "mona~consistency=false+diversity=false+tailness=false", 0,
                     0.50, 6.0),  # fmt: skip
    ]
    frame = write_table("table2", DEFAULT, paths, tmp_path / "t.csv", tmp_path / "t.md")
    mona = frame[frame.method == "MONA"].iloc[0]
    assert (mona.dsc_mean, mona.asd_mean, mona.n_seeds) == (pytest.approx(85.0), 2.0, 2)
    assert mona.dsc_std == pytest.approx(7.0710678)  # sample std of 80 and 90
    assert (mona.paper_dsc, mona.paper_asd) == (88.8, 0.62)
    vanilla = frame[frame.method == "Vanilla"].iloc[0]
    assert vanilla.dsc_mean == pytest.approx(50.0) and vanilla.paper_dsc == 67.4
    assert not vanilla.tailness and not vanilla.consistency and not vanilla.diversity
    missing = frame[frame.method == "w/ tailness"].iloc[0]
    assert missing.n_seeds == 0 and missing.paper_dsc == 87.1
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# Table 2") and "| acdc | 5 | - | MONA | 85.0 ± 7.1 | 88.8 |" in md
    csv = pd.read_csv(tmp_path / "t.csv")
    assert {"tailness", "consistency", "diversity", "paper_dsc", "empty", "data"} <= set(
        csv.columns
    )
    assert (mona.dsc_min, mona.dsc_max) == (pytest.approx(80.0), pytest.approx(90.0))

    # the same seeds beside every cell of the paper's Table 2 in paper_vs_reproduced.csv
    write_seed_scores(DEFAULT, [], tmp_path / "seeds.csv")
    cells = write_comparison(
        DEFAULT, tmp_path / "seeds.csv", tmp_path / "c.csv", tmp_path / "c.html",
        {"table2": paths},
    )  # fmt: skip
    table2 = cells[cells.table == "table2"]
    assert len(table2) == 2 * 8  # every row of the paper's Table 2, DSC and ASD

    def cell(tailness, consistency, diversity, metric):
        on = (table2.tailness == tailness) & (table2.consistency == consistency)
        return table2[on & (table2.diversity == diversity) & (table2.metric == metric)].iloc[0]

    full = cell(1, 1, 1, "dsc")  # seeds 80 and 90 %, paper 88.8
    assert (full.n_seeds, full.seed_min, full.seed_max) == (2, 80.0, 90.0)
    assert full.delta == pytest.approx(85.0 - 88.8) and bool(full.paper_within_seeds)
    assert full.method_id == "mona"
    vanilla_asd = cell(0, 0, 0, "asd")  # one seed, 6.0 mm, paper 6.53
    assert vanilla_asd.delta == pytest.approx(6.0 - 6.53)
    assert not bool(vanilla_asd.paper_within_seeds)
    assert cell(1, 0, 0, "dsc").n_seeds == 0  # not run: kept, empty
    page = (tmp_path / "c.html").read_text()
    assert "table2: cells with reproduced seeds" in page and "88.8" in page


def test_a_sweep_figure_is_drawn_with_the_numbers_behind_it(tmp_path, assert_drawn):
    config = copy.deepcopy(DEFAULT)
    config["ablations"]["fig9"]["sweeps"] = {"delta0": [0.85, 0.97], "nn_k": [3, 5]}
    paths = [
        fake_metrics(tmp_path, "mona", 0, 0.80, 1.0),
        fake_metrics(tmp_path, "mona", 1, 0.84, 1.4),
        fake_metrics(tmp_path, "mona~delta0=0.85", 0, 0.70, 2.0),
    ]
    out = tmp_path / "figures"
    out.mkdir()
    frame = write_figure(
        "fig9", config, paths, out / "fig9.png", out / "fig9.pdf", out / "fig9.csv"
    )
    assert list(frame.value) == [0.85, 0.97, 3, 5] and list(frame.n_seeds) == [1, 2, 0, 2]
    assert frame.dsc_mean.tolist()[:2] == pytest.approx([70.0, 82.0])
    # one 4.2 x 3.4 in panel per swept parameter at 150 dpi, not blank
    assert assert_drawn(out / "fig9.png", min_colors=30).shape[:2] == (510, 1260)
    assert (out / "fig9.pdf").read_bytes()[:4] == b"%PDF"
    csv = pd.read_csv(out / "fig9.csv")
    assert csv.parameter.tolist() == ["delta0", "delta0", "nn_k", "nn_k"]
    # the paper's Figure 9 also sweeps the embedding size; the title says this one does not
    title = draw_sweeps("fig9", frame, config).get_suptitle()
    assert title.endswith("not swept in this config: embedding dimension m")


def test_config_problems_name_the_bad_entry():
    assert config_problems(DEFAULT) == []
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate_schema(paper)
    assert config_problems(paper) == []
    config = copy.deepcopy(DEFAULT)
    config["ablations"]["fig8"]["sweeps"]["lambda9"] = [1]
    config["ablations"]["table3"]["datasets"] = ["acdc", "brats"]
    problems = "\n".join(config_problems(config))
    assert "lambda9" in problems and "brats" in problems
    config = copy.deepcopy(DEFAULT)
    config["ablations"]["table3"]["pairs"][0]["student"] = "medium"
    with pytest.raises(Exception, match="medium"):
        validate_schema(config)


def test_the_dag_plans_one_pre_training_per_stage_one_setting(tmp_path):
    """A dry run of the embedded default's Table 2 and Figure 7 (k is a stage-1 setting)."""
    (tmp_path / "seeds.yaml").write_text("seeds: [0]\n")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "config.yaml"),
        str(tmp_path / "seeds.yaml"), "--dry-run", "results/table2.csv",
        "results/figures/fig7.png",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    # pre-training: mona and the 2 other values each of k and view_size (stage-1 settings);
    # fine-tuning: 8 component rows + those 4 sweep points
    assert int(jobs["train"]) == 5 + 12
    assert "runs/acdc/mona~view_size=4/r5/s0/pretrain/model.pt" in result.stdout
    assert "mona~view_size=8" not in result.stdout  # the configured value is plain `mona`
    assert int(jobs["share_pretrain"]) == 7  # every component row but full MONA
    assert (int(jobs["ablation_table"]), int(jobs["ablation_figure"])) == (1, 1)
    blocks = result.stdout.split("\nrule ")
    sharing = [b for b in blocks if b.startswith("share_pretrain:")]
    assert len(sharing) == 7
    assert all("input: runs/acdc/mona/r5/s0/pretrain/model.pt" in b for b in sharing)


def test_sharing_copies_the_model_and_its_record(tmp_path):
    source = tmp_path / "runs/acdc/mona/r5/s0/pretrain"
    source.mkdir(parents=True)
    torch.save({"w": torch.arange(3)}, source / "model.pt")
    write_json({"stage": "pretrain"}, source / "train.json")
    target = tmp_path / "runs/acdc/mona~lambda1=0.1/r5/s0/pretrain/model.pt"
    share_pretrain([str(source / "model.pt")], [str(target)], str(tmp_path / "share.log"))
    assert torch.equal(torch.load(target)["w"], torch.arange(3))
    assert read_json(target.with_name("train.json")) == {"stage": "pretrain"}
    assert "shared from" in (tmp_path / "share.log").read_text()
