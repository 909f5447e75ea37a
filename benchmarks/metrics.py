"""Time `mona.evaluate.metrics` against `medpy.metric.binary` on one LiTS-sized liver mask.

Array axis order (S, H, W) = (slice, row, col), shape (120, 512, 512), spacing (2.5, 0.7, 0.7)
mm. The reference is an ellipsoid of liver size (semi-axes 75 x 75 x 100 mm); the prediction is
a slightly different ellipsoid shifted by (1, 3, -4) voxels. Prints median times, their ratio,
and checks that the values agree to 1e-9 relative (exit status 1 if not).

Run: .venv/bin/python benchmarks/metrics.py [--skip-pooled]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from medpy.metric import binary as medpy_binary

from mona.evaluate import metrics

SHAPE = (120, 512, 512)
SPACING = (2.5, 0.7, 0.7)
TARGET_SPEEDUP = 15.0


def ellipsoid(center: tuple[float, ...], semi_axes_mm: tuple[float, ...]) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    axes = zip(grid, center, SPACING, semi_axes_mm, strict=True)
    inside = sum(((g - c) * s / a) ** 2 for g, c, s, a in axes)
    return inside <= 1.0


def median_time(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(runs):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-pooled", action="store_true", help="skip the assd + hd95 timing")
    args = parser.parse_args()

    ref = ellipsoid((60.0, 250.0, 256.0), (75.0, 75.0, 100.0))
    pred = ellipsoid((61.0, 253.0, 252.0), (72.5, 77.0, 97.0))
    print(f"volume {SHAPE} (S, H, W), spacing {SPACING} mm, "
          f"reference {int(ref.sum())} voxels, prediction {int(pred.sum())} voxels")
    ok = True

    t_medpy, v_medpy = median_time(
        lambda: medpy_binary.asd(pred, ref, voxelspacing=SPACING), runs=3)
    t_ours, v_ours = median_time(lambda: metrics.asd(pred, ref, SPACING), runs=7)
    ok &= same(v_ours, v_medpy)
    print(f"asd   medpy {t_medpy:7.3f} s (median of 3)   ours {t_ours:7.3f} s (median of 7)   "
          f"speed-up {t_medpy / t_ours:5.1f}x   values {v_medpy:.12g} / {v_ours:.12g}")

    if not args.skip_pooled:
        def medpy_pooled() -> tuple[float, float]:
            return (medpy_binary.assd(pred, ref, voxelspacing=SPACING),
                    medpy_binary.hd95(pred, ref, voxelspacing=SPACING))

        def ours_pooled() -> tuple[float, float]:
            case = metrics.score_case(pred.astype(np.uint8), ref.astype(np.uint8), 2, SPACING,
                                      asd_mode="symmetric", units="mm", empty="strict")
            return case["asd"][0], case["hd95"][0]

        t_medpy2, (assd_m, hd_m) = median_time(medpy_pooled, runs=1)
        t_ours2, (assd_o, hd_o) = median_time(ours_pooled, runs=5)
        ok &= same(assd_o, assd_m) and same(hd_o, hd_m)
        print(f"assd+hd95   medpy {t_medpy2:7.3f} s (1 run)   ours score_case {t_ours2:7.3f} s "
              f"(median of 5, also Dice)   speed-up {t_medpy2 / t_ours2:5.1f}x   "
              f"assd {assd_m:.12g} / {assd_o:.12g}   hd95 {hd_m:.12g} / {hd_o:.12g}")

    ratio = t_medpy / t_ours
    print("values equal" if ok else "VALUES DIFFER")
    print(f"asd speed-up {ratio:.1f}x: {'meets' if ratio >= TARGET_SPEEDUP else 'BELOW'} "
          f"the {TARGET_SPEEDUP:.0f}x target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
