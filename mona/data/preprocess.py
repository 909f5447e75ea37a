"""Validate a raw dataset folder, then turn it into per-volume arrays plus a manifest.

Output (``out_dir``):
- ``images/{case}.npy``  float32 (S, size, size), per-volume min-max to [0, 1] (LiTS: after
  clipping to its HU window), every slice resampled bilinearly (pixel-centre aligned);
- ``labels/{case}.npy``  uint8 (S, size, size), class indices, nearest-neighbour resampling;
- ``gt/{case}.npy``      uint8 (S, H, W), class indices on the volume's own grid, for 3D scoring;
- ``manifest.json``      dataset facts and, per case, shape, spacing (slice, row, col) in mm
  and voxel count per class.

Why validate everything first: a user with a broken download should learn every problem in one
run, and no later step may ever see a half-written output. Headers (cheap) are checked for all
cases before any voxel is read; voxel checks (readable data, finite intensities, known label
codes) run in the same pass that writes, and writing stops at the first problem while checking
goes on. The output folder is built beside ``out_dir`` and renamed into place only on success.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from mona.data.atomic import atomic_directory
from mona.data.readers import RawCase, scan_cases
from mona.data.specs import DatasetSpec, spec_for
from mona.data.synthetic import MARKER_FILE
from mona.errors import DataError

AFFINE_TOLERANCE_MM = 1e-3  # image and label affines must agree to about a micrometre
_SLAB_VOXELS = 1 << 24  # label arrays are scanned in slabs to bound memory on big CT volumes
_MAX_LISTED_VALUES = 10


@dataclass
class _Header:
    image: nib.Nifti1Image
    label: nib.Nifti1Image
    shape: tuple[int, int, int]  # NIfTI (X, Y, Z)
    zooms: tuple[float, float, float]  # NIfTI (zx, zy, zz)


def preprocess(
    kind: str,
    raw_root: Path,
    out_dir: Path,
    *,
    image_size: int,
    progress: bool | None = None,
) -> dict:
    """Validate ``raw_root`` and write the processed dataset to ``out_dir``; return the manifest.

    ``kind`` is "acdc", "lits", "mmwhs" or "nnunet" (labels then come from dataset.json).
    Raises DataError listing every problem found; ``out_dir`` is then left untouched.
    ``progress`` shows a progress bar (default: when stderr is a terminal).
    """
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    if image_size < 1:
        raise DataError([f"image_size must be a positive number of pixels, got {image_size}"])
    if out_dir.resolve() == raw_root.resolve() or out_dir.resolve() in raw_root.resolve().parents:
        raise DataError([f"{out_dir}: output folder would replace the raw folder {raw_root}"])
    cases, problems = scan_cases(kind, raw_root)
    spec = None
    if cases or not problems:
        try:
            spec = spec_for(kind, raw_root)
        except DataError as error:
            problems.extend(error.messages)
    headers = [_read_headers(case, problems) for case in cases]
    checked = [(case, header) for case, header in zip(cases, headers, strict=True) if header]
    if problems or spec is None:
        if spec is not None:
            for case, header in checked:
                _load_volume(case, header, spec, problems)
        raise DataError(_unique(problems))

    show = sys.stderr.isatty() if progress is None else progress
    with atomic_directory(out_dir) as tmp:
        for folder in ("images", "labels", "gt"):
            (tmp / folder).mkdir()
        entries = []
        for case, header in tqdm(checked, desc=f"preprocess {kind}", unit="case", disable=not show):
            volume = _load_volume(case, header, spec, problems)
            if volume is not None and not problems:
                entries.append(_write_case(tmp, case, header, volume, spec, image_size))
        if problems:
            raise DataError(_unique(problems))
        manifest = _manifest(kind, spec, image_size, entries, raw_root)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _unique(messages: list[str]) -> list[str]:
    return list(dict.fromkeys(messages))


# --- header checks --------------------------------------------------------------------------


def _read_headers(case: RawCase, problems: list[str]) -> _Header | None:
    """Check what the headers alone can tell: readable, 3-D, same grid, sane spacing."""
    images = {}
    for role, path in (("image", case.image), ("label", case.label)):
        try:
            loaded = nib.load(str(path))
        except MemoryError:
            raise
        except Exception as error:  # nibabel raises many types on corrupt files
            problems.append(f"{path}: cannot read NIfTI ({type(error).__name__}: {error})")
            continue
        if not isinstance(loaded, nib.Nifti1Image | nib.Nifti2Image):
            problems.append(f"{path}: not a NIfTI file ({type(loaded).__name__})")
            continue
        if _volume_shape(loaded.shape) is None:
            problems.append(
                f"{path}: array has shape {tuple(loaded.shape)}; expected a 3-D volume"
            )
            continue
        images[role] = loaded
    if len(images) < 2:
        return None
    image, label = images["image"], images["label"]
    shape, label_shape = _volume_shape(image.shape), _volume_shape(label.shape)
    ok = True
    if shape != label_shape:
        problems.append(
            f"{case.label}: label shape {label_shape} differs from image shape {shape} "
            f"of {case.image.name}"
        )
        ok = False
    elif not np.allclose(image.affine, label.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        difference = float(np.max(np.abs(image.affine - label.affine)))
        problems.append(
            f"{case.label}: affine differs from that of {case.image.name} "
            f"(largest difference {difference:.4g} mm)"
        )
        ok = False
    # headers store float32: keep its shortest decimal form (1.5625, not 1.562500023...)
    zooms = tuple(float(str(np.float32(z))) for z in image.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        problems.append(f"{case.image}: voxel spacing {zooms} is not positive and finite")
        ok = False
    return _Header(image, label, shape, zooms) if ok else None


def _volume_shape(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The 3-D shape, accepting trailing singleton axes (X, Y, Z, 1); None if not a volume."""
    if len(shape) < 3 or any(n != 1 for n in shape[3:]) or min(shape[:3]) < 1:
        return None
    return tuple(int(n) for n in shape[:3])


