"""Preprocessing: every input problem reported at once, exact outputs, atomic writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mona.data import preprocess as preprocess_module
from mona.data.preprocess import normalise_intensities, preprocess, resize_slices
from mona.data.readers import find_cases
from mona.data.specs import DATASET_KINDS
from mona.data.synthetic import generate
from mona.errors import DataError

SIZE = 24


def read(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    for kind, patients in {"acdc": 3, "lits": 4, "mmwhs": 3}.items():
        generate(kind, root / kind, patients=patients, slices=(4, 6), size=SIZE, seed=1)
    return {kind: root / kind for kind in ("acdc", "lits", "mmwhs")}


@pytest.fixture(scope="module")
def processed(raw, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Each kind at its own size (no resampling), so outputs can be checked voxel by voxel."""
    root = tmp_path_factory.mktemp("processed")
    return {
        kind: (root / kind, preprocess(kind, raw[kind], root / kind, image_size=SIZE))
        for kind in raw
    }


# --- outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["acdc", "lits", "mmwhs"])
def test_manifest_and_arrays(raw, processed, kind):
    out, manifest = processed[kind]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    spec = DATASET_KINDS[kind]
    assert manifest["dataset_kind"] == kind
    assert manifest["num_classes"] == spec.num_classes
    assert manifest["class_names"] == list(spec.class_names)
    assert manifest["label_codes"] == list(spec.label_codes)
    assert manifest["image_size"] == SIZE
    assert manifest["synthetic"]["seed"] == 1
    raw_cases = find_cases(kind, raw[kind])
    assert [c["case_id"] for c in manifest["cases"]] == [c.case_id for c in raw_cases]
    for entry, case in zip(manifest["cases"], raw_cases, strict=True):
        assert entry["patient_id"] == case.patient_id
        image = np.load(out / entry["image"])
        label = np.load(out / entry["label"])
        gt = np.load(out / entry["gt"])
        source = nib.load(str(case.image))
        x, y, z = source.shape
        assert entry["original_shape"] == [z, x, y] and entry["slices"] == z
        zx, zy, zz = source.header.get_zooms()
        np.testing.assert_allclose(entry["spacing"], [zz, zx, zy], rtol=1e-6)
        assert image.dtype == np.float32 and image.shape == (z, SIZE, SIZE)
        assert label.dtype == np.uint8 and gt.dtype == np.uint8 and gt.shape == (z, x, y)
        assert image.min() == 0.0 and image.max() == 1.0
        assert entry["class_voxels"] == np.bincount(gt.ravel(), minlength=spec.num_classes).tolist()
        # class indices follow the spec's code order, on the transposed (S, H, W) grid
        codes = read(case.label).transpose(2, 0, 1)
        np.testing.assert_array_equal(np.asarray(spec.label_codes)[gt], codes)
        np.testing.assert_array_equal(label, gt)  # same size: no resampling


def test_mmwhs_codes_become_classes_in_ascending_code_order(processed):
    out, manifest = processed["mmwhs"]
    gt = np.concatenate([np.load(out / c["gt"]).ravel() for c in manifest["cases"]])
    assert set(np.unique(gt).tolist()) == set(range(8))
    assert dict(zip(manifest["label_codes"], manifest["class_names"], strict=True)) == {
        0: "background", 205: "Myo", 420: "LA", 500: "LV", 550: "RA", 600: "RV",
        820: "AAo", 850: "PA",
    }


def test_lits_intensities_are_clipped_to_the_hu_window_before_min_max(raw, processed):
    out, manifest = processed["lits"]
    for entry in manifest["cases"]:
        number = int(entry["case_id"].split("_")[1])
        hu = read(raw["lits"] / f"volume-{number}.nii").astype(np.float32).transpose(2, 0, 1)
        assert hu.min() < -200 and hu.max() > 250
        clipped = np.clip(hu, -200, 250)
        expected = (clipped - clipped.min()) / (clipped.max() - clipped.min())
        image = np.load(out / entry["image"])
        np.testing.assert_allclose(image, expected, atol=1e-6)
        unclipped = (hu - hu.min()) / (hu.max() - hu.min())
        assert np.abs(image - unclipped).max() > 0.2  # the window changes the result


