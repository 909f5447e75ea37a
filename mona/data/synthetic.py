"""Deterministic synthetic ACDC-, LiTS- and MM-WHS-like raw datasets, in the real raw layouts.

Why: the whole pipeline (reading, preprocessing, training, 3D evaluation) must run without a
download, on exactly the code paths real data takes. So the generator writes NIfTI files with
the real file names, label codes, anisotropic voxel spacing and intensity ranges, and anatomy
that makes segmentation a real (if small) task: shapes vary between patients and along the
slice axis, classes are long-tailed (small structures present in few slices), class intensities
overlap under noise, texture and a smooth bias field, and unlabelled distractors share the
intensities of labelled structures.

Every patient draws from its own child of ``SeedSequence([seed, kind])``, so patient ``i`` is
identical whatever the number of patients generated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from mona.data.atomic import atomic_directory
from mona.data.specs import DATASET_KINDS
from mona.errors import DataError

MARKER_FILE = "synthetic.json"
DEFAULT_PATIENTS = {"acdc": 100, "lits": 60, "mmwhs": 20}
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")  # order of the real training/ folder
_KIND_SEED = {"acdc": 1, "lits": 2, "mmwhs": 3}

Array = np.ndarray


def generate(
    kind: str,
    out_dir: Path,
    *,
    patients: int,
    slices: tuple[int, int],
    size: int,
    seed: int,
) -> None:
    """Write ``patients`` synthetic volumes of ``kind`` into ``out_dir`` in the real raw layout.

    Each volume has ``size`` x ``size`` pixels in-plane and between ``slices[0]`` and
    ``slices[1]`` slices (inclusive). ``out_dir`` is replaced atomically; an existing folder
    is only replaced when it is empty or was itself written by this generator.
    """
    out_dir = Path(out_dir)
    problems = _argument_problems(kind, patients, slices, size)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        problems.append(
            f"{out_dir}: folder exists and holds data not written by the synthetic generator; "
            "refusing to replace it"
        )
    elif out_dir.exists() and not out_dir.is_dir():
        problems.append(f"{out_dir}: exists and is not a folder")
    if problems:
        raise DataError(problems)
    writer = {"acdc": _write_acdc, "lits": _write_lits, "mmwhs": _write_mmwhs}[kind]
    children = np.random.SeedSequence([seed, _KIND_SEED[kind]]).spawn(patients)
    with atomic_directory(out_dir) as tmp:
        for index, child in enumerate(children):
            rng = np.random.default_rng(child)
            n_slices = int(rng.integers(slices[0], slices[1] + 1))
            writer(tmp, index, patients, rng, n_slices, size)
        marker = {
            "generator": "mona.data.synthetic",
            "kind": kind,
            "patients": patients,
            "slices": list(slices),
            "size": size,
            "seed": seed,
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def _argument_problems(kind: str, patients: int, slices: tuple[int, int], size: int) -> list[str]:
    problems = []
    if kind not in _KIND_SEED:
        problems.append(f"synthetic kind '{kind}' is unknown; expected one of {list(_KIND_SEED)}")
    if patients < 1:
        problems.append(f"patients must be at least 1, got {patients}")
    if len(slices) != 2 or not 4 <= slices[0] <= slices[1]:
        problems.append(f"slices must be (low, high) with 4 <= low <= high, got {slices}")
    if size < 16:
        problems.append(f"size must be at least 16 pixels, got {size}")
    return problems


# ---------------------------------------------------------------------------------------------
# Geometry helpers. Volumes are built as (S, H, W) arrays over normalised in-plane coordinates
# in [-1, 1]; shapes are described in a per-patient rotated, shifted and scaled local frame.


def _grid(size: int) -> tuple[Array, Array]:
    centres = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    return rows[None], cols[None]


def _local(rows: Array, cols: Array, centre_r, centre_c, angle: float, scale: float):
    """Coordinates (a, b) in a frame rotated by ``angle`` about a (per-slice) centre."""
    dr, dc = rows - centre_r, cols - centre_c
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    a = (cos * dc + sin * dr) / float(scale)
    b = (-sin * dc + cos * dr) / float(scale)
    return a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)


def _wobble(rng: np.random.Generator, amplitude: float) -> list[tuple[int, float, float]]:
    """Random low-order boundary harmonics, so that no two organs share the same outline."""
    return [(k, rng.uniform(0, amplitude), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]


def _inside(a, b, centre_a, centre_b, radius_a, radius_b, wobble=()) -> Array:
    """Mask of an ellipse (radii may vary per slice; a radius <= 0 means absent)."""
    radius_a = np.maximum(np.asarray(radius_a, dtype=np.float32), 1e-6)
    radius_b = np.maximum(np.asarray(radius_b, dtype=np.float32), 1e-6)
    da, db = a - centre_a, b - centre_b
    squared = (da / radius_a) ** 2 + (db / radius_b) ** 2
    if wobble:
        theta = np.arctan2(db, da)
        outline = 1.0 + sum(amp * np.cos(k * theta + phase) for k, amp, phase in wobble)
        inside = squared <= outline**2
    else:
        inside = squared <= 1.0
    return inside & (np.minimum(radius_a, radius_b) > 1e-6)


def _cap(t: Array, start: float, end: float) -> Array:
    """Radius profile of a half-ellipsoid: 0 at ``start`` (apex), 1 at ``end``, 0 past it."""
    u = (end - t) / (end - start)
    return np.where((t >= start) & (t <= end), np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0)), 0.0)


def _bell(t: Array, start: float, end: float, power: float = 0.5) -> Array:
    """Radius profile that rises from 0 at ``start`` to 1 midway and falls to 0 at ``end``."""
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    return np.where((t >= start) & (t <= end), np.clip(np.sin(np.pi * u), 0.0, 1.0) ** power, 0.0)


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> Array:
    """Smooth multiplicative field (a few random low-frequency waves), like MR coil shading."""
    axes = np.meshgrid(
        *[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij", sparse=True
    )
    log_field = np.zeros(shape, dtype=np.float32)
    for _ in range(3):
        frequency = (rng.uniform(0.3, 1.5, size=3) * np.array([0.5, 1.0, 1.0])).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi)
        wave = sum(f * ax for f, ax in zip(frequency, axes, strict=True))
        log_field = log_field + np.cos(wave + phase)
    return np.exp(amplitude * log_field / np.sqrt(3.0))


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> Array:
    """Spatially correlated unit-variance noise (tissue texture)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    field = gaussian_filter(noise, sigma=(0.0, sigma, sigma))
    return field / max(float(field.std()), 1e-8)