# --- voxel checks ---------------------------------------------------------------------------


@dataclass
class _Volume:
    image: np.ndarray  # float32 NIfTI (X, Y, Z)
    classes: np.ndarray  # uint8 NIfTI (X, Y, Z)
    class_voxels: list[int]


def _load_volume(
    case: RawCase, header: _Header, spec: DatasetSpec, problems: list[str]
) -> _Volume | None:
    """Read both arrays, checking readability, finite intensities and known label codes."""
    image = _read_array(case.image, header.image, header.shape, np.float32, problems)
    labels = _read_array(case.label, header.label, header.shape, None, problems)
    ok = image is not None and labels is not None
    if image is not None:
        finite = np.isfinite(image)
        if not finite.all():
            nan = int(np.isnan(image).sum())
            problems.append(
                f"{case.image}: {nan} NaN and {int((~finite).sum()) - nan} infinite intensities"
            )
            ok = False
    if labels is None:
        return None
    counts = _value_counts(case.label, labels, problems)
    if counts is None:
        return None
    codes = spec.code_to_class
    stray = {value: count for value, count in counts.items() if value not in codes}
    if stray:
        listed = ", ".join(
            f"{value} ({count} voxels)" for value, count in list(stray.items())[:_MAX_LISTED_VALUES]
        )
        more = len(stray) - _MAX_LISTED_VALUES
        problems.append(
            f"{case.label}: label values outside the {spec.kind} codes {list(spec.label_codes)}: "
            f"{listed}" + (f" and {more} more values" if more > 0 else "")
        )
        return None
    if not ok:
        return None
    class_voxels = [0] * spec.num_classes
    for value, count in counts.items():
        class_voxels[codes[value]] += count
    return _Volume(image, _map_codes(labels, spec), class_voxels)


def _read_array(path: Path, loaded, shape, dtype, problems: list[str]) -> np.ndarray | None:
    try:
        if dtype is None:
            array = np.asanyarray(loaded.dataobj)
        else:
            array = loaded.get_fdata(dtype=dtype, caching="unchanged")
        return np.asarray(array).reshape(shape)
    except MemoryError:
        raise
    except Exception as error:  # truncated gzip, short file, bad data type...
        problems.append(f"{path}: cannot read NIfTI data ({type(error).__name__}: {error})")
        return None


