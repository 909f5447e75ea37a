"""Aggregate per-run metrics into the paper's tables, with the paper's numbers beside them.

One row per dataset x labeled ratio x method: DSC (%) and ASD as mean and sample standard
deviation (ddof = 1) over seeds, the number of seeds, how many class-level distances the empty-mask
policy excluded, the paper's values, whether the data were synthetic, and the protocol switches
in force (the same on every row, so a row copied elsewhere keeps them).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pandas as pd

from mona.config import protocol, split_variant
from mona.io import atomic_path, read_json

PAPER_FILES = {"table1": "table1_acdc_lits.csv", "table4": "table4_mmwhs.csv"}
SWITCHES = ("split", "labeled", "checkpoint", "asd", "units", "empty")


def paper_numbers(table: str) -> pd.DataFrame:
    """The paper's DSC/ASD for `table` (empty frame if the paper has no such table)."""
    name = PAPER_FILES.get(table)
    if name is None:
        return pd.DataFrame(columns=["dataset", "method", "ratio_pct", "dsc", "asd_mm"])
    with resources.files("mona.report").joinpath("paper", name).open() as handle:
        return pd.read_csv(handle)


def collect_runs(metrics_paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in metrics_paths:
        metrics = read_json(path)
        summary = metrics["summary"]
        rows.append(
            {
                "dataset": metrics["dataset"],
                "method_id": metrics.get("run_method") or metrics["method"],
                "run_ratio": str(metrics["ratio"]),
                "seed": metrics["seed"],
                "dsc": None if summary["dsc"] is None else 100.0 * summary["dsc"],
                "asd": summary["asd"],
                "asd_excluded": summary.get("asd_excluded", 0),
                "code_version": metrics.get("code_version"),
                "device": metrics.get("device"),
            }
        )
    return pd.DataFrame(rows)


def build_table(table: str, metrics_paths: list[Path], config: dict) -> pd.DataFrame:
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    runs = collect_runs(metrics_paths)
    paper = paper_numbers(table)
    spec = config["tables"][table]
    rows = []
    for dataset in spec["datasets"]:
        switches = protocol(config, dataset)
        synthetic = config["datasets"][dataset]["raw"] == "synthetic"
        for ratio in config["ratios"]:
            for method_id in spec["methods"]:
                cls = methods[split_variant(method_id)[0]]
                run_ratio = "all" if cls.labeled_pool == "all" else str(ratio)
                runs_here = runs[
                    (runs.dataset == dataset)
                    & (runs.method_id == method_id)
                    & (runs.run_ratio == run_ratio)
                ]
                reported = paper[
                    (paper.dataset == dataset)
                    & (paper.method == cls.display_name)
                    & (paper.ratio_pct == ratio)
                ]
                dsc, asd = runs_here.dsc.dropna(), runs_here.asd.dropna()
                rows.append(
                    {
                        "dataset": dataset,
                        "ratio_pct": ratio,
                        "method": cls.display_name or method_id,
                        "method_id": method_id,
                        "dsc_mean": dsc.mean() if len(dsc) else None,
                        "dsc_std": dsc.std(ddof=1) if len(dsc) > 1 else None,
                        "asd_mean": asd.mean() if len(asd) else None,
                        "asd_std": asd.std(ddof=1) if len(asd) > 1 else None,
                        "n_seeds": len(runs_here),
                        "asd_excluded": int(runs_here.asd_excluded.sum()),
                        "paper_dsc": reported.dsc.iloc[0] if len(reported) else None,
                        "paper_asd": reported.asd_mm.iloc[0] if len(reported) else None,
                        "data": "synthetic" if synthetic else "real",
                        **{s: switches[s] for s in SWITCHES},
                        "schedule": config["train"].get("schedule", "poly"),
                        "iterations": config["train"].get("iterations"),
                        "code_version": ";".join(sorted(set(runs_here.code_version.dropna()))),
                    }
                )
    return pd.DataFrame(rows)


def to_markdown(table: str, frame: pd.DataFrame) -> str:
    def cell(mean, std, digits):
        if mean is None or pd.isna(mean):
            return "-"
        return f"{mean:.{digits}f}" + (
            "" if std is None or pd.isna(std) else f" ± {std:.{digits}f}"
        )

    def paper_cell(value, digits):
        return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    lines = [f"# {table}", ""]
    first = frame.iloc[0] if len(frame) else None
    if first is not None:
        switches = ", ".join(f"{s}={first[s]}" for s in (*SWITCHES, "schedule", "iterations"))
        lines += [
            f"Data: {', '.join(sorted(set(frame.data)))}. Protocol: {switches}.",
            "Mean ± sample std over seeds; DSC in %, ASD in "
            f"{'mm' if first['units'] == 'mm' else 'voxels'}. `asd excl.` counts class-level "
            "distances left out by the empty-mask policy.",
            "",
        ]
    lines += [
        "| dataset | ratio % | method | DSC | paper DSC | ASD | paper ASD | seeds | asd excl. |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in frame.itertuples():
        lines.append(
            f"| {row.dataset} | {row.ratio_pct} | {row.method} | "
            f"{cell(row.dsc_mean, row.dsc_std, 1)} | {paper_cell(row.paper_dsc, 1)} | "
            f"{cell(row.asd_mean, row.asd_std, 2)} | {paper_cell(row.paper_asd, 2)} | "
            f"{row.n_seeds} | {row.asd_excluded} |"
        )
    return "\n".join(lines) + "\n"


def write_table(
    table: str, metrics_paths: list[Path], csv_path: Path, md_path: Path, config: dict
) -> pd.DataFrame:
    frame = build_table(table, metrics_paths, config)
    for path, text in (
        (csv_path, frame.to_csv(index=False, float_format="%.4f")),
        (md_path, to_markdown(table, frame)),
    ):
        tmp = atomic_path(path)
        tmp.write_text(text)
        os.replace(tmp, path)
    return frame
