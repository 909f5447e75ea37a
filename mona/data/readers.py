"""Find the (image, label) pairs of a raw dataset folder in its own published layout.

Readers only look at file names; what is inside the files is checked by preprocessing. Every
layout problem (missing folder, no cases, an image without its label or the reverse, the same
case twice) is collected, so that a user sees them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mona.data.specs import NNUNET, RAW_KINDS, read_dataset_json
from mona.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")

_ACDC_FILE = re.compile(r"^(patient\d+)_frame(\d+)(_gt)?$")
_ACDC_PATIENT = re.compile(r"^patient\d+$")
_LITS_FILE = re.compile(r"^(volume|segmentation)-(\d+)$")
_MMWHS_FILE = re.compile(r"^(mr_train_\d+)_(image|label)$")
_NNUNET_IMAGE = re.compile(r"^(.+)_(\d{4})$")


@dataclass(frozen=True)
class RawCase:
    """One labelled 3D volume of a raw dataset."""

    case_id: str
    patient_id: str
    image: Path
    label: Path


@dataclass
class _Pair:
    patient_id: str
    images: list[Path]
    labels: list[Path]


def find_cases(kind: str, root: Path) -> list[RawCase]:
    """All labelled cases under ``root``, sorted; raises DataError listing every layout problem."""
    cases, problems = scan_cases(kind, root)
    if problems:
        raise DataError(problems)
    return cases


def scan_cases(kind: str, root: Path) -> tuple[list[RawCase], list[str]]:
    """Complete cases under ``root`` plus the layout problems found, without raising on them."""
    root = Path(root)
    if kind not in RAW_KINDS:
        return [], [f"dataset kind '{kind}' is unknown; expected one of {list(RAW_KINDS)}"]
    if not root.exists():
        return [], [f"{root}: raw data folder not found"]
    if not root.is_dir():
        return [], [f"{root}: raw data path is not a folder"]
    scanner = {
        "acdc": _scan_acdc,
        "lits": _scan_lits,
        "mmwhs": _scan_mmwhs,
        NNUNET: _scan_nnunet,
    }[kind]
    pairs, problems, example = scanner(root)
    cases = _complete_cases(pairs, problems)
    if not pairs and not problems:
        problems.append(f"{root}: no {kind} cases found (expected files like {example})")
    return cases, problems


def nifti_stem(path: Path) -> str | None:
    """File name without its NIfTI suffix, or None when the file is not NIfTI."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _nifti_files(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    found = []
    for path in sorted(paths):
        stem = nifti_stem(path)
        if stem is not None and path.is_file():
            found.append((path, stem))
    return found


def _complete_cases(pairs: dict[str, _Pair], problems: list[str]) -> list[RawCase]:
    cases = []
    for case_id, pair in pairs.items():
        if len(pair.images) > 1:
            problems.append(
                f"{pair.images[0]}: case {case_id} has several image files: "
                + ", ".join(p.name for p in pair.images)
            )
        if len(pair.labels) > 1:
            problems.append(
                f"{pair.labels[0]}: case {case_id} has several label files: "
                + ", ".join(p.name for p in pair.labels)
            )
        if not pair.labels and pair.images:
            problems.append(f"{pair.images[0]}: image has no label file (case {case_id})")
        if not pair.images and pair.labels:
            problems.append(f"{pair.labels[0]}: label has no image file (case {case_id})")
        if len(pair.images) == 1 and len(pair.labels) == 1:
            cases.append(RawCase(case_id, pair.patient_id, pair.images[0], pair.labels[0]))
    return sorted(cases, key=lambda case: case.case_id)


def _add(pairs: dict[str, _Pair], case_id: str, patient_id: str, path: Path, is_label: bool):
    pair = pairs.setdefault(case_id, _Pair(patient_id, [], []))
    (pair.labels if is_label else pair.images).append(path)