def _slabs(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices along the last axis, each holding at most about _SLAB_VOXELS voxels."""
    per_slice = max(1, int(np.prod(shape[:-1])))
    step = max(1, _SLAB_VOXELS // per_slice)
    for start in range(0, shape[-1], step):
        yield slice(start, start + step)


def _value_counts(path: Path, labels: np.ndarray, problems: list[str]) -> dict[int, int] | None:
    """Voxel count of every label value; reports non-integer or non-finite label values."""
    if labels.dtype.kind == "f":
        bad = 0
        for slab in _slabs(labels.shape):
            part = labels[..., slab]
            bad += int(np.count_nonzero(~np.isfinite(part) | (part != np.round(part))))
        if bad:
            problems.append(f"{path}: {bad} label voxels are not whole numbers")
            return None
    elif labels.dtype.kind not in "iub":
        problems.append(f"{path}: label data type {labels.dtype} is not numeric")
        return None
    low, high = int(labels.min()), int(labels.max())
    if high - low >= 1 << 20:
        values, counts = np.unique(labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    total = np.zeros(high - low + 1, dtype=np.int64)
    for slab in _slabs(labels.shape):
        part = labels[..., slab].astype(np.int64) - low
        total += np.bincount(part.ravel(), minlength=total.size)
    return {low + int(i): int(total[i]) for i in np.flatnonzero(total)}


def _map_codes(labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Label codes -> class indices (uint8), slab by slab; every code is known at this point."""
    codes = np.array(spec.label_codes, dtype=np.int64)
    low = int(codes.min())
    table = np.zeros(int(codes.max()) - low + 1, dtype=np.uint8)
    table[codes - low] = np.arange(len(codes), dtype=np.uint8)
    classes = np.empty(labels.shape, dtype=np.uint8)
    for slab in _slabs(labels.shape):
        classes[..., slab] = table[labels[..., slab].astype(np.int64) - low]
    return classes


# --- writing --------------------------------------------------------------------------------


def normalise_intensities(image: np.ndarray, hu_clip: tuple[float, float] | None) -> np.ndarray:
    """Optional HU window, then per-volume min-max to [0, 1]; a constant volume becomes zeros."""
    image = image.astype(np.float32, copy=True)
    if hu_clip is not None:
        np.clip(image, hu_clip[0], hu_clip[1], out=image)
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros_like(image)
    image -= low
    image /= high - low
    return np.clip(image, 0.0, 1.0, out=image)


def resize_slices(volume: np.ndarray, size: int, *, order: int) -> np.ndarray:
    """Resample every (H, W) slice of an (S, H, W) volume to (size, size).

    ``order`` 1 is bilinear (images), 0 nearest neighbour (masks). Pixel centres are aligned
    (``grid_mode``): the results equal ``torch.nn.functional.interpolate`` with
    ``mode="bilinear", align_corners=False`` and ``mode="nearest-exact"``, so evaluation can map
    predictions back with either library.
    """
    slices, height, width = volume.shape
    if (height, width) == (size, size):
        return volume.copy()
    resized = ndimage.zoom(
        volume, (1.0, size / height, size / width), order=order, mode="nearest", grid_mode=True
    )
    assert resized.shape == (slices, size, size), resized.shape
    return resized


def _write_case(
    out: Path, case: RawCase, header: _Header, volume: _Volume, spec: DatasetSpec, size: int
) -> dict:
    image = normalise_intensities(volume.image.transpose(2, 0, 1), spec.hu_clip)
    gt = np.ascontiguousarray(volume.classes.transpose(2, 0, 1))
    paths = {role: f"{role}s/{case.case_id}.npy" for role in ("image", "label")}
    paths["gt"] = f"gt/{case.case_id}.npy"
    np.save(out / paths["image"], resize_slices(image, size, order=1).astype(np.float32))
    np.save(out / paths["label"], resize_slices(gt, size, order=0).astype(np.uint8))
    np.save(out / paths["gt"], gt)
    zx, zy, zz = header.zooms
    return {
        "case_id": case.case_id,
        "patient_id": case.patient_id,
        "original_shape": list(gt.shape),
        "spacing": [zz, zx, zy],
        "slices": int(gt.shape[0]),
        "class_voxels": volume.class_voxels,
        **paths,
    }


def _manifest(kind: str, spec: DatasetSpec, size: int, entries: list[dict], raw: Path) -> dict:
    marker = raw / MARKER_FILE
    synthetic = json.loads(marker.read_text()) if marker.is_file() else None
    return {
        "dataset_kind": kind,
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "image_size": size,
        "label_codes": list(spec.label_codes),
        "hu_clip": list(spec.hu_clip) if spec.hu_clip else None,
        "synthetic": synthetic,
        "cases": entries,
    }


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, help="acdc, lits, mmwhs or nnunet")
    parser.add_argument("--raw", required=True, type=Path, help="raw dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="processed dataset folder")
    parser.add_argument("--image-size", type=int, default=256, help="slice size in pixels")
    args = parser.parse_args(argv)
    try:
        manifest = preprocess(args.kind, args.raw, args.out, image_size=args.image_size)
    except DataError as error:
        print("error: problems in the input data:", file=sys.stderr)
        for message in error.messages:
            print(f"  {message}", file=sys.stderr)
        return 2
    print(f"wrote {len(manifest['cases'])} {args.kind} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
