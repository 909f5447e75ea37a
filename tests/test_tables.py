"""Tables aggregate seeds by hand-checkable means and carry the paper's numbers."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mona.errors import DataError
from mona.io import write_json
from mona.report.tables import lr_text, write_table

REPO = Path(__file__).resolve().parent.parent


def fake_metrics(path: Path, dataset, method, ratio, seed, dsc, asd, excluded=0, **recorded):
    write_json(
        {
            **recorded,
            "dataset": dataset,
            "method": method,
            "ratio": ratio,
            "seed": seed,
            "code_version": "abc",
            "device": "cpu",
            "summary": {"dsc": dsc, "asd": asd, "asd_excluded": excluded},
        },
        path,
    )
    return path


def test_table_means_stds_and_paper_columns(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = copy.deepcopy(config)
    config["ratios"] = [5]
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["unet_f", "mt"]}
    paths = [
        fake_metrics(tmp_path / "a.json", "acdc", "mt", "5", 0, 0.80, 2.0, excluded=1),
        fake_metrics(tmp_path / "b.json", "acdc", "mt", "5", 1, 0.90, 4.0),
        fake_metrics(tmp_path / "c.json", "acdc", "mt", "5", 2, 0.70, None, excluded=3),
        fake_metrics(tmp_path / "d.json", "acdc", "unet_f", "all", 0, 0.95, 1.0),
        fake_metrics(tmp_path / "e.json", "acdc", "mt", "10", 0, 0.10, 9.0),  # other ratio
    ]
    frame = write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    mt = frame[frame.method_id == "mt"].iloc[0]
    assert mt.method == "MT" and mt.n_seeds == 3
    assert mt.dsc_mean == pytest.approx(80.0)
    assert mt.dsc_std == pytest.approx(10.0)  # sample std of 80, 90, 70
    assert mt.asd_mean == pytest.approx(3.0)  # the excluded-everything seed has no ASD
    assert mt.asd_excluded == 4
    assert (mt.paper_dsc, mt.paper_asd) == (58.3, 11.2)  # paper Table 1
    unet_f = frame[frame.method_id == "unet_f"].iloc[0]
    assert unet_f.n_seeds == 1 and unet_f.dsc_mean == pytest.approx(95.0)
    assert pd.isna(unet_f.dsc_std)
    csv = pd.read_csv(tmp_path / "t.csv")
    assert {"empty", "asd", "units", "split", "data", "paper_dsc"} <= set(csv.columns)
    assert set(csv.data) == {"synthetic"} and set(csv["empty"]) == {"strict"}
    md = (tmp_path / "t.md").read_text()
    assert "empty=strict" in md and "| acdc | 5 | - | MT | 80.0 ± 10.0 | 58.3 |" in md


def test_ratios_that_label_the_same_patients_are_named(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["tables"]["table4"] = {"datasets": ["mmwhs"], "methods": ["mt"]}
    # 15 training volumes: 1 % and 5 % label round(0.75) = 1 = max(1, 0), trained once in r1
    patients, dsc = {"1": 1, "10": 2}, {"1": 0.5, "10": 0.6}
    paths = [
        fake_metrics(
            tmp_path / f"{r}_{s}.json", "mmwhs", "mt", r, s, dsc[r], 1.0, labeled_patients=n
        )
        for r, n in patients.items()
        for s in (0, 1)
    ]
    frame = write_table("table4", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    assert list(frame.labeled_patients) == [1, 1, 2]
    assert list(frame.n_seeds) == [2, 2, 2]  # the 5 % row shows the 1 % runs
    assert list(frame.dsc_mean) == pytest.approx([50.0, 50.0, 60.0])
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# Table 4: MM-WHS")
    assert "mmwhs: 1 % and 5 % label the same 1 patient(s) per seed" in md
    assert "10 %" not in md.split("| dataset")[0]
    assert "| mmwhs | 5 | 1 | MT | 50.0 ± 0.0 |" in md
    assert "| mmwhs | 10 | 2 | MT | 60.0 ± 0.0 |" in md


def test_rows_carry_the_switches_their_runs_recorded_not_the_config(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["ratios"] = [5]
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["mt", "unet_l"]}
    recorded = {
        "protocol": {"split": "paper", "labeled": "patients", "checkpoint": "last"},
        "evaluation": {"asd": "directed", "units": "voxel", "empty": "official"},
        "train": {"schedule": "step"},
        "iterations": 7,
    }
    paths = [
        fake_metrics(tmp_path / f"{s}.json", "acdc", "mt", "5", s, 0.5, 1.0, **recorded)
        for s in (0, 1)
    ]
    frame = write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    mt = frame[frame.method_id == "mt"].iloc[0]
    assert (mt.asd, mt.units, mt["empty"], mt.schedule, mt.iterations) == (
        "directed", "voxel", "official", "step", 7
    )
    unet_l = frame[frame.method_id == "unet_l"].iloc[0]  # no runs: the config's settings
    assert (unet_l.asd, unet_l["empty"], unet_l.schedule) == ("symmetric", "strict", "poly")
    md = (tmp_path / "t.md").read_text()
    assert "empty=acdc: official/strict" in md and "voxels/mm" in md

    mixed = {**recorded, "evaluation": {**recorded["evaluation"], "empty": "strict"}}
    paths.append(fake_metrics(tmp_path / "2.json", "acdc", "mt", "5", 2, 0.5, 1.0, **mixed))
    with pytest.raises(DataError, match=r"different empty \(official, strict\)") as error:
        write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    assert "2.json" in str(error.value)


def test_a_row_above_the_all_labels_bound_beyond_its_spread_is_flagged(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["ratios"] = [5]
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["unet_f", "mt", "em"]}
    paths = [
        fake_metrics(tmp_path / "f0.json", "acdc", "unet_f", "all", 0, 0.50, 1.0),
        fake_metrics(tmp_path / "f1.json", "acdc", "unet_f", "all", 1, 0.52, 1.0),
        # MT: mean 60, std 2 -> 10 points above the bound, more than 2 + 2: flagged
        fake_metrics(tmp_path / "m0.json", "acdc", "mt", "5", 0, 0.58, 1.0),
        fake_metrics(tmp_path / "m1.json", "acdc", "mt", "5", 1, 0.62, 1.0),
        # EM: mean 55, std 7.07 -> 4 points above, within its spread + 2: not flagged
        fake_metrics(tmp_path / "e0.json", "acdc", "em", "5", 0, 0.50, 1.0),
        fake_metrics(tmp_path / "e1.json", "acdc", "em", "5", 1, 0.60, 1.0),
    ]
    frame = write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    flags = dict(zip(frame.method_id, frame.flag, strict=True))
    assert flags["unet_f"] == "" and flags["em"] == ""
    assert "acdc: MT at 5 % (60.0 DSC) beats UNet-F" in flags["mt"] and "(51.0)" in flags["mt"]
    csv = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert csv.flag.tolist() == frame.flag.tolist()
    md = (tmp_path / "t.md").read_text()
    assert "| MT (!) |" in md and "(!) 1 row(s) cannot be trusted:" in md
    assert "| EM |" in md


@pytest.mark.parametrize(("longer_dsc", "flagged"), [(0.60, True), (0.515, False)])
def test_a_bound_short_of_its_plateau_flags_the_table(tmp_path, longer_dsc, flagged):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["ratios"] = [1, 5]
    config["convergence"] = {"multiple": 4, "tolerance": 2.0}
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["unet_f", "mt"]}
    paths = [
        fake_metrics(tmp_path / "f0.json", "acdc", "unet_f", "all", 0, 0.50, 1.0, iterations=150),
        fake_metrics(tmp_path / "f1.json", "acdc", "unet_f", "all", 1, 0.58, 1.0, iterations=150),
        fake_metrics(tmp_path / "m0.json", "acdc", "mt", "1", 0, 0.40, 1.0, iterations=150),
        fake_metrics(tmp_path / "m1.json", "acdc", "mt", "5", 0, 0.45, 1.0, iterations=150),
    ]
    # seed 0 at 4x: 60 % is 10 points above its own 50 % (flagged); 51.5 % is 1.5 (not)
    longer = fake_metrics(tmp_path / "x4.json", "acdc", "unet_f", "all", 0, longer_dsc, 1.0,
                          iterations=600)  # fmt: skip
    frame = write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config, [longer])
    bound = frame[frame.method_id == "unet_f"]
    assert bound.plateau_dsc.tolist() == [pytest.approx(100 * longer_dsc)] * 2
    assert bound.plateau_iterations.tolist() == [600, 600]
    assert frame[frame.method_id == "mt"].plateau_dsc.isna().all()
    md = (tmp_path / "t.md").read_text()
    assert f"trained 600 iterations reaches {100 * longer_dsc:.1f} DSC" in md
    if flagged:
        assert all("is not at its plateau: seed 0 reaches 60.0 DSC at 600 iterations against "
                   "50.0 here, 10.0 points" in flag for flag in bound.flag)  # fmt: skip
        # one sentence for the bound, though its row repeats at each ratio
        assert "(!) 1 row(s) cannot be trusted:" in md and md.count("not at its plateau") == 1
    else:
        assert (bound.flag == "").all() and "(!)" not in md


def test_a_table_without_a_plateau_check_says_so(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["ratios"] = [5]
    config["convergence"] = None
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["unet_f"]}
    paths = [fake_metrics(tmp_path / "f0.json", "acdc", "unet_f", "all", 0, 0.5, 1.0)]
    write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    assert "was not checked against a longer run" in (tmp_path / "t.md").read_text()


def test_the_beyond_table_quotes_each_methods_own_paper_and_names_the_source(tmp_path):
    config = copy.deepcopy(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    config["ratios"] = [1, 5]
    assert "table_beyond" in config["tables"]
    config["tables"]["table_beyond"] = {
        "datasets": ["acdc", "lits"], "methods": ["unet_f", "unimatch", "bcp", "mona"],
    }  # fmt: skip
    paths = [
        fake_metrics(tmp_path / "a.json", "acdc", "unimatch", "1", 0, 0.60, 2.0),
        fake_metrics(tmp_path / "b.json", "acdc", "unet_f", "all", 0, 0.90, 1.0),
    ]
    frame = write_table("table_beyond", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    row = frame[(frame.method_id == "unimatch") & (frame.ratio_pct == 1)].iloc[0]
    assert (row.method, row.dsc_mean, row.paper_dsc) == ("UniMatch", 60.0, 85.4)
    assert "UniMatch official medical code README" in row.paper_source
    mona = frame[(frame.method_id == "mona") & (frame.dataset == "acdc") & (frame.ratio_pct == 5)]
    assert mona.paper_dsc.iloc[0] == 88.8  # MONA's own Table 1
    lits = frame[(frame.dataset == "lits") & (frame.method_id == "unimatch")]
    assert lits.paper_dsc.isna().all()  # UniMatch reports no LiTS
    md = (tmp_path / "t.md").read_text()
    assert "| reported DSC |" in md and "Reported numbers" in md
    assert "- UniMatch: UniMatch official medical code README" in md
    assert "- MONA: MONA paper Table 1" in md


def test_a_dataset_scored_on_two_different_test_sets_raises_naming_the_files(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["ratios"] = [5]
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["mt", "unet_l"]}
    same = [
        fake_metrics(tmp_path / f"mt{s}.json", "acdc", "mt", "5", s, 0.5, 1.0,
                     test_data_fingerprint="aaaa")
        for s in (0, 1)
    ]  # fmt: skip
    frame = write_table("table1", same, tmp_path / "t.csv", tmp_path / "t.md", config)
    assert set(frame.test_data) == {"aaaa"}
    # another method's run scored after the data were regenerated differently
    other = fake_metrics(tmp_path / "unet_l0.json", "acdc", "unet_l", "5", 0, 0.4, 1.0,
                         test_data_fingerprint="bbbb")  # fmt: skip
    with pytest.raises(DataError, match="different test data") as error:
        write_table("table1", [*same, other], tmp_path / "t.csv", tmp_path / "t.md", config)
    assert "unet_l0.json" in str(error.value) and "mt0.json" in str(error.value)


def test_a_row_names_the_lr_each_of_its_stages_started_from(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["ratios"] = [5]
    config["tables"]["table1"] = {"datasets": ["acdc"], "methods": ["unet_l", "gcl", "mt"]}
    train = {"schedule": "poly", "lr": 0.2, "stage_lr": {"pretrain": 0.01}}
    paths = [
        fake_metrics(tmp_path / "g.json", "acdc", "gcl", "5", 0, 0.5, 1.0, train=train,
                     stage="finetune"),
        fake_metrics(tmp_path / "u.json", "acdc", "unet_l", "5", 0, 0.5, 1.0, train=train,
                     stage="train"),
    ]  # fmt: skip
    frame = write_table("table1", paths, tmp_path / "t.csv", tmp_path / "t.md", config)
    lr = dict(zip(frame.method_id, frame.lr, strict=True))
    # GCL's stage 1 started at its own lr; UNet-L has no stage it could apply to; MT has no
    # runs, so the config's lr stands
    assert lr == {"unet_l": "0.2", "gcl": "0.2 (pretrain 0.01)", "mt": f"{config['train']['lr']:g}"}
    assert "lr=acdc: 0.2/0.2 (pretrain 0.01)" in (tmp_path / "t.md").read_text()
    # a method's own stage lr wins; a last stage with its own lr names the earlier one's
    both = {"lr": 0.2, "stage_lr": {"pretrain": 0.01, "gcl.pretrain": 0.2, "finetune": 0.05}}
    assert lr_text(both, "gcl", "finetune") == "0.05 (pretrain 0.2)"
    assert lr_text(both, "mona", "finetune") == "0.05 (pretrain 0.01)"
    assert lr_text(both, "mona", "pretrain") == "0.01"  # Table 5's pre-training-only rows
