import json

import pytest

from mona.config import planned_train_patients, shared_ratio
from mona.data.splits import (
    SSL4MIS_TEST,
    SSL4MIS_TRAIN,
    SSL4MIS_VAL,
    labeled_subset,
    make_split,
)
from mona.errors import DataError


def fake_manifest(n_patients: int, kind: str = "acdc", slices: dict | None = None) -> dict:
    slices = slices or {}
    cases = []
    for i in range(1, n_patients + 1):
        patient = f"patient{i:03d}"
        for frame in ("01", "02"):
            count = slices.get(f"{i:03d}", (8, 8))[int(frame) - 1]
            cases.append(
                {"case_id": f"{patient}_frame{frame}", "patient_id": patient, "slices": count}
            )
    return {"dataset_kind": kind, "cases": cases}


def test_paper_split_is_deterministic_disjoint_and_sized_by_fractions():
    manifest = fake_manifest(100)
    a = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=3)
    b = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=3)
    c = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=4)
    assert a == b and a["train"] != c["train"]
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (60, 20, 20)
    parts = [set(a["train"]), set(a["val"]), set(a["test"])]
    assert set.union(*parts) == {f"patient{i:03d}" for i in range(1, 101)}
    assert sum(len(p) for p in parts) == 100


def test_labeled_subsets_are_whole_patients_nested_across_ratios_and_seeded():
    manifest = fake_manifest(100)
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    subsets = {r: labeled_subset(split, manifest, str(r), seed=1) for r in (1, 5, 10)}
    assert [len(subsets[r]["patients"]) for r in (1, 5, 10)] == [1, 3, 6]
    assert set(subsets[1]["patients"]) <= set(subsets[5]["patients"]) <= set(
        subsets[10]["patients"]
    )
    assert set(subsets[10]["patients"]) <= set(split["train"])
    # whole patients: both frames of each labeled patient, every slice
    assert sorted(subsets[5]["slices"]) == sorted(
        f"{p}_frame{f}" for p in subsets[5]["patients"] for f in ("01", "02")
    )
    assert all(s == list(range(8)) for s in subsets[5]["slices"].values())
    assert labeled_subset(split, manifest, "5", seed=1) == subsets[5]
    assert labeled_subset(split, manifest, "5", seed=2)["patients"] != subsets[5]["patients"]
    assert len(labeled_subset(split, manifest, "all", seed=1)["patients"]) == 60


def test_ssl4mis_split_and_official_slice_counts():
    # slices per frame of the first seven official labeled patients (PROTOCOL.md)
    counts = {
        "099": (16, 16), "038": (8, 8), "050": (10, 10), "100": (8, 8),
        "058": (9, 9), "021": (10, 10), "049": (7, 7),
    }  # fmt: skip
    manifest = fake_manifest(100, slices=counts)
    split = make_split(manifest, "ssl4mis", [0.6, 0.2, 0.2], seed=0)
    assert split["train"] == [f"patient{n}" for n in SSL4MIS_TRAIN]
    assert len(split["val"]) == len(SSL4MIS_VAL) == 10
    assert len(split["test"]) == len(SSL4MIS_TEST) == 20
    by_patient = {r: labeled_subset(split, manifest, str(r), 0)["patients"] for r in (1, 5, 10)}
    assert by_patient[5] == ["patient099", "patient038", "patient050"]
    assert len(by_patient[10]) == 7
    for ratio, expected in ((1, 23), (5, 68), (10, 136)):
        subset = labeled_subset(split, manifest, str(ratio), 0, mode="slices")
        assert sum(len(s) for s in subset["slices"].values()) == expected
    one = labeled_subset(split, manifest, "1", 0, mode="slices")["slices"]
    assert one == {"patient099_frame01": list(range(16)), "patient099_frame02": list(range(7))}


def test_split_errors_name_the_problem(tmp_path):
    manifest = fake_manifest(10)
    with pytest.raises(DataError, match="missing from the data"):
        make_split(manifest, "ssl4mis", [0.6, 0.2, 0.2], 0)
    with pytest.raises(DataError, match="ACDC only"):
        make_split(fake_manifest(10, kind="lits"), "ssl4mis", [0.6, 0.2, 0.2], 0)
    bad = tmp_path / "split.json"
    bad.write_text('{"train": ["patient001", "nobody"], "test": ["patient002"]}')
    with pytest.raises(DataError, match="nobody"):
        make_split(manifest, str(bad), [0.6, 0.2, 0.2], 0)
    good = tmp_path / "good.json"
    good.write_text('{"train": ["patient001"], "val": [], "test": ["patient002"]}')
    assert make_split(manifest, str(good), [0.6, 0.2, 0.2], 0)["train"] == ["patient001"]


def _config_with(dataset: dict, **switches) -> dict:
    return {"datasets": {"d": dataset}, "ratios": [1, 5, 10], "protocol": switches}


@pytest.mark.parametrize("patients", [20, 40, 60, 100])
def test_the_planned_training_patients_are_the_splits_own(patients):
    fractions = [0.25, 0.0, 0.75] if patients == 60 else [0.7634, 0.0, 0.2366]
    dataset = {"raw": "synthetic", "synthetic": {"patients": patients}, "fractions": fractions}
    split = make_split(fake_manifest(patients), "paper", fractions, seed=0)
    assert planned_train_patients(_config_with(dataset), "d") == len(split["train"])


def test_ratios_labeling_the_same_patients_share_the_smallest_ratios_runs(tmp_path):
    # 15 training patients: 1 % and 5 % both label round(0.75) = 1 patient, 10 % labels 2
    mmwhs = {"raw": "synthetic", "synthetic": {"patients": 60}, "fractions": [0.25, 0.0, 0.75]}
    config = _config_with(mmwhs)
    split = make_split(fake_manifest(60), "paper", [0.25, 0.0, 0.75], seed=0)
    subsets = {r: labeled_subset(split, fake_manifest(60), r, seed=1)["patients"] for r in "15"}
    assert subsets["1"] == subsets["5"]  # the same labeled patients, so the same training
    assert [shared_ratio(config, "d", r) for r in (1, 5, 10, 5.0)] == ["1", "1", "10", "1"]
    # each ratio trains on its own where the counts differ (60 training patients: 1, 3, 6)
    acdc = {"raw": "synthetic", "synthetic": {"patients": 100}, "fractions": [0.6, 0.2, 0.2]}
    assert [shared_ratio(_config_with(acdc), "d", r) for r in (1, 5, 10)] == ["1", "5", "10"]
    # or where the count is not known before the data, or labeled slices are counted instead
    real = {**mmwhs, "raw": str(tmp_path)}
    assert shared_ratio(_config_with(real), "d", 5) == "5"
    assert shared_ratio(_config_with(mmwhs, labeled="slices"), "d", 5) == "5"
    # a split file fixes the count: 15 training patients
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [f"p{i}" for i in range(15)], "test": ["q"]}))
    assert shared_ratio(_config_with(real, split=str(split_file)), "d", 5) == "1"
    assert shared_ratio(_config_with(real, split=str(tmp_path / "missing.json")), "d", 5) == "5"
