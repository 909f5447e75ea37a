"""What each Snakemake rule runs: one small function per rule, paths in, files out.

Rules hold no logic beyond wiring paths and resources; `workflow/scripts/*.py` call `main` here
with the `snakemake` object. A `DataError` (bad input or config) ends the job with every problem
listed and exit code 2, not a traceback.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mona.errors import DataError


def synthesize(smk: Any) -> None:
    from mona.data.synthetic import generate

    dataset = smk.config["datasets"][smk.wildcards.dataset]
    synthetic = dataset["synthetic"]
    generate(
        dataset["kind"],
        Path(smk.output[0]),
        patients=synthetic["patients"],
        slices=tuple(synthetic["slices"]),
        size=synthetic["size"],
        seed=synthetic.get("seed", 0),
    )


def preprocess(smk: Any) -> None:
    from mona.config import dataset_train
    from mona.data.preprocess import preprocess as run
    from mona.engine import TrainConfig

    name = smk.wildcards.dataset
    out_dir = Path(smk.output[0]).parent
    run(
        smk.config["datasets"][name]["kind"],
        Path(smk.input[0]),
        out_dir,
        image_size=dataset_train(smk.config, name).get("image_size", TrainConfig.image_size),
    )


def split(smk: Any) -> None:
    from mona.config import protocol
    from mona.data.splits import DEFAULT_FRACTIONS, make_split
    from mona.io import read_json, write_json

    name = smk.wildcards.dataset
    switches = protocol(smk.config, name)
    manifest = read_json(Path(smk.input[0]))
    fractions = smk.config["datasets"][name].get("fractions", list(DEFAULT_FRACTIONS))
    write_json(
        make_split(manifest, switches["split"], fractions, switches["split_seed"]),
        Path(smk.output[0]),
    )


def train_run(
    config: dict,
    *,
    dataset: str,
    method: str,
    ratio: str,
    seed: int,
    stage: str,
    manifest_path: Path,
    split_path: Path,
    run_dir: Path,
    previous_stage: Path | None = None,
) -> dict:
    """Train one run (resuming it if a checkpoint exists); returns the run record."""
    from mona.config import (
        augment_config,
        method_hparams,
        protocol,
        split_variant,
        train_config,
    )
    from mona.data.splits import labeled_subset
    from mona.engine import RunSpec, Trainer
    from mona.io import read_json, write_json

    switches = protocol(config, dataset)
    split_data = read_json(split_path)
    labeled = labeled_subset(split_data, read_json(manifest_path), ratio, seed, switches["labeled"])
    write_json(labeled, run_dir / "labeled.json")
    spec = RunSpec(
        dataset=dataset,
        method=split_variant(method)[0],
        run_method=method,
        ratio=ratio,
        seed=seed,
        stage=stage,
        processed_dir=manifest_path.parent,
        run_dir=run_dir,
        split=split_data,
        labeled=labeled,
        hparams=method_hparams(config, method),
        protocol=switches,
        previous_stage=previous_stage,
        plugins=tuple(config.get("plugins", [])),
    )
    train = train_config(config, method, dataset)
    return Trainer(spec, train, augment_config(config, method)).run()


def _seed_dir(path: str) -> Path:
    """`runs/.../s{seed}/{stage}/model.pt` -> its run directory."""
    return Path(path).parent


def train(smk: Any) -> None:
    """Train every seed of one (dataset, method, ratio, stage), one after the other.

    One job per seed group, not per seed: each job is a fresh process that pays several seconds
    of imports, which would otherwise outweigh the embedded default's short runs.
    """
    import torch

    torch.set_num_threads(max(1, smk.threads))
    w = smk.wildcards
    previous = list(smk.input.previous) if "previous" in smk.input.keys() else []
    for index, (seed, model) in enumerate(zip(smk.params.seeds, smk.output, strict=True)):
        train_run(
            smk.config,
            dataset=w.dataset,
            method=w.method,
            ratio=w.ratio,
            seed=int(seed),
            stage=w.stage,
            manifest_path=Path(smk.input.manifest),
            split_path=Path(smk.input.split),
            run_dir=_seed_dir(model),
            previous_stage=Path(previous[index]) if previous else None,
        )


def evaluate(smk: Any) -> None:
    """Evaluate every seed's final (or named) stage of one (dataset, method, ratio)."""
    import torch

    from mona.config import protocol, stretched_config
    from mona.evaluate.run import evaluate_run
    from mona.io import read_json

    torch.set_num_threads(max(1, smk.threads))
    split_data = read_json(Path(smk.input.split))
    switches = protocol(smk.config, smk.wildcards.dataset)
    # the plateau check's runs were trained at `multiple` x the schedule
    multiple = int(getattr(smk.params, "multiple", 1))
    expected = stretched_config(smk.config, multiple) if multiple > 1 else smk.config
    for model, out in zip(smk.input.models, smk.output, strict=True):
        model = Path(model)
        record = read_json(model.parent / "train.json")
        check_trained_as_configured(expected, smk.wildcards.dataset, smk.wildcards.method,
                                    record, model.parent / "train.json")  # fmt: skip
        evaluate_run(
            model,
            Path(smk.input.manifest).parent,
            split_data,
            switches,
            record,
            Path(out),
            workers=smk.threads,
        )


