"""Paper Table 5: contrastive pre-training frameworks, alone and followed by MONA's fine-tuning.

A framework's run is the MONA variant `mona~pretrain_framework=NAME` (plain `mona` for GLCon,
MONA's default). "Pre-training only" scores that run's stage 1 (`{run}/pretrain/metrics.json`,
the DAG's `evaluate_stage`); "with fine-tuning" scores the finished run (`{run}/metrics.json`),
so GLCon with fine-tuning is MONA itself and carries MONA's name, as in the paper.

Rows follow `results/table1.csv` (display names, DSC in %, mean and sample std over seeds, the
paper's numbers beside, data origin and protocol switches) plus the `setting`; paper cells that
were illegible stay empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from mona.config import run_ratio
from mona.errors import DataError
from mona.report.ablations import method_defaults, run_name
from mona.report.compare import Comparison, write_text
from mona.report.tables import (
    code_versions,
    collect_runs,
    row_settings,
    runs_of,
    seed_statistics,
    to_markdown,
)

PAPER_FILE = "table5_acdc_cl_frameworks.csv"
SETTINGS = {"pretrain_only": "pre-training only", "with_finetune": "with MONA's fine-tuning"}
PRETRAIN_STAGE = "pretrain"
TITLE = "Table 5: contrastive frameworks on ACDC, pre-training only vs with MONA's fine-tuning"


@dataclass(frozen=True)
class Table5Row:
    """One row: a framework's run, which of its results it shows and the paper's name for it."""

    dataset: str
    ratio: float
    setting: str
    framework: str
    label: str
    method_id: str

    @property
    def metrics_file(self) -> str:
        """The row's metrics.json relative to a run folder."""
        if self.setting == "pretrain_only":
            return os.path.join(PRETRAIN_STAGE, "metrics.json")
        return "metrics.json"


def section(config: dict) -> dict:
    return config.get("table5") or {}


def rows(config: dict) -> list[Table5Row]:
    """Table 5's rows in display order: setting, labeled ratio, framework."""
    from mona.methods.glcon import get_framework
    from mona.registry import get_method

    spec = section(config)
    if not spec:
        return []
    mona = get_method("mona")
    defaults = method_defaults(config)
    table = []
    for setting in SETTINGS:
        for ratio in config["ratios"]:
            for framework in spec["frameworks"]:
                is_mona = framework == defaults["pretrain_framework"]
                label = get_framework(framework).display_name or framework
                if setting == "with_finetune" and is_mona:
                    label = mona.display_name
                method_id = run_name({"pretrain_framework": framework}, defaults)
                table.append(
                    Table5Row(spec["dataset"], ratio, setting, framework, label, method_id)
                )
    return table


def config_problems(config: dict) -> list[str]:
    """What the schema cannot check: a configured dataset and registered frameworks."""
    spec = section(config)
    if not spec:
        return []
    from mona.methods.glcon import FRAMEWORKS
    from mona.registry import load_methods

    load_methods(tuple(config.get("plugins", [])))
    problems = []
    if spec["dataset"] not in config["datasets"]:
        problems.append(f"config table5.dataset: unknown dataset {spec['dataset']!r}")
    for framework in spec["frameworks"]:
        if framework not in FRAMEWORKS:
            problems.append(
                f"config table5.frameworks: unknown framework {framework!r} "
                f"(registered: {', '.join(sorted(FRAMEWORKS))})"
            )
    return problems


def metrics_paths(
    config: dict, run_dir: str, run_ratio: Callable[[str, str, float], str]
) -> list[str]:
    """Every seed's metrics file of every row; `run_dir` is the DAG's run folder pattern
    ({dataset}, {method}, {ratio}, {seed}), `run_ratio` its ratio naming."""
    return sorted(
        {
            os.path.join(
                run_dir.format(
                    dataset=row.dataset, method=row.method_id,
                    ratio=run_ratio(row.dataset, row.method_id, row.ratio), seed=seed,
                ),
                row.metrics_file,
            )  # fmt: skip
            for row in rows(config)
            for seed in config["seeds"]
        }
    )


def paper_numbers() -> pd.DataFrame:
    with resources.files("mona.report").joinpath("paper", PAPER_FILE).open() as handle:
        return pd.read_csv(handle)


def seed_frame(metrics_paths: list[Path]) -> pd.DataFrame:
    """collect_runs' rows plus the setting each metrics file scores (from its folder)."""
    runs = collect_runs(list(metrics_paths))
    if not len(runs):
        return runs
    runs["setting"] = [
        "pretrain_only" if Path(p).parent.name == PRETRAIN_STAGE else "with_finetune"
        for p in metrics_paths
    ]
    return runs


def _matching(config: dict, runs: pd.DataFrame, row: Table5Row) -> pd.DataFrame:
    folder = run_ratio(config, row.dataset, row.method_id, row.ratio)
    here = runs_of(runs, row.dataset, row.method_id, folder)
    return here[here.setting == row.setting] if len(here) else here


def summarize(config: dict, metrics_paths: list[Path]) -> pd.DataFrame:
    runs = seed_frame(metrics_paths)
    paper = paper_numbers()
    table = []
    for row in rows(config):
        here = _matching(config, runs, row)
        reported = paper[
            (paper.dataset == row.dataset)
            & (paper.setting == row.setting)
            & (paper.framework == row.label)
            & (paper.ratio_pct == row.ratio)
        ]
        table.append(
            {
                "dataset": row.dataset,
                "ratio_pct": row.ratio,
                "setting": row.setting,
                "method": row.label,
                "method_id": row.method_id,
                "pretrain_framework": row.framework,
                **seed_statistics(here),
                "paper_dsc": reported.dsc.iloc[0] if len(reported) else None,
                "paper_asd": reported.asd_mm.iloc[0] if len(reported) else None,
                **row_settings(config, row.dataset, here),
                "code_version": code_versions(here),
            }
        )
    return pd.DataFrame(table)


def comparison(config: dict, metrics_paths: list[Path]) -> Comparison:
    """Table 5 against its seeds, for `results/paper_vs_reproduced.csv`."""
    runs = seed_frame(metrics_paths)
    keys = ("dataset", "setting", "framework", "ratio_pct")
    seeds = pd.DataFrame(
        [
            {
                "dataset": row.dataset,
                "setting": row.setting,
                "framework": row.label,
                "ratio_pct": row.ratio,
                "method_id": row.method_id,
                "seed": seed.seed,
                "dsc": seed.dsc,
                "asd": seed.asd,
            }
            for row in rows(config)
            for seed in _matching(config, runs, row).itertuples()
        ],
        columns=[*keys, "method_id", "seed", "dsc", "asd"],
    )
    return Comparison("table5", paper_numbers(), seeds, keys)


def write_table(
    config: dict, metrics_paths: list[Path], csv_path: Path, md_path: Path
) -> pd.DataFrame:
    """`results/table5.csv` and `.md` (one table, the setting named beside each framework)."""
    if not section(config):
        raise DataError(["results/table5.csv needs a `table5` section in the config"])
    frame = summarize(config, metrics_paths)
    labels = [f"{m} ({SETTINGS[s]})" for m, s in zip(frame.method, frame.setting, strict=True)]
    shown = frame.assign(method=labels)
    markdown = to_markdown("table5", shown, TITLE)
    write_text(frame.to_csv(index=False, float_format="%.4f"), Path(csv_path))
    write_text(markdown, Path(md_path))
    return frame