def test_resampled_slices_match_torch_interpolate(raw, tmp_path):
    manifest = preprocess("mmwhs", raw["mmwhs"], tmp_path / "out", image_size=40)
    for entry in manifest["cases"]:
        gt = np.load(tmp_path / "out" / entry["gt"])
        label = np.load(tmp_path / "out" / entry["label"])
        expected = F.interpolate(torch.from_numpy(gt)[:, None].float(), size=(40, 40),
                                 mode="nearest-exact")[:, 0].numpy()
        np.testing.assert_array_equal(label, expected.astype(np.uint8))
        assert np.load(tmp_path / "out" / entry["image"]).shape == (entry["slices"], 40, 40)


@pytest.mark.parametrize("size", [10, 16, 37])
def test_resize_slices_is_bilinear_with_aligned_pixel_centres(size):
    volume = np.random.default_rng(0).random((3, 24, 20)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(volume)[:, None], size=(size, size),
                             mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(resize_slices(volume, size, order=1), expected, atol=1e-5)


def test_normalise_constant_volume_gives_zeros_and_window_applies():
    np.testing.assert_array_equal(normalise_intensities(np.full((2, 3, 3), 7.0), None), 0.0)
    image = np.array([[[-1000.0, 0.0, 25.0, 2000.0]]])
    windowed = normalise_intensities(image, (-200, 250))
    np.testing.assert_allclose(windowed, [[[0, 200 / 450, 225 / 450, 1]]], rtol=1e-6)
    plain = normalise_intensities(image, None)
    np.testing.assert_allclose(plain, [[[0, 1000 / 3000, 1025 / 3000, 1]]], rtol=1e-6)


def test_existing_output_is_replaced_only_on_success(raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    preprocess("acdc", raw["acdc"], out, image_size=16)
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_nnunet_folder_is_preprocessed_with_its_own_labels(tmp_path):
    root = tmp_path / "raw"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "organ": 1},
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    image = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    label = (image > 60).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, np.diag([0.8, 0.9, 3.0, 1.0])),
             str(root / "imagesTr" / "case_a_0000.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.diag([0.8, 0.9, 3.0, 1.0])),
             str(root / "labelsTr" / "case_a.nii.gz"))
    manifest = preprocess("nnunet", root, tmp_path / "out", image_size=6)
    assert manifest["class_names"] == ["background", "organ"]
    (entry,) = manifest["cases"]
    assert entry["case_id"] == "case_a" and entry["spacing"] == [3.0, 0.8, 0.9]
    assert entry["class_voxels"] == [61, 59]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / entry["gt"]), label.transpose(2, 0, 1))
    np.testing.assert_allclose(np.load(tmp_path / "out" / entry["gt"]).shape, (4, 6, 5))


