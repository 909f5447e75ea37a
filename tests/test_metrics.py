"""`mona.evaluate.metrics` against medpy, the empty-mask policies, summaries and the pool."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from mona.evaluate import metrics

medpy_surface_distances = getattr(medpy_binary, "__surface_distances")

REL = 1e-9
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=0.0)


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """A non-empty mask: noise, several boxes, one box, or a single voxel (any may touch the
    border, boxes are clipped by it)."""
    mask = np.zeros(shape, dtype=bool)
    if kind == "noise":
        mask = rng.random(shape) < rng.uniform(0.05, 0.7)
    elif kind in ("boxes", "box"):
        for _ in range(rng.integers(2, 5) if kind == "boxes" else 1):
            low = [rng.integers(-2, n) for n in shape]
            size = [rng.integers(1, max(2, n // 2 + 2)) for n in shape]
            box = tuple(slice(max(lo, 0), max(lo + s, 0)) for lo, s in zip(low, size, strict=True))
            mask[box] = True
    if not mask.any():  # also the "voxel" kind: a single-voxel object
        mask[tuple(rng.integers(0, n) for n in shape)] = True
    return mask


@st.composite
def mask_pairs(draw: st.DrawFn, ndim: int) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    limits = {2: (16, 16), 3: (12, 16, 16)}[ndim]
    shape = tuple(draw(st.integers(1, n)) for n in limits)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = st.sampled_from(["noise", "boxes", "box", "voxel"])
    ref = random_mask(rng, shape, draw(kinds))
    if draw(st.booleans()):
        pred = random_mask(rng, shape, draw(kinds))
    else:  # a near-miss of the reference: a few voxels flipped
        pred = ref ^ (rng.random(shape) < 0.1)
        if not pred.any():
            pred = ref.copy()
    spacing = draw(
        st.none() | st.tuples(*[st.floats(0.3, 5.0, allow_nan=False) for _ in range(ndim)])
    )
    return pred, ref, spacing


def check_against_medpy(pred: np.ndarray, ref: np.ndarray, spacing: tuple | None) -> None:
    to_ref, to_pred = metrics.surface_distances(pred, ref, spacing)
    np.testing.assert_allclose(to_ref, medpy_surface_distances(pred, ref, spacing), rtol=REL)
    np.testing.assert_allclose(to_pred, medpy_surface_distances(ref, pred, spacing), rtol=REL)
    assert close(metrics.dice(pred, ref), medpy_binary.dc(pred, ref))
    assert close(metrics.asd(pred, ref, spacing), medpy_binary.asd(pred, ref, spacing))
    assert close(metrics.asd(ref, pred, spacing), medpy_binary.asd(ref, pred, spacing))
    assert close(metrics.assd(pred, ref, spacing), medpy_binary.assd(pred, ref, spacing))
    assert close(metrics.hd95(pred, ref, spacing), medpy_binary.hd95(pred, ref, spacing))


@FAST
@given(mask_pairs(ndim=2))
def test_2d_masks_match_medpy(case):
    check_against_medpy(*case)


@FAST
@given(mask_pairs(ndim=3))
def test_3d_masks_match_medpy(case):
    check_against_medpy(*case)


@FAST
@given(mask_pairs(ndim=3))
def test_score_case_matches_medpy_on_a_label_map(case):
    pred, ref, spacing = case
    # class 2 is the mask; class 1 the first few rows of its complement, so classes interleave
    pred_labels, ref_labels = np.where(pred, 2, 0), np.where(ref, 2, 0)
    pred_labels[:1][pred_labels[:1] == 0] = 1
    ref_labels[:2][ref_labels[:2] == 0] = 1
    for asd_mode, medpy_asd in (("directed", medpy_binary.asd), ("symmetric", medpy_binary.assd)):
        scores = metrics.score_case(pred_labels, ref_labels, 3, spacing or (1.0, 1.0, 1.0),
                                    asd_mode=asd_mode, units="mm", empty="strict")
        for label in (1, 2):
            p, r = pred_labels == label, ref_labels == label
            if not (p.any() and r.any()):
                continue
            i = label - 1
            assert close(scores["dice"][i], medpy_binary.dc(p, r))
            assert close(scores["asd"][i], medpy_asd(p, r, spacing))
            assert close(scores["hd95"][i], medpy_binary.hd95(p, r, spacing))


@pytest.mark.parametrize("shape", [(5,), (7, 1), (1, 6, 9), (9, 8, 7)])
def test_surface_is_mask_minus_its_cross_erosion(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        mask = rng.random(shape) < rng.uniform(0.2, 0.95)
        cross = ndimage.generate_binary_structure(mask.ndim, 1)
        expected = mask ^ ndimage.binary_erosion(mask, structure=cross, iterations=1)
        np.testing.assert_array_equal(metrics._surface(mask), expected)


def test_small_objects_far_inside_a_larger_volume_and_at_its_borders():
    """Exercises the crop: objects at the corners and faces, and one far from the border."""
    shape = (30, 40, 36)
    spacing = (3.0, 0.8, 1.1)
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    ref[0:3, 0:5, 30:36] = True  # touches three faces
    ref[14:17, 18:24, 10:15] = True  # interior
    pred[0:2, 1:5, 31:36] = True
    pred[15:18, 17:22, 11:16] = True
    pred[29, 39, 0] = True  # single voxel in the opposite corner
    check_against_medpy(pred, ref, spacing)
    check_against_medpy(ref, pred, spacing)
    full = np.ones(shape, bool)  # surface is the whole array border
    check_against_medpy(full, ref, spacing)


def test_one_dimensional_and_scalar_inputs_match_medpy():
    pred = np.array([0, 1, 1, 0, 0, 0, 1])
    ref = np.array([1, 1, 0, 0, 0, 0, 0])
    check_against_medpy(pred, ref, (0.5,))
    check_against_medpy(np.array(1), np.array(1), None)


def test_hand_computed_directed_and_symmetric_values():
    ref = np.zeros((3, 6), np.uint8)
    pred = np.zeros((3, 6), np.uint8)
    ref[0, 0] = 1
    pred[0, 0] = pred[0, 4] = 1
    spacing = (2.0, 0.5)
    # pred->ref: [0, 4 * 0.5] ; ref->pred: [0]
    to_ref, to_pred = metrics.surface_distances(pred, ref, spacing)
    assert list(to_ref) == [0.0, 2.0] and list(to_pred) == [0.0]
    assert metrics.asd(pred, ref, spacing) == 1.0
    assert metrics.asd(ref, pred, spacing) == 0.0
    assert metrics.assd(pred, ref, spacing) == pytest.approx(2.0 / 3.0)
    assert metrics.hd95(pred, ref, spacing) == pytest.approx(1.8)  # linear percentile of [0,0,2]
    assert metrics.dice(pred, ref) == pytest.approx(2 * 1 / 3)
    labels_pred, labels_ref = pred.astype(int), ref.astype(int)
    directed = metrics.score_case(labels_pred, labels_ref, 2, spacing, asd_mode="directed")
    symmetric = metrics.score_case(labels_pred, labels_ref, 2, spacing, asd_mode="symmetric")
    in_voxels = metrics.score_case(labels_pred, labels_ref, 2, spacing, asd_mode="directed",
                                   units="voxel")
    assert directed["asd"] == [1.0] and symmetric["asd"] == [pytest.approx(2.0 / 3.0)]
    assert in_voxels["asd"] == [2.0] and in_voxels["hd95"] == [pytest.approx(3.6)]


def test_distance_functions_refuse_empty_masks_and_dice_of_two_empties_is_one():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    for fn in (metrics.asd, metrics.assd, metrics.hd95, metrics.surface_distances):
        with pytest.raises(ValueError, match="no object"):
            fn(empty, full)
        with pytest.raises(ValueError, match="no object"):
            fn(full, empty)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dice(empty, full) == 0.0


# Empty-mask policies. Class 1 is a normal, perfectly predicted class in every case; class 2
# is empty in the prediction, the reference or both.
def label_maps(class2_in_pred: bool, class2_in_ref: bool) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.zeros((4, 6, 6), np.int64), np.zeros((4, 6, 6), np.int64)
    pred[1:3, 1:3, 1:3] = ref[1:3, 1:3, 1:3] = 1
    if class2_in_pred:
        pred[0, 4:, 4:] = 2
    if class2_in_ref:
        ref[3, 0, 4:] = 2
    return pred, ref


EMPTY_CASES = {
    # name: (class 2 in pred, class 2 in ref)
    "pred empty": (False, True),
    "ref empty": (True, False),
    "both empty": (False, False),
}
EXPECTED = {
    # (policy, case): (dice, asd, hd95) of class 2
    ("official", "pred empty"): (0.0, 0.0, 0.0),
    ("official", "ref empty"): (1.0, 0.0, 0.0),
    ("official", "both empty"): (0.0, 0.0, 0.0),
    ("strict", "pred empty"): (0.0, None, None),
    ("strict", "ref empty"): (0.0, None, None),
    ("strict", "both empty"): (None, None, None),
}


@pytest.mark.parametrize(("policy", "case"), sorted(EXPECTED))
@pytest.mark.parametrize("asd_mode", ["directed", "symmetric"])
def test_empty_mask_policy(policy, case, asd_mode):
    in_pred, in_ref = EMPTY_CASES[case]
    pred, ref = label_maps(in_pred, in_ref)
    scores = metrics.score_case(pred, ref, 3, (2.5, 0.7, 0.7), asd_mode=asd_mode, units="mm",
                                empty=policy)
    assert scores["dice"] == [1.0, EXPECTED[policy, case][0]]
    assert scores["asd"] == [0.0, EXPECTED[policy, case][1]]
    assert scores["hd95"] == [0.0, EXPECTED[policy, case][2]]
    assert scores["pred_empty"] == [False, not in_pred]
    assert scores["ref_empty"] == [False, not in_ref]
    values = [v for key in ("dice", "asd", "hd95") for v in scores[key] if v is not None]
    assert all(type(v) is float and not math.isnan(v) for v in values)


def test_score_case_rejects_bad_arguments():
    pred, ref = label_maps(True, True)
    with pytest.raises(ValueError, match="spacing"):
        metrics.score_case(pred, ref, 3, None, units="mm")
    with pytest.raises(ValueError, match="one value per axis"):
        metrics.score_case(pred, ref, 3, (1.0, 1.0), units="mm")
    with pytest.raises(ValueError, match="asd_mode"):
        metrics.score_case(pred, ref, 3, None, asd_mode="mean", units="voxel")
    with pytest.raises(ValueError, match="shape"):
        metrics.score_case(pred, ref[:-1], 3, None, units="voxel")
    # units="voxel" ignores the spacing entirely
    assert metrics.score_case(pred, ref, 3, (9.0, 9.0, 9.0), units="voxel") == metrics.score_case(
        pred, ref, 3, None, units="voxel"
    )


def test_summarize_means_and_exclusions():
    cases = [
        {"dice": [0.8, 0.4], "asd": [2.0, None], "hd95": [4.0, None],
         "pred_empty": [False, False], "ref_empty": [False, True]},
        {"dice": [0.6, None], "asd": [1.0, 3.0], "hd95": [2.0, 6.0],
         "pred_empty": [False, True], "ref_empty": [False, True], "case_id": "extra key"},
        {"dice": [None, None], "asd": [None, None], "hd95": [None, None],
         "pred_empty": [True, True], "ref_empty": [True, True]},
    ]
    summary = metrics.summarize(cases)
    assert summary["n_cases"] == 3
    # case means: dice 0.6, 0.6 (third case has nothing); asd 2.0, 2.0; hd95 4.0, 4.0
    assert summary["dsc"] == pytest.approx(0.6)
    assert summary["asd"] == pytest.approx(2.0)
    assert summary["hd95"] == pytest.approx(4.0)
    assert summary["dsc_per_class"] == [pytest.approx(0.7), pytest.approx(0.4)]
    assert summary["asd_per_class"] == [pytest.approx(1.5), pytest.approx(3.0)]
    assert summary["dsc_excluded"] == 3
    assert summary["asd_excluded"] == 3
    assert summary["hd95_excluded"] == 3


def test_summarize_with_everything_excluded_gives_none_not_nan():
    case = {"dice": [None], "asd": [None], "hd95": [None], "pred_empty": [True],
            "ref_empty": [True]}
    summary = metrics.summarize([case, case])
    assert summary["dsc"] is None and summary["asd"] is None and summary["hd95"] is None
    assert summary["asd_per_class"] == [None] and summary["asd_excluded"] == 2
    assert metrics.summarize([])["n_cases"] == 0


def test_parallel_scoring_equals_serial_and_keeps_order():
    rng = np.random.default_rng(7)
    pairs = []
    for i in range(5):
        shape = (6 + i, 10, 9)
        ref = rng.integers(0, 3, shape)
        pred = np.where(rng.random(shape) < 0.2, rng.integers(0, 3, shape), ref)
        pairs.append((pred, ref, (2.0 + i, 0.7, 0.9)))
    pairs.append((np.zeros((4, 5, 6), int), np.ones((4, 5, 6), int), (1.0, 1.0, 1.0)))
    switches = {"asd_mode": "directed", "units": "mm", "empty": "official"}
    serial = metrics.score_cases_parallel(pairs, 3, workers=1, **switches)
    parallel = metrics.score_cases_parallel(iter(pairs), 3, workers=2, **switches)
    assert parallel == serial
    assert serial == [metrics.score_case(p, r, 3, s, **switches) for p, r, s in pairs]
    assert serial[-1]["pred_empty"] == [True, True]
    with pytest.raises(ValueError, match="unknown"):
        metrics.score_cases_parallel(pairs, 3, workers=2, asd="directed")
