"""Print each method's effective unsupervised weight x lr summed over training, for a config.

    .venv/bin/python benchmarks/unsup_weight.py config/paper.yaml
    .venv/bin/python benchmarks/unsup_weight.py config/paper.yaml --baselines reference

For every method of the config's tables that has a ramped unsupervised term: the steps the
ramp spans, the step at which the term reaches full weight, the lr (as a fraction of its
start) at that step, and sum_t lr(t) x w(t). A term that reaches full weight only after
the lr has decayed tenfold trains its method as little more than its supervised part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mona.audit import unsupervised_schedule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--baselines", choices=["shared", "reference"], default=None,
                        help="override protocol.baselines")  # fmt: skip
    parser.add_argument("--ramp-over-run", action="store_true",
                        help="lay ramps over the whole run (the old layout)")  # fmt: skip
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    if args.baselines:
        config.setdefault("protocol", {})["baselines"] = args.baselines
    methods = sorted({m for t in config.get("tables", {}).values() for m in t["methods"]})
    switch = config.get("protocol", {}).get("baselines", "shared")
    print(f"{args.config} protocol.baselines={switch}")
    header = f"{'method':8} {'iters':>6} {'ramp':>6} {'full at':>8} {'lr there':>9}"
    print(f"{header} {'sum lr x w':>11}")
    for method in methods:
        schedule = unsupervised_schedule(config, method, ramp_over_run=args.ramp_over_run)
        if schedule.weight is None:
            continue
        full = schedule.full_weight_step()
        print(
            f"{method:8} {schedule.iterations:6d} {schedule.ramp_iterations:6d} {full:8d} "
            f"{schedule.lr_factor[full]:9.4f} {schedule.weighted_lr_sum():11.3f}"
        )


if __name__ == "__main__":
    main()
