"""Readers find every labelled case of each raw layout and report layout problems by file."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mona.data.readers import find_cases, scan_cases
from mona.data.specs import nnunet_spec
from mona.data.synthetic import generate
from mona.errors import DataError

TINY = dict(slices=(4, 4), size=16, seed=0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    for kind, patients in {"acdc": 3, "lits": 3, "mmwhs": 3}.items():
        generate(kind, root / kind, patients=patients, **TINY)
    return {kind: root / kind for kind in ("acdc", "lits", "mmwhs")}


def es_frame(patient_dir: Path) -> int:
    info = dict(line.split(": ") for line in (patient_dir / "Info.cfg").read_text().splitlines())
    return int(info["ES"])


def test_acdc_cases_are_ed_and_es_frames_of_each_patient(raw):
    cases = find_cases("acdc", raw["acdc"])
    expected = []
    for number in (1, 2, 3):
        patient = f"patient{number:03d}"
        for frame in sorted((1, es_frame(raw["acdc"] / "training" / patient))):
            expected.append((f"{patient}_frame{frame:02d}", patient))
    assert [(c.case_id, c.patient_id) for c in cases] == expected
    for case in cases:
        assert case.image.name == f"{case.case_id}.nii.gz"
        assert case.label.name == f"{case.case_id}_gt.nii.gz"
    assert find_cases("acdc", raw["acdc"] / "training") == cases  # the training folder itself


def test_acdc_reads_a_labelled_testing_folder_and_skips_an_unlabelled_one(raw, tmp_path):
    root = tmp_path / "acdc"
    shutil.copytree(raw["acdc"], root)
    testing = root / "testing" / "patient101"
    testing.mkdir(parents=True)
    for source in (root / "training" / "patient003").glob("*.nii.gz"):
        shutil.copy(source, testing / source.name.replace("patient003", "patient101"))
    assert [c.patient_id for c in find_cases("acdc", root)][-2:] == ["patient101"] * 2
    for gt in testing.glob("*_gt.nii.gz"):
        gt.unlink()
    patients = {c.patient_id for c in find_cases("acdc", root)}
    assert patients == {"patient001", "patient002", "patient003"}


def test_lits_accepts_gzip_and_sorts_numerically(raw, tmp_path):
    root = tmp_path / "lits"
    root.mkdir()
    for n, new in ((0, 10), (1, 2), (2, 0)):
        for stem in ("volume", "segmentation"):
            data = (raw["lits"] / f"{stem}-{n}.nii").read_bytes()
            if new == 10:  # one case gzipped, inside a batch sub-folder like the download
                (root / "batch2").mkdir(exist_ok=True)
                (root / "batch2" / f"{stem}-{new}.nii.gz").write_bytes(gzip.compress(data))
            else:
                (root / f"{stem}-{new}.nii").write_bytes(data)
    (root / "test-volume-3.nii").write_bytes(b"")  # unlabelled test volumes are not cases
    cases = find_cases("lits", root)
    assert [c.case_id for c in cases] == ["lits_000", "lits_002", "lits_010"]
    assert [c.patient_id for c in cases] == [c.case_id for c in cases]
    assert cases[2].image == root / "batch2" / "volume-10.nii.gz"
    assert cases[2].label == root / "batch2" / "segmentation-10.nii.gz"


def test_mmwhs_accepts_plain_and_gzipped_nifti(raw, tmp_path):
    root = tmp_path / "mmwhs"
    shutil.copytree(raw["mmwhs"], root)
    label = root / "mr_train_1002_label.nii.gz"
    (root / "mr_train_1002_label.nii").write_bytes(gzip.decompress(label.read_bytes()))
    label.unlink()
    cases = find_cases("mmwhs", root)
    assert [c.case_id for c in cases] == ["mr_train_1001", "mr_train_1002", "mr_train_1003"]
    assert cases[1].label.name == "mr_train_1002_label.nii"


def write_nnunet(root: Path, cases=("liver_1", "liver_0"), channels=None, labels=None) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {
        "channel_names": channels or {"0": "CT"},
        "labels": labels or {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in cases:
        image = nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4))
        nib.save(image, str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)),
                 str(root / "labelsTr" / f"{case}.nii.gz"))


def test_nnunet_cases_and_labels_from_dataset_json(tmp_path):
    write_nnunet(tmp_path, labels={"background": 0, "tumour": 2, "liver": 1})
    cases = find_cases("nnunet", tmp_path)
    assert [c.case_id for c in cases] == ["liver_0", "liver_1"]
    assert cases[0].image == tmp_path / "imagesTr" / "liver_0_0000.nii.gz"
    assert cases[0].label == tmp_path / "labelsTr" / "liver_0.nii.gz"
    spec = nnunet_spec(tmp_path)
    assert spec.label_codes == (0, 1, 2)
    assert spec.class_names == ("background", "liver", "tumour")  # ordered by label value


def test_nnunet_multi_channel_is_refused_with_a_reason(tmp_path):
    write_nnunet(tmp_path, channels={"0": "T1", "1": "T2"})
    shutil.copy(tmp_path / "imagesTr" / "liver_0_0000.nii.gz",
                tmp_path / "imagesTr" / "liver_0_0001.nii.gz")
    with pytest.raises(DataError) as error:
        find_cases("nnunet", tmp_path)
    assert all("only single-channel datasets are supported" in m for m in error.value.messages)
    assert any("dataset.json" in m for m in error.value.messages)
    assert any("liver_0_0001.nii.gz" in m for m in error.value.messages)


@pytest.mark.parametrize(
    "labels, expected",
    [({"background": 0, "liver": 2}, "must be 0..1"),
     ({"background": 0, "region": [1, 2]}, "region-based labels are not")],
)
def test_nnunet_bad_label_definitions(tmp_path, labels, expected):
    write_nnunet(tmp_path, labels=labels)
    with pytest.raises(DataError, match=expected):
        nnunet_spec(tmp_path)


def test_nnunet_without_dataset_json(tmp_path):
    write_nnunet(tmp_path)
    (tmp_path / "dataset.json").unlink()
    cases, problems = scan_cases("nnunet", tmp_path)
    assert cases == [] and problems == [f"{tmp_path / 'dataset.json'}: dataset.json not found "
                                        "(an nnU-Net folder needs one)"]


def test_layout_problems_are_all_reported_by_file(raw, tmp_path):
    root = tmp_path / "mmwhs"
    shutil.copytree(raw["mmwhs"], root)
    (root / "mr_train_1001_label.nii.gz").unlink()
    (root / "mr_train_1002_image.nii.gz").unlink()
    shutil.copy(root / "mr_train_1003_image.nii.gz", root / "mr_train_1003_image.nii")
    cases, problems = scan_cases("mmwhs", root)
    assert cases == []
    assert problems == [
        f"{root / 'mr_train_1001_image.nii.gz'}: image has no label file (case mr_train_1001)",
        f"{root / 'mr_train_1002_label.nii.gz'}: label has no image file (case mr_train_1002)",
        f"{root / 'mr_train_1003_image.nii'}: case mr_train_1003 has several image files: "
        "mr_train_1003_image.nii, mr_train_1003_image.nii.gz",
    ]
    with pytest.raises(DataError) as error:
        find_cases("mmwhs", root)
    assert error.value.messages == problems


@pytest.mark.parametrize("kind", ["acdc", "lits", "mmwhs", "nnunet"])
def test_missing_and_empty_folders(tmp_path, kind):
    with pytest.raises(DataError, match="raw data folder not found"):
        find_cases(kind, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as error:
        find_cases(kind, tmp_path / "empty")
    assert str(tmp_path / "empty") in str(error.value)


def test_unknown_kind():
    with pytest.raises(DataError, match="dataset kind 'brats' is unknown"):
        find_cases("brats", Path("."))
