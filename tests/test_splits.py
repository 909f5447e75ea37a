import pytest

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