def _blur(image: Array, sigma: float) -> Array:
    """In-plane partial-volume blur of the piecewise-constant scene."""
    return gaussian_filter(image, sigma=(0.0, sigma, sigma))


def _slice_positions(rng: np.random.Generator, n_slices: int, start, end) -> Array:
    """Position of each slice along the organ's axis, as a (S, 1, 1) array."""
    first, last = rng.uniform(*start), rng.uniform(*end)
    return np.linspace(first, last, n_slices, dtype=np.float32)[:, None, None]


def _mr_signal(rng: np.random.Generator, scene: Array, noise: float, bias: float) -> Array:
    """Scene -> MR magnitude: texture, bias field, Rician noise, scanner gain, int16."""
    shape = scene.shape
    image = scene * (1.0 + 0.08 * _texture(rng, shape, 1.2)) * _bias_field(rng, shape, bias)
    real = image + noise * rng.standard_normal(shape, dtype=np.float32)
    imaginary = noise * rng.standard_normal(shape, dtype=np.float32)
    gain = rng.uniform(400.0, 1500.0)
    return np.clip(np.sqrt(real**2 + imaginary**2) * gain, 0, 32767).astype(np.int16)


def _save(array_shw: Array, zooms: tuple[float, float, float], path: Path) -> None:
    """Write an (S, H, W) array as a NIfTI (X, Y, Z) = (H, W, S) with the given voxel size."""
    zooms = tuple(round(z, 4) for z in zooms)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = -0.5 * np.array(zooms) * np.array(array_shw.shape)[[1, 2, 0]]
    image = nib.Nifti1Image(np.ascontiguousarray(array_shw.transpose(1, 2, 0)), affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


# ---------------------------------------------------------------------------------------------
# ACDC: short-axis cine MRI, LV cavity (3), myocardium (2), RV cavity (1); ED and ES frames.


def _write_acdc(out: Path, index: int, patients: int, rng: np.random.Generator, n_slices: int,
                size: int) -> None:
    patient = f"patient{index + 1:03d}"
    group = ACDC_GROUPS[min(index * len(ACDC_GROUPS) // patients, len(ACDC_GROUPS) - 1)]
    folder = out / "training" / patient
    folder.mkdir(parents=True)
    ed_frame, es_frame = 1, int(rng.integers(8, 16))
    n_frames = int(rng.integers(max(20, es_frame + 5), 36))
    info = {
        "ED": ed_frame,
        "ES": es_frame,
        "Group": group,
        "Height": round(float(rng.uniform(150, 195)), 1),
        "NbFrame": n_frames,
        "Weight": round(float(rng.uniform(50, 110)), 1),
    }
    (folder / "Info.cfg").write_text("".join(f"{key}: {value}\n" for key, value in info.items()))
    zooms = (*[float(rng.uniform(1.37, 1.68))] * 2, float(rng.choice([5.0, 6.5, 7.0, 8.0, 10.0])))
    scenes = _acdc_scenes(rng, group, n_slices, size)
    for frame, (scene, label) in zip((ed_frame, es_frame), scenes, strict=True):
        image = _mr_signal(rng, scene, noise=rng.uniform(0.05, 0.09), bias=rng.uniform(0.15, 0.3))
        _save(image, zooms, folder / f"{patient}_frame{frame:02d}.nii.gz")
        _save(label.astype(np.uint8), zooms, folder / f"{patient}_frame{frame:02d}_gt.nii.gz")


def _acdc_scenes(rng: np.random.Generator, group: str, n_slices: int, size: int):
    """The ED and ES (scene, label) pairs of one patient; they share pose and surroundings."""
    rows, cols = _grid(size)
    t = _slice_positions(rng, n_slices, (-0.05, 0.05), (0.95, 1.15))  # 0 = base, 1 = apex
    drift = rng.uniform(-0.1, 0.1, size=2)
    centre = rng.uniform(-0.15, 0.15, size=2)
    angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.2)
    a, b = _local(rows, cols, centre[0] + drift[0] * t, centre[1] + drift[1] * t, angle, scale)
    lv_radius = 0.2 * {"DCM": 1.35, "HCM": 0.8}.get(group, 1.0) * rng.uniform(0.85, 1.15)
    wall = 0.095 * {"HCM": 1.6, "DCM": 0.85}.get(group, 1.0) * rng.uniform(0.85, 1.15)
    rv_size = {"RV": 1.45, "DCM": 1.1}.get(group, 1.0) * rng.uniform(0.8, 1.2)
    es_fraction = {"DCM": 0.85, "MINF": 0.8, "HCM": 0.5}.get(group, 0.65) * rng.uniform(0.92, 1.05)
    eccentricity = rng.uniform(0.85, 1.15)
    lv_wobble, rv_wobble = _wobble(rng, 0.06), _wobble(rng, 0.1)
    papillary = [(rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.6)) for _ in range(2)]

    background = _thorax(rng, rows, cols, t, angle)
    scenes = []
    for contraction in (1.0, es_fraction):
        lv = lv_radius * contraction * _cap(1.0 - t, 0.08, 1.06)
        outer = lv + wall * (1.0 + 0.8 * (1.0 - contraction)) * _cap(1.0 - t, -0.05, 1.06)
        rv_scale = rv_size * (1.0 - 0.6 * (1.0 - contraction)) * _cap(1.0 - t, 0.25, 1.06)
        rv_a, rv_b = 0.9 * rv_scale * outer, 1.35 * rv_scale * outer
        myo_mask = _inside(a, b, 0, 0, outer * eccentricity, outer / eccentricity, lv_wobble)
        lv_mask = _inside(a, b, 0, 0, lv * eccentricity, lv / eccentricity, lv_wobble)
        rv_mask = _inside(a, b, 0.6 * outer + 0.4 * rv_a, 0, rv_a, rv_b, rv_wobble) & ~myo_mask
        label = np.zeros(a.shape, dtype=np.uint8)
        label[rv_mask], label[myo_mask], label[lv_mask] = 1, 2, 3
        scene = np.where(rv_mask, 0.72, np.where(myo_mask, 0.34, background))
        scene = np.where(lv_mask, 0.8, scene)
        for theta, distance in papillary:  # dark muscles inside the cavity, labelled as cavity
            muscle = _inside(a, b, distance * lv * np.cos(theta), distance * lv * np.sin(theta),
                             0.22 * lv, 0.22 * lv)
            scene = np.where(lv_mask & muscle, 0.4, scene)
        scenes.append((_blur(scene, 0.6), label))
    return scenes


def _thorax(rng: np.random.Generator, rows: Array, cols: Array, t: Array, angle: float) -> Array:
    """Unlabelled surroundings of the heart: body, lungs, fat, a bright vessel and the liver."""
    a, b = _local(rows, cols, 0.0, 0.0, rng.uniform(-0.2, 0.2), 1.0)
    body_a, body_b = rng.uniform(0.8, 0.95), rng.uniform(0.65, 0.8)
    scene = np.full(np.broadcast_shapes(a.shape, t.shape), 0.02, dtype=np.float32)
    body = _inside(a, b, 0, 0, body_a, body_b, _wobble(rng, 0.03))
    scene = np.where(body, 0.65, scene)  # subcutaneous fat: bright like blood
    scene = np.where(_inside(a, b, 0, 0, body_a - 0.06, body_b - 0.06), 0.3, scene)
    for side in (-1, 1):  # lungs
        lung = _inside(a, b, side * 0.48 * body_a, -0.05, 0.3, 0.45 * body_b, _wobble(rng, 0.1))
        scene = np.where(lung, 0.07, scene)
    aorta = _inside(a, b, rng.uniform(-0.1, 0.1), 0.55 * body_b, 0.07, 0.07)
    scene = np.where(aorta, 0.78, scene)  # descending aorta: blood-bright, unlabelled
    liver = _inside(a, b, -0.45, 0.2, 0.4 * _bell(t, 0.6, 1.6), 0.35 * _bell(t, 0.6, 1.6))
    return np.where(liver, 0.42, scene)


# ---------------------------------------------------------------------------------------------
# LiTS: abdominal CT in Hounsfield units, liver (1) and rare small tumours (2).


def _write_lits(out: Path, index: int, patients: int, rng: np.random.Generator, n_slices: int,
                size: int) -> None:
    zooms = (*[float(rng.uniform(0.55, 1.0))] * 2, float(rng.uniform(0.7, 5.0)))
    image, label = _lits_volume(rng, n_slices, size)
    _save(image, zooms, out / f"volume-{index}.nii")
    _save(label, zooms, out / f"segmentation-{index}.nii")


def _lits_volume(rng: np.random.Generator, n_slices: int, size: int) -> tuple[Array, Array]:
    rows, cols = _grid(size)
    t = _slice_positions(rng, n_slices, (-0.1, 0.05), (0.95, 1.1))  # 0 = dome of the liver
    angle, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.9, 1.1)
    a, b = _local(rows, cols, rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), angle, scale)
    shape = np.broadcast_shapes(a.shape, t.shape)
    body_a, body_b = rng.uniform(0.8, 0.92), rng.uniform(0.6, 0.75)
    scene = np.full(shape, -1000.0, dtype=np.float32)
    scene = np.where(_inside(a, b, 0, 0, body_a, body_b, _wobble(rng, 0.03)), -100.0, scene)
    inner = _inside(a, b, 0, 0, body_a - rng.uniform(0.05, 0.12), body_b - 0.08, _wobble(rng, 0.04))
    scene = np.where(inner, 45.0 + 15.0 * _texture(rng, shape, 1.5), scene)
    # spine: marrow and cortical bone, far above the [-200, 250] HU window
    spine = (0.0, 0.75 * body_b)
    scene = np.where(_inside(a, b, *spine, 0.13, 0.13), rng.uniform(600, 1000), scene)
    scene = np.where(_inside(a, b, *spine, 0.1, 0.1), rng.uniform(180, 300), scene)
    scene = np.where(_inside(a, b, 0.12, 0.45 * body_b, 0.05, 0.05), rng.uniform(140, 220), scene)
    for side in (-1, 1):  # kidneys with contrast-enhanced cortex, lower slices only
        profile = _bell(t, rng.uniform(0.45, 0.6), 1.3)
        kidney = _inside(a, b, side * 0.42, 0.45 * body_b, 0.13 * profile, 0.2 * profile)
        scene = np.where(kidney, rng.uniform(120, 180), scene)
    spleen_profile = _bell(t, -0.1, rng.uniform(0.5, 0.7))
    spleen = _inside(
        a, b, 0.5, 0.1, 0.16 * spleen_profile, 0.24 * spleen_profile, _wobble(rng, 0.1)
    )
    scene = np.where(spleen, rng.uniform(45, 60), scene)

    start, end = rng.uniform(-0.05, 0.15), rng.uniform(0.65, 0.9)
    right_lobe = _inside(a, b, -0.36, -0.05, 0.42 * _bell(t, start, end, 0.4),
                         0.5 * _bell(t, start, end, 0.4), _wobble(rng, 0.1))
    left_lobe = _inside(a, b, 0.02, -0.28, 0.3 * _bell(t, start, 0.6 * end, 0.8),
                        0.13 * _bell(t, start, 0.6 * end, 0.8), _wobble(rng, 0.12))
    liver = (right_lobe | left_lobe) & inner
    liver_hu = rng.uniform(55, 70)
    scene = np.where(liver, liver_hu + 8.0 * _texture(rng, shape, 1.0), scene)
    for _ in range(int(rng.integers(1, 5))):  # bowel gas pockets outside the liver
        gas = _inside(a, b, rng.uniform(-0.1, 0.5), rng.uniform(-0.4, 0.3), 0.06, 0.05)
        gas = gas & (_bell(t, rng.uniform(0.2, 0.6), 1.3) > 0)
        scene = np.where(gas & inner & ~liver, -700.0, scene)

    tumour = _lits_tumours(rng, liver, liver_hu, shape)
    label = liver.astype(np.uint8)
    label[tumour[0]] = 2
    scene = np.where(tumour[0], tumour[1], scene)
    noise = rng.uniform(8.0, 20.0) * rng.standard_normal(shape, dtype=np.float32)
    scene = _blur(scene, 0.5) + noise
    return np.clip(np.round(scene), -1024, 3071).astype(np.int16), label


