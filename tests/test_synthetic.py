"""The synthetic generator writes the real raw layouts, deterministically, with hard anatomy."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mona.data import synthetic
from mona.data.specs import DATASET_KINDS
from mona.data.synthetic import generate
from mona.errors import DataError

SLICES = (4, 7)
SIZE = 32


def read(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def nifti_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.nii*"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    counts = {"acdc": 5, "lits": 6, "mmwhs": 4}
    for kind, patients in counts.items():
        generate(kind, root / kind, patients=patients, slices=SLICES, size=SIZE, seed=0)
    return {kind: root / kind for kind in counts}


@pytest.mark.parametrize("kind", ["acdc", "lits", "mmwhs"])
def test_same_seed_gives_identical_arrays_and_other_seed_differs(tmp_path, kind):
    args = dict(patients=2, slices=SLICES, size=16)
    generate(kind, tmp_path / "a", seed=7, **args)
    generate(kind, tmp_path / "b", seed=7, **args)
    generate(kind, tmp_path / "c", seed=8, **args)
    files_a, files_b = nifti_files(tmp_path / "a"), nifti_files(tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in files_a] == [
        p.relative_to(tmp_path / "b") for p in files_b
    ]
    for a, b in zip(files_a, files_b, strict=True):
        np.testing.assert_array_equal(read(a), read(b))
        np.testing.assert_array_equal(nib.load(str(a)).affine, nib.load(str(b)).affine)
    images_c = [read(p) for p in nifti_files(tmp_path / "c")]
    images_a = [read(p) for p in files_a]
    assert any(
        a.shape != c.shape or not np.array_equal(a, c)
        for a, c in zip(images_a, images_c, strict=False)
    )


def test_a_patient_does_not_depend_on_how_many_are_generated(tmp_path):
    generate("mmwhs", tmp_path / "two", patients=2, slices=SLICES, size=16, seed=3)
    generate("mmwhs", tmp_path / "three", patients=3, slices=SLICES, size=16, seed=3)
    for path in nifti_files(tmp_path / "two"):
        np.testing.assert_array_equal(read(path), read(tmp_path / "three" / path.name))


def test_acdc_layout_and_info_cfg(raw):
    root = raw["acdc"]
    patients = sorted(p.name for p in (root / "training").iterdir())
    assert patients == [f"patient{i:03d}" for i in range(1, 6)]
    groups = []
    for patient in patients:
        folder = root / "training" / patient
        info = dict(
            line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines()
        )
        assert list(info) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        ed, es = int(info["ED"]), int(info["ES"])
        assert ed == 1 and 8 <= es <= 15 and int(info["NbFrame"]) > es
        groups.append(info["Group"])
        expected = {
            f"{patient}_frame{frame:02d}{suffix}.nii.gz"
            for frame in (ed, es)
            for suffix in ("", "_gt")
        }
        assert {p.name for p in folder.iterdir()} == expected | {"Info.cfg"}
    assert groups == ["DCM", "HCM", "MINF", "NOR", "RV"]


def test_lits_and_mmwhs_layouts(raw):
    lits = {p.name for p in raw["lits"].iterdir()} - {synthetic.MARKER_FILE}
    assert lits == {f"{kind}-{n}.nii" for kind in ("volume", "segmentation") for n in range(6)}
    mmwhs = {p.name for p in raw["mmwhs"].iterdir()} - {synthetic.MARKER_FILE}
    assert mmwhs == {
        f"mr_train_{n}_{role}.nii.gz" for n in range(1001, 1005) for role in ("image", "label")
    }


@pytest.mark.parametrize("kind", ["acdc", "lits", "mmwhs"])
def test_volumes_shape_dtype_and_label_codes(raw, kind):
    labels, image_dtypes, label_dtypes = [], set(), set()
    for path in nifti_files(raw[kind]):
        array = read(path)
        assert array.shape[:2] == (SIZE, SIZE) and SLICES[0] <= array.shape[2] <= SLICES[1]
        if re.search(r"(_gt|segmentation-\d+|_label)\.nii", path.name):
            labels.append(array)
            label_dtypes.add(array.dtype)
        else:
            image_dtypes.add(array.dtype)
    assert image_dtypes == {np.dtype(np.int16)}
    assert label_dtypes == {np.dtype(np.int16 if kind == "mmwhs" else np.uint8)}
    present = set(np.unique(np.concatenate([a.ravel() for a in labels])).tolist())
    assert present == set(DATASET_KINDS[kind].label_codes)  # every class, nothing else


@pytest.mark.parametrize(
    "kind, in_plane, through_plane",
    [("acdc", (1.37, 1.68), (5.0, 10.0)), ("lits", (0.55, 1.0), (0.7, 5.0)),
     ("mmwhs", (0.9, 1.3), (1.6, 2.0))],
)
def test_header_spacing_is_anisotropic_and_in_range(raw, kind, in_plane, through_plane):
    slice_spacings = []
    for path in nifti_files(raw[kind]):
        zx, zy, zz = nib.load(str(path)).header.get_zooms()
        assert zx == zy and in_plane[0] <= zx <= in_plane[1]
        assert through_plane[0] <= zz <= through_plane[1]
        slice_spacings.append(zz)
    if kind != "lits":
        assert all(z > 1.2 * in_plane[1] for z in slice_spacings)
    assert len(set(slice_spacings)) > 1  # varies between patients


def test_lits_tumours_are_rare_and_intensities_span_beyond_the_hu_window(raw):
    liver = tumour = liver_slices = tumour_slices = 0
    for n in range(6):
        label = read(raw["lits"] / f"segmentation-{n}.nii")
        image = read(raw["lits"] / f"volume-{n}.nii")
        liver += int((label == 1).sum())
        tumour += int((label == 2).sum())
        liver_slices += int((label > 0).any(axis=(0, 1)).sum())
        tumour_slices += int((label == 2).any(axis=(0, 1)).sum())
        assert image.min() < -900 and image.max() > 300  # air and bone outside [-200, 250]
    assert 0 < tumour < 0.2 * liver
    assert 0 < tumour_slices < liver_slices


def test_acdc_end_systole_is_smaller_than_end_diastole(raw):
    for folder in sorted((raw["acdc"] / "training").iterdir()):
        info = dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines())
        ed = read(folder / f"{folder.name}_frame{int(info['ED']):02d}_gt.nii.gz")
        es = read(folder / f"{folder.name}_frame{int(info['ES']):02d}_gt.nii.gz")
        assert (es == 3).sum() < (ed == 3).sum()  # LV cavity
        lv_per_slice = (ed == 3).sum(axis=(0, 1))
        assert len(set(lv_per_slice.tolist())) > 2  # the cavity changes along the slice axis


def test_class_intensities_overlap(raw):
    """Myocardium is not separable from the surrounding tissue by a threshold."""
    overlap = []
    for folder in sorted((raw["acdc"] / "training").iterdir()):
        for gt_path in folder.glob("*_gt.nii.gz"):
            image = read(gt_path.with_name(gt_path.name.replace("_gt", ""))).astype(float)
            label = read(gt_path)
            tissue = image[(label == 0) & (image > np.percentile(image, 30))]
            low, high = np.percentile(tissue, [5, 95])
            myo = image[label == 2]
            overlap.append(np.mean((myo >= low) & (myo <= high)))
    assert np.mean(overlap) > 0.5


def test_mmwhs_small_structures_are_present_in_few_slices(raw):
    for path in sorted(raw["mmwhs"].glob("*_label.nii.gz")):
        label = read(path)
        slices_with = {code: int((label == code).any(axis=(0, 1)).sum()) for code in (500, 820)}
        assert slices_with[820] < label.shape[2]  # ascending aorta: only near the top
        assert (label == 850).sum() < (label == 500).sum()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not written by the synthetic generator"):
        generate("lits", tmp_path / "mine", patients=1, slices=SLICES, size=16, seed=0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    generate("lits", tmp_path / "gen", patients=2, slices=SLICES, size=16, seed=0)
    generate("lits", tmp_path / "gen", patients=1, slices=SLICES, size=16, seed=0)
    assert len(nifti_files(tmp_path / "gen")) == 2  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "mine"]  # no temp folders


def test_cli_writes_the_layout_and_reports_bad_arguments(tmp_path, capsys):
    out = tmp_path / "raw"
    assert synthetic.main(["--kind", "mmwhs", "--out", str(out), "--patients", "2",
                           "--slices", "4", "5", "--size", "16"]) == 0
    assert len(list(out.glob("mr_train_*_label.nii.gz"))) == 2
    assert synthetic.main(["--kind", "acdc", "--out", str(tmp_path / "x"), "--patients", "0",
                           "--slices", "6", "2"]) == 2
    err = capsys.readouterr().err
    assert "error: problems in the input data:" in err
    assert "patients must be at least 1" in err and "slices must be" in err
