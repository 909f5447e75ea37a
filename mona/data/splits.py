"""Patient-level train/val/test splits and labeled subsets.

Protocols (config `split.protocol`):
- `paper`: random patient fractions from `split.seed` (ACDC 60/20/20 patients = 120/40/40 scans,
  LiTS 100/31 volumes, MMWHS 15/5 volumes by default).
- `ssl4mis`: ACDC only, the fixed lists of the official code (70/10/20 patients) and its
  labeled order.
- a path to a JSON file `{"train": [...], "val": [...], "test": [...]}` of patient ids.

A labeled ratio always selects whole patients (at least one), nested across ratios for one seed:
a seeded permutation of the training patients, first `n`. Under `ssl4mis` the labeled patients
follow the official order, and `labeled: slices` reproduces its slice counts (23/68/136).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mona.errors import DataError

SSL4MIS_TRAIN = (
    "099,038,050,100,058,021,049,020,072,040,060,089,004,056,098,096,031,018,094,047,048,055,097,"
    "074,043,041,063,037,095,054,026,088,032,069,006,071,012,073,061,017,025,010,057,029,051,005,"
    "036,046,062,034,076,092,070,077,067,003,091,016,014,044,042,090,053,027,035,086,023,009,079,015"
).split(",")
SSL4MIS_VAL = "002,019,028,030,039,045,078,082,085,087".split(",")
SSL4MIS_TEST = (
    "001,007,008,011,013,022,024,033,052,059,064,065,066,068,075,080,081,083,084,093".split(",")
)
# Labeled slice counts of the official code for 1 / 5 / 10 %.
SSL4MIS_SLICES = {1: 23, 5: 68, 10: 136}
# Labeled patient counts of the official code for 1 / 5 / 10 % (`labeled: patients`).
SSL4MIS_PATIENTS = {1: 1, 5: 3, 10: 7}
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def split_sizes(patients: int, fractions: list[float] | tuple[float, ...]) -> tuple[int, int]:
    """Training and validation patient counts of the `paper` split of `patients` patients."""
    return round(fractions[0] * patients), round(fractions[1] * patients)


def labeled_count(ratio: float, train_patients: int, split_protocol: str) -> int:
    """How many whole patients a labeled `ratio` (percent) selects (`labeled: patients`)."""
    count = max(1, round(ratio / 100 * train_patients))
    if split_protocol == "ssl4mis":
        count = SSL4MIS_PATIENTS.get(int(ratio), count)
    return count


def _patients(manifest: dict) -> list[str]:
    return sorted({case["patient_id"] for case in manifest["cases"]})


def make_split(manifest: dict, protocol: str, fractions: list[float], seed: int) -> dict:
    """Train/val/test patient ids under `protocol` (see module docstring)."""
    patients = _patients(manifest)
    if protocol == "paper":
        if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise DataError([f"split.fractions must sum to 1, got {fractions}"])
        order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
        n_train, n_val = split_sizes(len(order), fractions)
        split = {
            "train": order[:n_train],
            "val": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }
    elif protocol == "ssl4mis":
        if manifest["dataset_kind"] != "acdc":
            raise DataError(["split.protocol 'ssl4mis' exists for ACDC only"])
        lists = {"train": SSL4MIS_TRAIN, "val": SSL4MIS_VAL, "test": SSL4MIS_TEST}
        split = {part: [f"patient{n}" for n in ids] for part, ids in lists.items()}
        missing = sorted(set(sum(split.values(), [])) - set(patients))
        if missing:
            raise DataError([f"ssl4mis split: patients missing from the data: {missing}"])
    else:
        split = _read_split_file(Path(protocol), patients)
    if not split["train"] or not split["test"]:
        raise DataError([f"split {protocol!r} leaves no training or no test patient"])
    return {"protocol": protocol, "seed": seed, **split}


def _read_split_file(path: Path, patients: list[str]) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError([f"{path}: cannot read split file ({error})"]) from error
    problems = []
    for part in ("train", "val", "test"):
        if not isinstance(data.get(part, []), list):
            problems.append(f"{path}: '{part}' must be a list of patient ids")
    unknown = sorted(
        set(sum((data.get(p, []) for p in ("train", "val", "test")), [])) - set(patients)
    )
    if unknown:
        problems.append(f"{path}: unknown patient ids {unknown}")
    if problems:
        raise DataError(problems)
    return {part: list(data.get(part, [])) for part in ("train", "val", "test")}


def labeled_subset(
    split: dict, manifest: dict, ratio: str, seed: int, mode: str = "patients"
) -> dict[str, Any]:
    """Which training slices are labeled for `ratio` (percent, or 'all') and `seed`.

    Returns {"patients": [...], "slices": {case_id: [slice indices]}}; every other training
    slice is unlabeled.
    """
    train = split["train"]
    cases = {c["case_id"]: c for c in manifest["cases"]}
    by_patient: dict[str, list[str]] = {}
    for case_id, case in cases.items():
        by_patient.setdefault(case["patient_id"], []).append(case_id)
    if ratio == "all":
        chosen = list(train)
    elif split["protocol"] == "ssl4mis":
        chosen = list(train)  # official labeled order is the list order
    else:
        chosen = [train[i] for i in np.random.default_rng([seed, 7]).permutation(len(train))]
    if ratio != "all" and mode == "patients":
        chosen = chosen[: labeled_count(float(ratio), len(train), split["protocol"])]
    slices: dict[str, list[int]] = {}
    if mode == "slices" and ratio != "all":
        if split["protocol"] != "ssl4mis":
            raise DataError(["labeled: slices is defined for split.protocol ssl4mis only"])
        budget = SSL4MIS_SLICES.get(int(float(ratio)), None)
        if budget is None:
            raise DataError([f"labeled: slices knows the ratios 1, 5, 10, not {ratio}"])
        patients_used = []
        for patient in chosen:
            if budget <= 0:
                break
            patients_used.append(patient)
            for case_id in sorted(by_patient[patient]):
                take = min(budget, cases[case_id]["slices"])
                if take > 0:
                    slices[case_id] = list(range(take))
                budget -= take
        chosen = patients_used
    else:
        for patient in chosen:
            for case_id in sorted(by_patient[patient]):
                slices[case_id] = list(range(cases[case_id]["slices"]))
    return {"ratio": ratio, "seed": seed, "mode": mode, "patients": chosen, "slices": slices}