# --- bad input ------------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path) -> tuple[Path, dict[str, str]]:
    """A MM-WHS folder with one problem per case; returns it and {file name: expected text}."""
    root = tmp_path / "mmwhs"
    generate("mmwhs", root, patients=9, slices=(4, 4), size=16, seed=0)

    def path(n: int, role: str) -> Path:
        return root / f"mr_train_{1000 + n}_{role}.nii.gz"

    def save(array, n, role, affine=None):
        reference = nib.load(str(path(n, "image")))
        nib.save(nib.Nifti1Image(array, reference.affine if affine is None else affine),
                 str(path(n, role)))

    data = path(1, "image").read_bytes()
    path(1, "image").write_bytes(data[: len(data) // 2])  # truncated gzip
    save(np.zeros((16, 15, 4), np.int16), 2, "label")  # shape mismatch
    shifted = nib.load(str(path(3, "image"))).affine.copy()
    shifted[0, 3] += 2.0
    save(read(path(3, "label")), 3, "label", affine=shifted)  # affine mismatch
    stray = read(path(4, "label")).copy()
    stray[:2, :2, 0] = 421
    save(stray, 4, "label")  # unknown label code
    image = read(path(5, "image")).astype(np.float32)
    image[3, 3, 1] = np.nan
    save(image, 5, "image")  # NaN intensity
    path(6, "label").unlink()  # missing label
    path(7, "image").unlink()  # missing image
    path(8, "image").write_bytes(b"this is not a NIfTI file at all" * 20)  # garbage
    save(np.zeros((16, 16), np.int16), 9, "image")  # not 3-D
    expected = {
        path(1, "image").name: "cannot read NIfTI",
        path(2, "label").name: "label shape (16, 15, 4) differs from image shape (16, 16, 4)",
        path(3, "label").name: "affine differs",
        path(4, "label").name: "label values outside the mmwhs codes "
        "[0, 205, 420, 500, 550, 600, 820, 850]: 421 (4 voxels)",
        path(5, "image").name: "1 NaN and 0 infinite intensities",
        path(6, "image").name: "image has no label file",
        path(7, "label").name: "label has no image file",
        path(8, "image").name: "cannot read NIfTI",
        path(9, "image").name: "array has shape (16, 16); expected a 3-D volume",
    }
    return root, expected


def assert_every_problem_reported(messages: list[str], expected: dict[str, str]) -> None:
    assert len(messages) == len(expected), "\n".join(messages)
    for name, text in expected.items():
        assert any(name in m and text in m for m in messages), (name, text, messages)


def test_every_bad_input_is_reported_at_once_and_nothing_is_written(broken, tmp_path):
    root, expected = broken
    out = tmp_path / "processed" / "mmwhs"
    with pytest.raises(DataError) as error:
        preprocess("mmwhs", root, out, image_size=16)
    assert_every_problem_reported(error.value.messages, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmwhs"]  # no output, no temp folder


def test_voxel_level_problem_found_while_writing_leaves_nothing(raw, tmp_path):
    """Headers are fine, so writing starts; a NaN in the last case must undo everything."""
    root = tmp_path / "acdc"
    shutil.copytree(raw["acdc"], root)
    last = find_cases("acdc", root)[-1]
    source = nib.load(str(last.image))
    image = source.get_fdata(dtype=np.float32)
    image[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(image, source.affine), str(last.image))
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("keep")
    with pytest.raises(DataError) as error:
        preprocess("acdc", root, out, image_size=16)
    assert error.value.messages == [f"{last.image}: 0 NaN and 1 infinite intensities"]
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acdc", "out"]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no lits cases found"):
        preprocess("lits", tmp_path / "empty", tmp_path / "out", image_size=16)
    with pytest.raises(DataError, match="raw data folder not found"):
        preprocess("lits", tmp_path / "absent", tmp_path / "out", image_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cli_exit_code_and_messages(broken, tmp_path, capsys):
    root, expected = broken
    out = str(tmp_path / "out")
    code = preprocess_module.main(
        ["--kind", "mmwhs", "--raw", str(root), "--out", out, "--image-size", "16"]
    )
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: problems in the input data:"
    assert_every_problem_reported([line.strip() for line in err[1:]], expected)


def test_module_entry_point(raw, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mona.data.preprocess", "--kind", "lits", "--raw",
         str(raw["lits"]), "--out", str(tmp_path / "out"), "--image-size", "16"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["cases"]) == 4 and manifest["hu_clip"] == [-200.0, 250.0]


def test_trailing_singleton_axis_and_whole_float_labels_are_accepted(raw, tmp_path):
    root = tmp_path / "mmwhs"
    shutil.copytree(raw["mmwhs"], root)
    image_path = root / "mr_train_1001_image.nii.gz"
    label_path = root / "mr_train_1001_label.nii.gz"
    image, label = nib.load(str(image_path)), nib.load(str(label_path))
    nib.save(nib.Nifti1Image(read(image_path)[..., None], image.affine), str(image_path))
    nib.save(nib.Nifti1Image(read(label_path).astype(np.float32), label.affine), str(label_path))
    manifest = preprocess("mmwhs", root, tmp_path / "out", image_size=SIZE)
    gt = np.load(tmp_path / "out" / manifest["cases"][0]["gt"])
    codes = np.asarray(manifest["label_codes"])
    np.testing.assert_array_equal(codes[gt], read(label_path).transpose(2, 0, 1))

    fractional = read(label_path).copy()
    fractional[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(fractional, label.affine), str(label_path))
    with pytest.raises(DataError, match="1 label voxels are not whole numbers"):
        preprocess("mmwhs", root, tmp_path / "out2", image_size=SIZE)


def test_output_may_not_replace_the_raw_folder(raw):
    for out in (raw["lits"], raw["lits"].parent):
        with pytest.raises(DataError, match="would replace the raw folder"):
            preprocess("lits", raw["lits"], out, image_size=16)
    assert len(find_cases("lits", raw["lits"])) == 4
