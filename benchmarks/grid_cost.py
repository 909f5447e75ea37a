"""What a reproduction will take: a config's planned jobs times measured per-method rates.

    # measure seconds per iteration of every (method, stage) the targets plan, at the config's
    # settings, on this device (one thread on a CPU), and seconds per evaluated run
    .venv/bin/python benchmarks/grid_cost.py rates config/config.yaml results/table1.csv \
        --out benchmarks/rates/cpu.json
    # the grid's cost from those rates, for a number of concurrent workers (cores or GPU slots)
    .venv/bin/python benchmarks/grid_cost.py cost config/config.yaml results/table1.csv \
        --rates benchmarks/rates/cpu.json --workers 2

The plan is Snakemake's own (`mona.cost.plan`); a rate measured under other train settings
than the config's is refused, as the cost would be of another grid.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mona.config import (  # noqa: E402
    augment_config,
    dataset_train,
    method_hparams,
    protocol,
    split_variant,
    train_config,
)
from mona.cost import EVALUATE_RULES, TRAIN_RULES, grid_cost, hours, plan  # noqa: E402
from mona.data.preprocess import preprocess  # noqa: E402
from mona.data.splits import labeled_subset, make_split  # noqa: E402
from mona.data.synthetic import generate  # noqa: E402
from mona.engine import RunSpec, Trainer, pick_device  # noqa: E402
from mona.evaluate.run import evaluate_run  # noqa: E402
from mona.io import read_json, write_json  # noqa: E402
from mona.provenance import cpu_model  # noqa: E402

# what makes a step cost what it does; a rates file records them and must match the config
COST_SETTINGS = ("image_size", "widths", "backbone", "batch_labeled", "batch_unlabeled",
                 "bf16", "channels_last", "upsample", "optimizer")  # fmt: skip


def cost_settings(config: dict, dataset: str | None = None) -> dict:
    train = train_config(config, dataset=dataset)
    return {key: getattr(train, key) for key in COST_SETTINGS}


def device_name() -> str:
    device = pick_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"cpu: {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} thread(s) per job, {os.cpu_count()} cores")


def prepare(config: dict, dataset: str, root: Path) -> tuple[Path, dict]:
    """The dataset as the config generates and preprocesses it, and its split."""
    spec = config["datasets"][dataset]
    # real data need not be here: a synthetic stand-in of the same kind and slice size costs
    # the same per training step (scoring real volumes, larger, costs more)
    synthetic = spec.get("synthetic") if spec["raw"] == "synthetic" else None
    if synthetic is None:
        size = max(64, int(dataset_train(config, dataset).get("image_size", 256)))
        synthetic = {"patients": 20, "slices": [8, 14], "size": size, "seed": 0}
        print(f"datasets.{dataset}: rates on a synthetic stand-in ({synthetic})", flush=True)
    if spec["kind"] == "nnunet":
        raise SystemExit(f"datasets.{dataset}: no synthetic stand-in for kind nnunet")
    generate(spec["kind"], root / "raw" / dataset, patients=synthetic["patients"],
             slices=tuple(synthetic["slices"]), size=synthetic["size"],
             seed=synthetic.get("seed", 0))  # fmt: skip
    processed = root / "processed" / dataset
    preprocess(spec["kind"], root / "raw" / dataset, processed,
               image_size=dataset_train(config, dataset)["image_size"], progress=False)  # fmt: skip
    switches = protocol(config, dataset)
    split = make_split(read_json(processed / "manifest.json"), switches["split"],
                       spec.get("fractions", [0.6, 0.2, 0.2]), switches["split_seed"])  # fmt: skip
    return processed, split


def train_rate(config, dataset, run_method, stage, processed, split, run_dir, warmup, steps):
    """Seconds per iteration of one stage through the real engine, after `warmup` steps."""
    name = split_variant(run_method)[0]
    measured = copy.deepcopy(config)
    measured["train"] = {**dataset_train(config, dataset), "iterations": warmup + steps,
                         "stage_iterations": {stage: warmup + steps}, "log_every": warmup,
                         "checkpoint_every": 10**9, "val_every": 10**9}  # fmt: skip
    measured["datasets"][dataset].pop("train", None)
    from mona.registry import get_method

    ratio = "all" if get_method(name).labeled_pool == "all" else str(min(config["ratios"]))
    switches = protocol(config, dataset)
    manifest = read_json(processed / "manifest.json")
    spec = RunSpec(
        dataset=dataset, method=name, run_method=run_method, ratio=ratio, seed=0, stage=stage,
        processed_dir=processed, run_dir=run_dir, split=split,
        labeled=labeled_subset(split, manifest, ratio, 0, switches["labeled"]),
        hparams=method_hparams(config, run_method), protocol=switches,
    )  # fmt: skip
    trainer = Trainer(spec, train_config(measured, run_method), augment_config(config, run_method))
    trainer.run()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    seconds = {entry["step"]: entry["seconds"] for entry in log if "seconds" in entry}
    return (seconds[warmup + steps] - seconds[warmup]) / steps, trainer


def startup_seconds() -> float:
    """A job's process start: the interpreter and the imports every rule script pays."""
    code = "import torch, mona.workflow, mona.engine, mona.evaluate.run, mona.methods"
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_rates(args: argparse.Namespace) -> None:
    config = yaml.safe_load(args.config.read_text())
    jobs = plan(config, args.targets)
    stages = sorted({(split_variant(j.wildcards["method"])[0], j.wildcards["stage"])
                     for j in jobs if j.rule in TRAIN_RULES})  # fmt: skip
    datasets = sorted({j.wildcards["dataset"] for j in jobs if j.rule in EVALUATE_RULES})
    torch.set_num_threads(args.threads)
    rates: dict = {"device": device_name(), "config": str(args.config),
                   "settings": cost_settings(config, args.dataset), "train": {},
                   "evaluate": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rates-") as tmp:
        root = Path(tmp)
        data = {d: prepare(config, d, root) for d in sorted({*datasets, args.dataset})}
        processed, split = data[args.dataset]
        for name, stage in stages:
            rate, _ = train_rate(config, args.dataset, name, stage, processed, split,
                                 root / "runs" / name / stage, args.warmup, args.steps)  # fmt: skip
            rates["train"][f"{name}/{stage}"] = rate
            print(f"train {name}/{stage}: {1000 * rate:.1f} ms/iteration", flush=True)
        rates["validate"] = {}
        for dataset in datasets:
            # a model trained long enough to predict foreground, so scoring costs what it will
            d_processed, d_split = data[dataset]
            run_dir = root / "runs" / "scored" / dataset
            _, trainer = train_rate(config, dataset, "unet_f", "train", d_processed, d_split,
                                    run_dir, 5, args.eval_steps)  # fmt: skip
            if trainer.val_cases:
                started = time.perf_counter()
                trainer.validate()
                rates["validate"][dataset] = time.perf_counter() - started
                print(f"validate {dataset}: {rates['validate'][dataset]:.2f} s", flush=True)
            record = read_json(run_dir / "train.json")
            started = time.perf_counter()
            evaluate_run(run_dir / "model.pt", d_processed, d_split, protocol(config, dataset),
                         record, root / "metrics.json")  # fmt: skip
            rates["evaluate"][dataset] = time.perf_counter() - started
            print(f"evaluate {dataset}: {rates['evaluate'][dataset]:.1f} s/run", flush=True)
    rates["job_startup_s"] = startup_seconds()
    print(f"job start-up: {rates['job_startup_s']:.1f} s", flush=True)
    rates["measured_on"] = args.dataset
    rates["note"] = args.note
    write_json(rates, args.out)
    print(f"wrote {args.out}")


def print_cost(args: argparse.Namespace) -> None:
    config = yaml.safe_load(args.config.read_text())
    rates = read_json(args.rates)
    jobs = plan(config, args.targets)
    for dataset in sorted({j.wildcards["dataset"] for j in jobs if "dataset" in j.wildcards}):
        settings = cost_settings(config, dataset)
        if rates.get("settings") != json.loads(json.dumps(settings)):
            raise SystemExit(
                f"{args.rates}: measured under train settings {rates.get('settings')}; "
                f"{dataset}'s runs train under {settings}; measure rates for them first "
                f"(rates --dataset {dataset})"
            )
    cost = grid_cost(config, jobs, rates)
    print(f"{args.config} -> {' '.join(args.targets)}; rates: {args.rates} ({rates['device']})")
    print(f"{'method/stage':24} {'iterations':>11} {'worker time':>12}")
    for key in sorted(cost.iterations, key=lambda k: -cost.train.get(k, 0.0)):
        name = "/".join(key)
        spent = hours(cost.train[key]) if key in cost.train else "no rate"
        print(f"{name:24} {cost.iterations[key]:11d} {spent:>12}")
    print(f"{'validation in training':24} {'':11} {hours(cost.validate):>12}")
    print(f"{'evaluation':24} {'':11} {hours(cost.evaluate):>12}")
    print(f"{'job start-ups':24} {sum(cost.jobs.values()):11d} {hours(cost.startup):>12}")
    print(f"total: {hours(cost.total)} of one worker; {hours(cost.total / args.workers)} wall "
          f"with {args.workers} concurrent workers")  # fmt: skip
    if cost.missing:
        listed = ", ".join("/".join(k) for k in sorted(cost.missing))
        print(f"not costed (no rate measured): {listed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rates = commands.add_parser("rates", help="measure per-method rates for a config")
    cost = commands.add_parser("cost", help="print a config's cost from a rates file")
    for sub in (rates, cost):
        sub.add_argument("config", type=Path)
        sub.add_argument("targets", nargs="+")
    rates.add_argument("--out", type=Path, required=True)
    rates.add_argument("--dataset", default="acdc", help="dataset the training rates use")
    rates.add_argument("--steps", type=int, default=20)
    rates.add_argument("--warmup", type=int, default=5)
    rates.add_argument("--threads", type=int, default=1)
    rates.add_argument("--note", default="", help="how it was measured (e.g. beside what)")
    rates.add_argument("--eval-steps", type=int, default=100,
                       help="training steps of the model whose scoring is timed")  # fmt: skip
    cost.add_argument("--rates", type=Path, required=True)
    cost.add_argument("--workers", type=int, default=1, help="concurrent jobs (cores, GPU slots)")
    args = parser.parse_args()
    (measure_rates if args.command == "rates" else print_cost)(args)


if __name__ == "__main__":
    main()
