"""Per-class tables and training curves: what they compute from real metrics and log files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mona.errors import DataError
from mona.io import write_json
from mona.report.compare import readable
from mona.report.details import (
    class_pivot,
    class_scores,
    class_table,
    curve_runs,
    read_log,
    write_class_table,
    write_curves,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config():
    config = copy.deepcopy(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    config["ratios"] = [1, 5, 10]
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["unet_f", "mt", "bcp"]}
    return config


def run_metrics(
    root: Path, method, ratio, seed, dice, hd95, names=("RV", "Myo", "LV"), dataset="acdc"
):
    path = root / "runs" / dataset / method / f"r{ratio}" / f"s{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "dataset": dataset, "method": method, "ratio": ratio, "seed": seed,
            "class_names": list(names),
            "summary": {"dsc": None, "dsc_per_class": dice, "hd95_per_class": hd95},
        },
        path,
    )  # fmt: skip
    return path


def test_per_class_means_and_stds_over_seeds(tmp_path, config):
    paths = [
        run_metrics(tmp_path, "mt", "5", 0, [0.2, 0.4, 0.9], [10.0, None, 2.0]),
        run_metrics(tmp_path, "mt", "5", 1, [0.4, 0.0, 0.7], [20.0, None, 4.0]),
        run_metrics(tmp_path, "unet_f", "all", 0, [0.8, 0.8, 0.8], [1.0, 1.0, 1.0]),
        run_metrics(tmp_path, "cps", "5", 0, [0.1, 0.1, 0.1], [1.0, 1.0, 1.0]),  # not in table
    ]
    frame = class_table(class_scores("table1", paths, config), config, "table1")
    mt = frame[(frame.method_id == "mt")].set_index("class")
    assert list(mt.index) == ["RV", "Myo", "LV"]
    assert mt.loc["RV", "dsc_mean"] == pytest.approx(30.0)
    assert mt.loc["RV", "dsc_std"] == pytest.approx(14.1421, rel=1e-4)  # sample std of 20, 40
    assert mt.loc["LV", "hd95_mean"] == pytest.approx(3.0)
    assert pd.isna(mt.loc["Myo", "hd95_mean"])  # no seed had a distance for it
    assert set(mt.n_seeds) == {2}
    unet_f = frame[frame.method_id == "unet_f"]
    assert sorted(set(unet_f.ratio_pct)) == [1, 5, 10]  # the all-labels run at every ratio
    assert "cps" not in set(frame.method_id)
    pivot = class_pivot(frame, "acdc", "hd95")
    row = pivot[(pivot["labeled %"] == 5) & (pivot.method == "MT")].iloc[0]
    assert (row.RV, row.Myo, row.LV) == ("15.00 ± 7.07", "-", "3.00 ± 1.41")
    # order: ratio, then the table's method order
    assert list(pivot.method[pivot["labeled %"] == 5]) == ["UNet-F", "MT"]


def test_a_run_two_ratios_share_is_listed_under_both(tmp_path, config):
    # the default's MM-WHS: 15 training volumes, 1 % and 5 % both label one patient (r1)
    config["tables"]["table4"] = {"datasets": ["mmwhs"], "methods": ["mt"]}
    names = ("LV", "RV")
    paths = [
        run_metrics(tmp_path, "mt", r, 0, [d, d], [1.0, 1.0], names=names, dataset="mmwhs")
        for r, d in (("1", 0.5), ("10", 0.7))
    ]
    frame = class_table(class_scores("table4", paths, config), config, "table4")
    lv = frame[frame["class"] == "LV"].set_index("ratio_pct")
    assert list(lv.index) == [1, 5, 10]
    assert list(lv.dsc_mean) == pytest.approx([50.0, 50.0, 70.0])


def test_class_page_and_csv_are_written(tmp_path, config):
    paths = [run_metrics(tmp_path, "mt", "5", 0, [0.2, 0.4, 0.9], [10.0, 3.0, 2.0])]
    write_class_table("table1", paths, config, tmp_path / "c.csv", tmp_path / "c.html")
    page = (tmp_path / "c.html").read_text()
    assert "acdc: Dice % per class" in page and "<th>Myo</th>" in page and "None" not in page
    assert len(pd.read_csv(tmp_path / "c.csv")) == 3


def test_mismatched_class_names_are_reported_with_the_file(tmp_path, config):
    path = run_metrics(tmp_path, "mt", "5", 0, [0.2, 0.4], [1.0, 1.0], names=("a", "b", "c", "d"))
    with pytest.raises(DataError, match="metrics.json: 2 per-class scores"):
        class_scores("table1", [path], config)


def write_log(path: Path, steps, start_loss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"step": s, "loss": start_loss / s, "lr": 0.01 * (1 - s / 10)}) for s in steps
    ]
    path.write_text("\n".join(lines) + "\n")


def test_curves_read_every_stage_of_every_seed_at_the_middle_ratio(tmp_path, config, assert_drawn):
    paths = []
    for seed in (0, 1):
        paths.append(run_metrics(tmp_path, "bcp", "5", seed, [0.1] * 3, [1.0] * 3))
        run = paths[-1].parent
        write_log(run / "pretrain" / "log.jsonl", [1, 2, 3], 2.0)
        write_log(run / "selftrain" / "log.jsonl", [1, 2, 3, 4], 1.0)
    other = run_metrics(tmp_path, "bcp", "1", 0, [0.1] * 3, [1.0] * 3)  # not the middle ratio
    write_log(other.parent / "pretrain" / "log.jsonl", [1], 9.0)
    paths.append(run_metrics(tmp_path, "unet_f", "all", 0, [0.5] * 3, [1.0] * 3))
    write_log(paths[-1].parent / "train" / "log.jsonl", [1, 2], 1.0)
    curves = curve_runs(paths + [other], config, "table1", "acdc")
    assert sorted((seed, stage) for seed, stage, _ in curves["bcp"]) == [
        (0, "pretrain"), (0, "selftrain"), (1, "pretrain"), (1, "selftrain"),
    ]  # fmt: skip
    assert [len(log) for _, _, log in curves["unet_f"]] == [2]
    assert "mt" not in curves  # no run, no empty panel
    write_curves("table1", paths, config, "acdc", tmp_path / "c.png", tmp_path / "c.pdf")
    assert_drawn(tmp_path / "c.png")
    assert (tmp_path / "c.pdf").stat().st_size > 0


def test_a_corrupt_log_line_names_the_file_and_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss"\n')
    with pytest.raises(DataError, match=r"log.jsonl:2: not a JSON line"):
        read_log(log)


def test_report_columns_are_readable_and_booleans_say_yes_or_no():
    frame = pd.DataFrame(
        {"ratio_pct": [5], "reproduced_std": [1.0], "paper_within_seeds": [True], "odd_name": [1]}
    )
    shown = readable(frame)
    assert list(shown.columns) == [
        "labeled %", "reproduced std", "paper within seeds' range", "odd name",
    ]  # fmt: skip
    assert shown.iloc[0]["paper within seeds' range"] == "yes"