def _lits_tumours(rng, liver: Array, liver_hu: float, shape) -> tuple[Array, Array]:
    """A few small ellipsoidal lesions inside the liver, darker or brighter than it."""
    mask = np.zeros(shape, dtype=bool)
    intensity = np.zeros(shape, dtype=np.float32)
    count = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.45, 0.3, 0.15]))
    liver_voxels = np.flatnonzero(liver)
    if liver_voxels.size == 0:
        return mask, intensity
    slices, rows, cols = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(count):
        s0, r0, c0 = np.unravel_index(rng.choice(liver_voxels), shape)
        radius = rng.uniform(0.03, 0.1) * shape[1]
        depth = rng.uniform(0.6, 2.2)
        lesion = ((rows - r0) / radius) ** 2 + ((cols - c0) / (radius * rng.uniform(0.7, 1.3))) ** 2
        lesion = lesion + ((slices - s0) / depth) ** 2 <= 1.0
        mask |= lesion & liver
        contrast = rng.choice([-1.0, 1.0], p=[0.75, 0.25]) * rng.uniform(12, 35)
        intensity = np.where(lesion, liver_hu + contrast, intensity)
    return mask, intensity


# ---------------------------------------------------------------------------------------------
# MM-WHS: whole-heart MRI, seven structures of very different sizes, real label codes.