def plateau(smk: Any) -> None:
    """Train one stage of one seed at `multiple` x the schedule (the tables' plateau check)."""
    import torch

    from mona.config import stretched_config

    torch.set_num_threads(max(1, smk.threads))
    w = smk.wildcards
    model = Path(smk.output[0])
    train_run(
        stretched_config(smk.config, int(w.multiple)),
        dataset=w.dataset,
        method=w.method,
        ratio="all",
        seed=int(w.seed),
        stage=w.stage,
        manifest_path=Path(smk.input.manifest),
        split_path=Path(smk.input.split),
        run_dir=model.parent,
        previous_stage=Path(smk.input.previous) if "previous" in smk.input.keys() else None,
    )


def check_trained_as_configured(
    config: dict, dataset: str, method: str, record: dict, path: Path
) -> None:
    """Refuse to score weights that the current config's settings did not make."""
    from dataclasses import asdict

    from mona.config import BOOKKEEPING, method_hparams, split_variant, train_config
    from mona.registry import load_methods

    cls = load_methods(tuple(config.get("plugins", [])))[split_variant(method)[0]]
    expected_train = asdict(train_config(config, method, dataset))
    expected_hparams = {**cls.defaults, **method_hparams(config, method)}
    problems = []
    for key, value in expected_train.items():
        recorded = record.get("train", {}).get(key)
        if key not in BOOKKEEPING and _normal(recorded) != _normal(value):
            problems.append(f"train.{key} {recorded!r} (config: {value!r})")
    if record.get("stage") == cls.stages[-1]:
        for key, value in expected_hparams.items():
            recorded = record.get("hparams", {}).get(key)
            if _normal(recorded) != _normal(value):
                problems.append(f"{key} {recorded!r} (config: {value!r})")
    if problems:
        raise DataError(
            [f"{path}: these weights were trained under other settings: "
             + ", ".join(problems[:5]) + "; rerun the train rule (--forcerun train)"]
        )  # fmt: skip


def _normal(value: Any) -> Any:
    """JSON's view of a value (tuples as lists, ints as floats) for comparing records."""
    import json

    return json.loads(json.dumps(value, default=str))


def aggregate(smk: Any) -> None:
    from mona.report.tables import write_table

    write_table(
        smk.wildcards.table,
        [Path(p) for p in smk.input.runs],
        Path(smk.output.csv),
        Path(smk.output.md),
        smk.config,
        plateau_paths=[Path(p) for p in smk.input.plateau],
    )


# Jobs whose time, peak memory and CPU seconds the runtimes page shows. They write the file
# themselves: Snakemake's `benchmark:` sampled every job's process tree twice a second (psutil
# reading /proc/PID/smaps_rollup of a torch process), half the scheduler's own CPU time.
TIMED_RULES = {"train", "evaluate", "evaluate_stage", "plateau_train", "plateau_evaluate"}


def write_job_timing(log_path: Path, seconds: float) -> Path:
    """`<log>.benchmark.tsv` (Snakemake's benchmark columns s, max_rss in MB, cpu_time) for
    this process and the workers it waited for."""
    import resource

    from mona.io import atomic_path

    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    max_rss_mb = max(own.ru_maxrss, workers.ru_maxrss) / 1024  # KiB on Linux
    cpu = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    path = log_path.with_name(log_path.name.removesuffix(".log") + ".benchmark.tsv")
    tmp = atomic_path(path)
    tmp.write_text(f"s\tmax_rss\tcpu_time\n{seconds:.4f}\t{max_rss_mb:.2f}\t{cpu:.2f}\n")
    tmp.replace(path)
    return path


def main(step: Callable[[Any], None], smk: Any) -> None:
    """Run a rule's step with its output in the rule's log; bad input -> problem list, exit 2."""
    terminal = sys.stderr
    resources = getattr(smk, "resources", None)
    if resources is not None:  # before anything initialises CUDA
        from mona.gpu_slots import claim

        claim(int(getattr(resources, "gpu", 0) or 0), Path(".snakemake") / "gpu-slots")
    log = open(smk.log[0], "a", buffering=1) if smk.log else None  # noqa: SIM115
    if log is not None:
        sys.stdout = sys.stderr = log
    started = time.perf_counter()
    try:
        step(smk)
        if getattr(smk, "rule", None) in TIMED_RULES and smk.log:
            write_job_timing(Path(smk.log[0]), time.perf_counter() - started)
    except DataError as error:
        lines = ["error: problems in the input data or config:"]
        lines += [f"  - {message}" for message in error.messages]
        for stream in {terminal, sys.stderr}:
            print("\n".join(lines), file=stream)
        sys.exit(2)
    except Exception:
        # into the rule's log before the streams are restored, or the log stays empty
        text = traceback.format_exc()
        for stream in {terminal, sys.stderr}:
            print(text, file=stream, end="")
        sys.exit(1)
    finally:
        if log is not None:
            sys.stdout, sys.stderr = sys.__stdout__, terminal
            log.close()
