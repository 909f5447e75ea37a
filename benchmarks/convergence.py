"""Dice against iterations for the bounds (UNet-F, and UNet-L at the lowest ratio) of a config.

    .venv/bin/python benchmarks/convergence.py                      # config/config.yaml
    .venv/bin/python benchmarks/convergence.py --datasets acdc --multiples 1 2 4 \
        --candidate "{image_size: 64, widths: [16, 32, 64, 128, 256], iterations: 600}"

For each synthetic dataset of the config and each candidate `train:` setting (the config's own
for that dataset first, then every `--candidate`, a YAML mapping laid over it), trains UNet-F
and UNet-L with the real engine at `iterations x m` for each multiple m (the schedule
stretched, as a longer `train.iterations` would), scores the test patients as the DAG does,
and prints one line per run: Dice (%), seconds, and whether UNet-F is at its plateau: within
`--tolerance` points of its Dice at the largest multiple. Seed 0 (`--seeds` for more: one
line per seed, then the seeds' mean and std per length, since a single run's Dice can
scatter by more than the tolerance), one thread; no assertion, the numbers are the result.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mona.config import dataset_train, protocol  # noqa: E402
from mona.data.preprocess import preprocess  # noqa: E402
from mona.data.splits import make_split  # noqa: E402
from mona.data.synthetic import generate  # noqa: E402
from mona.evaluate.run import evaluate_run  # noqa: E402
from mona.io import read_json, write_json  # noqa: E402
from mona.workflow import train_run  # noqa: E402


def prepare(config: dict, dataset: str, image_size: int, root: Path) -> tuple[Path, Path]:
    """Generated raw data, preprocessed at `image_size`, and the config's split of it."""
    spec = config["datasets"][dataset]
    synthetic = spec["synthetic"]
    raw = root / "raw" / dataset
    processed = root / f"processed{image_size}" / dataset
    if not (processed / "manifest.json").exists():
        if not raw.exists():
            generate(spec["kind"], raw, patients=synthetic["patients"],
                     slices=tuple(synthetic["slices"]), size=synthetic["size"],
                     seed=synthetic.get("seed", 0))  # fmt: skip
        preprocess(spec["kind"], raw, processed, image_size=image_size, progress=False)
    switches = protocol(config, dataset)
    split_path = processed.parent / f"{dataset}.split.json"
    manifest = read_json(processed / "manifest.json")
    fractions = spec.get("fractions", [0.6, 0.2, 0.2])
    write_json(make_split(manifest, switches["split"], fractions, switches["split_seed"]),
               split_path)  # fmt: skip
    return processed, split_path


def score(config, dataset, method, ratio, processed, split_path, run_dir,
          seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """(test Dice %, training seconds) of one run."""
    started = time.perf_counter()
    record = train_run(
        config, dataset=dataset, method=method, ratio=ratio, seed=seed, stage="train",
        manifest_path=processed / "manifest.json", split_path=split_path, run_dir=run_dir,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    metrics = evaluate_run(
        run_dir / "model.pt", processed, read_json(split_path), protocol(config, dataset),
        record, run_dir / "metrics.json",
    )  # fmt: skip
    return 100.0 * metrics["summary"]["dsc"], seconds


def report(dataset: str, index: int, method: str, seed: str, results: list, tolerance: float,
           spread: bool = False) -> None:  # fmt: skip
    """One line per length: Dice, seconds (or the seeds' std) and, for UNet-F, the plateau."""
    final = results[-1][1]
    for iterations, dice, last in results:
        plateau = ("yes" if final - dice <= tolerance else "no") if method == "unet_f" else ""
        last = f"+-{last:.1f}" if spread else f"{last:.1f}"
        print(f"{dataset:7} {index:9d} {method:7} {seed:>4} {iterations:6d} {dice:7.1f} "
              f"{last:>8}  {plateau}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--candidate", action="append", default=[],
                        help="YAML mapping of train: settings laid over the config's")  # fmt: skip
    parser.add_argument("--multiples", nargs="*", type=int, default=[1, 4])
    parser.add_argument("--tolerance", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--bounds", nargs="*", default=["unet_f", "unet_l"],
                        choices=["unet_f", "unet_l"], help="which bounds to train")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--only-candidates", action="store_true",
                        help="skip the config's own settings (candidate 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = yaml.safe_load(args.config.read_text())
    datasets = args.datasets or [
        d for d, spec in base["datasets"].items() if spec["raw"] == "synthetic"
    ]
    candidates = [{}] + [yaml.safe_load(text) for text in args.candidate]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="convergence-"))
    lowest = str(min(base["ratios"]))
    print(f"{'dataset':7} {'candidate':>9} {'method':7} {'seed':>4} {'iters':>6} {'dice %':>7} "
          f"{'seconds':>8}  plateau")  # fmt: skip
    for index, overrides in enumerate(candidates):
        if index == 0 and args.only_candidates:
            continue
        for dataset in datasets:
            config = copy.deepcopy(base)
            # the dataset's own train keys first, then the candidate's over them
            config["train"] = {**dataset_train(base, dataset), **overrides}
            config["datasets"][dataset].pop("train", None)
            train = config["train"]
            processed, split_path = prepare(config, dataset, train["image_size"], root)
            bounds = [b for b in (("unet_f", "all"), ("unet_l", lowest)) if b[0] in args.bounds]
            for method, ratio in bounds:
                by_length: dict[int, list[float]] = {}
                for seed in args.seeds:
                    results = []
                    for multiple in sorted(args.multiples):
                        run = copy.deepcopy(config)
                        run["train"]["iterations"] = train["iterations"] * multiple
                        run["train"]["stage_iterations"] = {}
                        run_dir = root / f"c{index}" / dataset / method / f"s{seed}x{multiple}"
                        dice, seconds = score(run, dataset, method, ratio, processed,
                                              split_path, run_dir, seed)  # fmt: skip
                        results.append((run["train"]["iterations"], dice, seconds))
                        by_length.setdefault(run["train"]["iterations"], []).append(dice)
                    report(dataset, index, method, f"s{seed}", results, args.tolerance)
                if len(args.seeds) > 1:
                    means = [(n, statistics.mean(d), statistics.stdev(d))
                             for n, d in sorted(by_length.items())]  # fmt: skip
                    report(dataset, index, method, "mean", means, args.tolerance, spread=True)
    for index, overrides in enumerate(candidates):
        print(f"candidate {index}: {overrides or 'the config as is'}")


if __name__ == "__main__":
    main()
