"""What a config's DAG will cost: its jobs (from Snakemake's own plan) times measured rates.

The plan is Snakemake's dry run of the targets with every job forced, so the count is the
Snakefile's, not a second copy of its logic. A rates file holds seconds per training iteration
of each (method, stage) at one config's settings on one device, seconds per evaluated run of
each dataset, and the start-up of a job's process; `benchmarks/grid_cost.py` measures and uses
it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TRAIN_RULES = ("train", "plateau_train")
EVALUATE_RULES = ("evaluate", "evaluate_stage", "plateau_evaluate")
_JOB = re.compile(r"^(?:local)?rule (\w+):\s*$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of `snakemake -n` output: one per `rule NAME:` block, with its wildcards."""
    jobs: list[Job] = []
    for line in text.splitlines():
        if match := _JOB.match(line):
            jobs.append(Job(match.group(1)))
        elif jobs and (match := _WILDCARDS.match(line)):
            for item in match.group(1).split(", "):
                key, _, value = item.partition("=")
                jobs[-1].wildcards[key] = value
    return jobs


def plan(config: dict, targets: list[str]) -> list[Job]:
    """Every job the Snakefile would run for `targets` from nothing (`--forceall`).

    Real raw folders the config names need not exist here: empty stand-ins take their place,
    as the plan depends on the config, not on the data.
    """
    config = yaml.safe_load(yaml.safe_dump(config))
    with tempfile.TemporaryDirectory(prefix="grid-cost-") as tmp:
        root = Path(tmp)
        for name, spec in config["datasets"].items():
            if spec["raw"] != "synthetic":
                stand_in = root / "raw" / name
                stand_in.mkdir(parents=True)
                spec["raw"] = str(stand_in)
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
             "--directory", str(root), "--configfile", str(root / "config.yaml"),
             "--cores", "1", "--dry-run", "--forceall", *targets],
            capture_output=True, text=True,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"snakemake could not plan {targets}:\n{result.stderr[-2000:]}")
    return parse_dry_run(result.stdout)


@dataclass
class Cost:
    """Seconds of one worker per part of the grid, and what the rates file did not cover."""

    train: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    iterations: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    evaluate: float = 0.0
    validate: float = 0.0
    startup: float = 0.0
    jobs: Counter = field(default_factory=Counter)
    missing: set[tuple[str, str]] = field(default_factory=set)

    @property
    def total(self) -> float:
        return sum(self.train.values()) + self.validate + self.evaluate + self.startup


def grid_cost(config: dict, jobs: list[Job], rates: dict) -> Cost:
    """Seconds each planned job costs one worker: iterations x seconds per iteration for the
    training jobs (every configured seed, or the plateau run's one at its multiple) and, under
    `checkpoint: best_val`, their validations every `val_every` iterations, runs x seconds per
    run for the evaluations, and one process start-up per job."""
    from mona.config import protocol, split_variant, stretched_config, train_config

    seeds = len(config["seeds"])
    cost = Cost()
    for job in jobs:
        cost.jobs[job.rule] += 1
        w = job.wildcards
        if job.rule in TRAIN_RULES:
            name = split_variant(w["method"])[0]
            runs, schedule = seeds, config
            if job.rule == "plateau_train":
                runs, schedule = 1, stretched_config(config, int(w["multiple"]))
            train = train_config(schedule, w["method"], w["dataset"])
            iterations = runs * train.iterations_for(w["stage"])
            key = (name, w["stage"])
            # the engine validates during training only to pick the best weights (rates say
            # which datasets have validation patients)
            validations = 0
            if protocol(config, w["dataset"])["checkpoint"] == "best_val":
                validations = runs * (train.iterations_for(w["stage"]) // train.val_every)
            cost.validate += validations * rates.get("validate", {}).get(w["dataset"], 0.0)
            cost.iterations[key] += iterations
            rate = rates["train"].get(f"{name}/{w['stage']}")
            if rate is None:
                cost.missing.add(key)
            else:
                cost.train[key] += iterations * rate
        elif job.rule in EVALUATE_RULES:
            runs = 1 if job.rule == "plateau_evaluate" else seeds
            cost.evaluate += runs * rates["evaluate"].get(w["dataset"], 0.0)
        else:
            continue
        cost.startup += rates.get("job_startup_s", 0.0)
    return cost


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
