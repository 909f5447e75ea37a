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

from mona.config import protocol
from mona.report.ablations import method_defaults, run_name
from mona.report.compare import write_text
from mona.report.tables import SWITCHES, collect_runs, to_markdown

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
    defaults = method_defaults()
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
    config: dict, run_dir: str, run_ratio: Callable[[str, float], str]
) -> list[str]:
    """Every seed's metrics file of every row; `run_dir` is the DAG's run folder pattern
    ({dataset}, {method}, {ratio}, {seed}), `run_ratio` its ratio naming."""
    return sorted(
        {
            os.path.join(
                run_dir.format(
                    dataset=row.dataset, method=row.method_id,
                    ratio=run_ratio(row.method_id, row.ratio), seed=seed,
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


def _matching(runs: pd.DataFrame, row: Table5Row) -> pd.DataFrame:
    if not len(runs):
        return runs
    return runs[
        (runs.dataset == row.dataset)
        & (runs.method_id == row.method_id)
        & (runs.run_ratio == str(row.ratio))
        & (runs.setting == row.setting)
    ]


def summarize(config: dict, metrics_paths: list[Path]) -> pd.DataFrame:
    runs = seed_frame(metrics_paths)
    paper = paper_numbers()
    table = []
    for row in rows(config):
        here = _matching(runs, row)
        dsc = here.dsc.dropna() if len(here) else pd.Series(dtype=float)
        asd = here.asd.dropna() if len(here) else pd.Series(dtype=float)
        reported = paper[
            (paper.dataset == row.dataset)
            & (paper.setting == row.setting)
            & (paper.framework == row.label)
            & (paper.ratio_pct == row.ratio)
        ]
        switches = protocol(config, row.dataset)
        table.append(
            {
                "dataset": row.dataset,
                "ratio_pct": row.ratio,
                "setting": row.setting,
                "method": row.label,
                "method_id": row.method_id,
                "pretrain_framework": row.framework,
                "dsc_mean": dsc.mean() if len(dsc) else None,
                "dsc_std": dsc.std(ddof=1) if len(dsc) > 1 else None,
                "asd_mean": asd.mean() if len(asd) else None,
                "asd_std": asd.std(ddof=1) if len(asd) > 1 else None,
                "n_seeds": len(here),
                "asd_excluded": int(here.asd_excluded.sum()) if len(here) else 0,
                "paper_dsc": reported.dsc.iloc[0] if len(reported) else None,
                "paper_asd": reported.asd_mm.iloc[0] if len(reported) else None,
                "data": "synthetic" if config["datasets"][row.dataset]["raw"] == "synthetic"
                else "real",
                **{s: switches[s] for s in SWITCHES},
                "schedule": config["train"].get("schedule", "poly"),
                "iterations": config["train"].get("iterations"),
                "code_version": ";".join(sorted(set(here.code_version.dropna())))
                if len(here) else "",
            }  # fmt: skip
        )
    return pd.DataFrame(table)


def write_table(
    config: dict, metrics_paths: list[Path], csv_path: Path, md_path: Path
) -> pd.DataFrame:
    """`results/table5.csv` and `.md` (one table, the setting named beside each framework)."""
    frame = summarize(config, metrics_paths)
    labels = [f"{m} ({SETTINGS[s]})" for m, s in zip(frame.method, frame.setting, strict=True)]
    shown = frame.assign(method=labels)
    markdown = to_markdown("table5", shown).replace("# table5\n", f"# {TITLE}\n", 1)
    write_text(frame.to_csv(index=False, float_format="%.4f"), Path(csv_path))
    write_text(markdown, Path(md_path))
    return frame

