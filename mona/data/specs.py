"""What each dataset's label files mean: label codes, class order, class names, intensity clip.

The class index of a label code is its position in ``label_codes``; index 0 is background.

MM-WHS class order: the paper reports only the mean over its seven structures, so any fixed
order gives the same tables; the harness uses ascending label code (205 myocardium, 420 left
atrium, 500 left ventricle, 550 right atrium, 600 right ventricle, 820 ascending aorta,
850 pulmonary artery), the order most public MM-WHS preprocessing scripts use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mona.errors import DataError

NNUNET = "nnunet"


@dataclass(frozen=True)
class DatasetSpec:
    """Label semantics of one dataset kind."""

    kind: str
    label_codes: tuple[int, ...]  # label_codes[class_index] = value stored in the label file
    class_names: tuple[str, ...]  # class_names[class_index]; index 0 is background
    hu_clip: tuple[float, float] | None = None  # CT window applied before min-max normalisation

    def __post_init__(self) -> None:
        if len(self.label_codes) != len(self.class_names):
            raise ValueError("label_codes and class_names must have the same length")
        if len(set(self.label_codes)) != len(self.label_codes):
            raise ValueError(f"duplicate label codes in {self.label_codes}")
        if not self.label_codes or self.label_codes[0] != 0:
            raise ValueError("label code 0 (background) must be class 0")

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.label_codes)

    @property
    def code_to_class(self) -> dict[int, int]:
        return {code: index for index, code in enumerate(self.label_codes)}


DATASET_KINDS: dict[str, DatasetSpec] = {
    "acdc": DatasetSpec(
        kind="acdc",
        label_codes=(0, 1, 2, 3),
        class_names=("background", "RV", "Myo", "LV"),
    ),
    "lits": DatasetSpec(
        kind="lits",
        label_codes=(0, 1, 2),
        class_names=("background", "liver", "tumour"),
        hu_clip=(-200.0, 250.0),
    ),
    "mmwhs": DatasetSpec(
        kind="mmwhs",
        label_codes=(0, 205, 420, 500, 550, 600, 820, 850),
        class_names=("background", "Myo", "LA", "LV", "RA", "RV", "AAo", "PA"),
    ),
}

RAW_KINDS: tuple[str, ...] = (*DATASET_KINDS, NNUNET)


def nnunet_spec(root: Path) -> DatasetSpec:
    """Build the spec of an nnU-Net v2 folder from its ``dataset.json``.

    nnU-Net stores class indices directly (``"labels": {"background": 0, "liver": 1}``), so the
    codes must be 0..N-1; region-based label definitions (lists of values) are not supported.
    """
    path = Path(root) / "dataset.json"
    meta = read_dataset_json(path)
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError([f"{path}: 'labels' must be a non-empty mapping of name -> integer"])
    problems = []
    by_code: dict[int, str] = {}
    for name, code in labels.items():
        if isinstance(code, bool) or not isinstance(code, int):
            problems.append(
                f"{path}: label '{name}' has value {code!r}; only one integer per label is "
                "supported (region-based labels are not)"
            )
        elif code in by_code:
            problems.append(f"{path}: labels '{by_code[code]}' and '{name}' share value {code}")
        else:
            by_code[code] = name
    if not problems and sorted(by_code) != list(range(len(by_code))):
        problems.append(
            f"{path}: label values must be 0..{len(by_code) - 1} with 0 = background, "
            f"found {sorted(by_code)}"
        )
    if problems:
        raise DataError(problems)
    codes = tuple(sorted(by_code))
    return DatasetSpec(kind=NNUNET, label_codes=codes, class_names=tuple(by_code[c] for c in codes))


def read_dataset_json(path: Path) -> dict:
    """Read an nnU-Net ``dataset.json``, turning every failure into a DataError naming it."""
    if not path.is_file():
        raise DataError([f"{path}: dataset.json not found (an nnU-Net folder needs one)"])
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError([f"{path}: cannot read dataset.json ({error})"]) from error
    if not isinstance(meta, dict):
        raise DataError([f"{path}: dataset.json must hold a JSON object"])
    return meta


def spec_for(kind: str, raw_root: Path) -> DatasetSpec:
    """The spec of ``kind``; for nnU-Net folders it is read from the folder's dataset.json."""
    if kind == NNUNET:
        return nnunet_spec(raw_root)
    if kind not in DATASET_KINDS:
        raise DataError([f"dataset kind '{kind}' is unknown; expected one of {list(RAW_KINDS)}"])
    return DATASET_KINDS[kind]