def _scan_acdc(root: Path) -> tuple[dict[str, _Pair], list[str], str]:
    """ACDC: ``{training,testing}/patientXXX/patientXXX_frameYY[_gt].nii.gz``.

    A ``testing/`` folder holding no ``_gt`` file at all is the unlabelled release and is skipped.
    ``root`` may also be a ``training/`` folder itself.
    """
    folders = [root / name for name in ("training", "testing") if (root / name).is_dir()]
    if not folders and any(_ACDC_PATIENT.match(p.name) for p in root.iterdir() if p.is_dir()):
        folders = [root]
    pairs: dict[str, _Pair] = {}
    for folder in folders:
        files = []
        for patient_dir in sorted(folder.iterdir()):
            if patient_dir.is_dir() and _ACDC_PATIENT.match(patient_dir.name):
                files.extend(_nifti_files(patient_dir.iterdir()))
        matches = [(path, _ACDC_FILE.match(stem)) for path, stem in files]
        matches = [(path, match) for path, match in matches if match]
        if folder.name == "testing" and not any(match.group(3) for _, match in matches):
            continue
        for path, match in matches:
            patient, frame, gt = match.groups()
            _add(pairs, f"{patient}_frame{frame}", patient, path, is_label=bool(gt))
    return pairs, [], "training/patient001/patient001_frame01.nii.gz + _gt"


def _scan_lits(root: Path) -> tuple[dict[str, _Pair], list[str], str]:
    """LiTS: ``volume-N.nii`` + ``segmentation-N.nii`` anywhere below root (batch folders)."""
    numbered = []
    for path, stem in _nifti_files(root.rglob("*")):
        match = _LITS_FILE.match(stem)
        if match:
            numbered.append((int(match.group(2)), match.group(1) == "segmentation", path))
    pairs: dict[str, _Pair] = {}
    for number, is_label, path in sorted(numbered):
        case_id = f"lits_{number:03d}"
        _add(pairs, case_id, case_id, path, is_label)
    return pairs, [], "volume-0.nii + segmentation-0.nii"


def _scan_mmwhs(root: Path) -> tuple[dict[str, _Pair], list[str], str]:
    """MM-WHS MRI: ``mr_train_10XX_image.nii.gz`` + ``mr_train_10XX_label.nii.gz`` below root."""
    pairs: dict[str, _Pair] = {}
    for path, stem in _nifti_files(root.rglob("*")):
        match = _MMWHS_FILE.match(stem)
        if match:
            case_id = match.group(1)
            _add(pairs, case_id, case_id, path, is_label=match.group(2) == "label")
    return pairs, [], "mr_train_1001_image.nii.gz + mr_train_1001_label.nii.gz"


def _scan_nnunet(root: Path) -> tuple[dict[str, _Pair], list[str], str]:
    """nnU-Net v2: ``imagesTr/{case}_0000{ending}``, ``labelsTr/{case}{ending}``, dataset.json."""
    example = "imagesTr/case_0000.nii.gz + labelsTr/case.nii.gz + dataset.json"
    try:
        meta = read_dataset_json(root / "dataset.json")
    except DataError as error:
        return {}, list(error.messages), example
    problems = []
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_SUFFIXES:
        problems.append(
            f"{root / 'dataset.json'}: file_ending {ending!r} is not supported; "
            "only NIfTI (.nii.gz, .nii) is read"
        )
        return {}, problems, example
    channels = meta.get("channel_names", meta.get("modality", {"0": "unknown"}))
    if not isinstance(channels, dict) or len(channels) != 1:
        count = len(channels) if isinstance(channels, dict) else channels
        problems.append(
            f"{root / 'dataset.json'}: {count} input channels declared in channel_names; "
            "only single-channel datasets are supported"
        )
    pairs: dict[str, _Pair] = {}
    missing = [root / name for name in ("imagesTr", "labelsTr") if not (root / name).is_dir()]
    if missing:
        problems += [f"{path}: folder not found (an nnU-Net folder needs it)" for path in missing]
        return pairs, problems, example
    extra_channels = []
    for path in sorted((root / "imagesTr").iterdir()):
        if not path.name.endswith(ending):
            continue
        match = _NNUNET_IMAGE.match(path.name[: -len(ending)])
        if not match:
            problems.append(f"{path}: image name lacks the _0000 channel suffix")
        elif match.group(2) != "0000":
            extra_channels.append(path)
        else:
            _add(pairs, match.group(1), match.group(1), path, is_label=False)
    if extra_channels:
        channel = extra_channels[0].name[-len(ending) - 4 : -len(ending)]
        problems.append(
            f"{extra_channels[0]}: channel {channel} found ({len(extra_channels)} such files); "
            "only single-channel datasets are supported"
        )
    for path in sorted((root / "labelsTr").iterdir()):
        if path.name.endswith(ending):
            case_id = path.name[: -len(ending)]
            _add(pairs, case_id, case_id, path, is_label=True)
    return pairs, problems, example