def _write_mmwhs(out: Path, index: int, patients: int, rng: np.random.Generator, n_slices: int,
                 size: int) -> None:
    in_plane = float(rng.uniform(0.95, 1.25))
    zooms = (in_plane, in_plane, float(rng.uniform(1.6, 2.0)))
    scene, classes = _mmwhs_scene(rng, n_slices, size)
    image = _mr_signal(rng, scene, noise=rng.uniform(0.05, 0.09), bias=rng.uniform(0.2, 0.4))
    codes = np.array(DATASET_KINDS["mmwhs"].label_codes, dtype=np.int16)
    name = f"mr_train_{1001 + index}"
    _save(image, zooms, out / f"{name}_image.nii.gz")
    _save(codes[classes], zooms, out / f"{name}_label.nii.gz")


def _mmwhs_scene(rng: np.random.Generator, n_slices: int, size: int) -> tuple[Array, Array]:
    """Scene and class-index map; classes follow DATASET_KINDS['mmwhs'] (1 Myo ... 7 PA)."""
    rows, cols = _grid(size)
    t = _slice_positions(rng, n_slices, (-0.08, 0.0), (1.0, 1.08))  # 0 = apex, 1 = great vessels
    centre, drift = rng.uniform(-0.12, 0.12, size=2), rng.uniform(-0.1, 0.1, size=2)
    angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.85, 1.15)
    a, b = _local(rows, cols, centre[0] + drift[0] * t, centre[1] + drift[1] * t, angle, scale)

    def jitter() -> float:
        return rng.uniform(0.85, 1.15)

    base = rng.uniform(0.55, 0.65)
    lv = 0.2 * jitter() * _cap(t, 0.04, base)
    outer = lv + 0.09 * jitter() * _cap(t, 0.0, base + 0.02)
    rv_scale = jitter() * _cap(t, 0.12, base - 0.02)
    rv_a, rv_b = 0.8 * rv_scale * outer, 1.3 * rv_scale * outer
    myo = _inside(a, b, 0, 0, outer, outer, _wobble(rng, 0.05))  # a disk; LV is painted over it
    rv = _inside(a, b, 0.6 * outer + 0.4 * rv_a, 0, rv_a, rv_b, _wobble(rng, 0.1)) & ~myo
    shapes = {  # class index -> mask, painted in this order (later ones on top)
        2: _inside(a, b, -0.05, -0.3, 0.2 * jitter() * _bell(t, 0.48, 0.9),
                   0.14 * jitter() * _bell(t, 0.48, 0.9), _wobble(rng, 0.1)),  # LA
        4: _inside(a, b, 0.32, -0.12, 0.17 * jitter() * _bell(t, 0.4, 0.88),
                   0.15 * jitter() * _bell(t, 0.4, 0.88), _wobble(rng, 0.1)),  # RA
        1: myo,
        3: _inside(a, b, 0, 0, lv, lv, _wobble(rng, 0.05)),  # LV
        5: rv,
        6: _inside(a, b, 0.08, 0.02 + 0.1 * (t - 0.6), 0.075 * jitter(),
                   0.075 * (t >= base + rng.uniform(-0.03, 0.03)), ()),  # ascending aorta: a tube
        7: _inside(a, b, -0.14, 0.26, 0.065 + 0.1 * np.clip((t - 0.9) / 0.15, 0, 1),
                   0.065 * jitter() * (t >= rng.uniform(0.68, 0.75)), ()),  # pulmonary artery
    }
    classes = np.zeros(np.broadcast_shapes(a.shape, t.shape), dtype=np.int64)
    brightness = {1: 0.34, 2: 0.74, 3: 0.8, 4: 0.72, 5: 0.76, 6: 0.82, 7: 0.78}
    scene = _thorax(rng, rows, cols, 1.0 - t, angle)
    for cls, mask in shapes.items():
        classes[mask] = cls
        scene = np.where(mask, brightness[cls] + rng.uniform(-0.03, 0.03), scene)
    return _blur(scene, 0.6), classes


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=sorted(_KIND_SEED))
    parser.add_argument("--out", required=True, type=Path, help="raw dataset folder to write")
    parser.add_argument("--patients", type=int, help="default: 100 ACDC, 60 LiTS, 20 MM-WHS")
    parser.add_argument("--slices", type=int, nargs=2, default=(6, 12), metavar=("LOW", "HIGH"))
    parser.add_argument("--size", type=int, default=64, help="in-plane pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    patients = args.patients if args.patients is not None else DEFAULT_PATIENTS[args.kind]
    return _run_cli(
        lambda: generate(args.kind, args.out, patients=patients, slices=tuple(args.slices),
                         size=args.size, seed=args.seed)
    )


def _run_cli(action: Callable[[], object]) -> int:
    try:
        action()
    except DataError as error:
        print("error: problems in the input data:", file=sys.stderr)
        for message in error.messages:
            print(f"  {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
