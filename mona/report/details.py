"""What a table's mean hides: Dice and HD95 per class, and each run's training curves.

Every `metrics.json` scores each foreground class; a table averages them away, so a model that
learns one structure of seven looks merely weak. The per-class table lists every class per
(dataset, labeled ratio, method) as mean ± sample std over seeds, and the curves draw each
run's `log.jsonl` (loss and learning rate against step, one line per seed), so a reader sees
whether a run had finished learning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mona.config import run_ratio, shared_ratio, split_variant
from mona.errors import DataError
from mona.io import read_json

CLASS_COLUMNS = ["dataset", "ratio_pct", "method", "method_id", "class", "seed", "dsc", "hd95"]


def class_scores(table: str, metrics_paths: Sequence[Path], config: dict) -> pd.DataFrame:
    """One row per run and foreground class: Dice (%) and HD95 (mm or voxels), or None where
    the empty-mask policy left the class out. A run shared by several ratios (UNet-F's, or one
    whose labeled patients two ratios share) is listed under each ratio it serves."""
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    spec = config["tables"][table]
    rows = []
    for path in metrics_paths:
        metrics = read_json(path)
        summary, names = metrics["summary"], metrics.get("class_names") or []
        method_id = metrics.get("run_method") or metrics["method"]
        if metrics["dataset"] not in spec["datasets"] or method_id not in spec["methods"]:
            continue
        cls = methods[split_variant(method_id)[0]]
        dice = summary.get("dsc_per_class") or []
        hd95 = summary.get("hd95_per_class") or [None] * len(dice)
        if len(names) != len(dice):
            raise DataError([f"{path}: {len(dice)} per-class scores but class names {names}"])
        ratios = [
            r
            for r in config["ratios"]
            if run_ratio(config, metrics["dataset"], method_id, r) == str(metrics["ratio"])
        ]
        for ratio in ratios:
            for name, d, h in zip(names, dice, hd95, strict=True):
                rows.append(
                    {
                        "dataset": metrics["dataset"],
                        "ratio_pct": ratio,
                        "method": cls.display_name or method_id,
                        "method_id": method_id,
                        "class": name,
                        "seed": metrics["seed"],
                        "dsc": None if d is None else 100.0 * d,
                        "hd95": h,
                    }
                )
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def class_table(scores: pd.DataFrame, config: dict, table: str) -> pd.DataFrame:
    """Mean, sample std and seed count per (dataset, ratio, method, class), in the table's
    method order."""
    order = {m: i for i, m in enumerate(config["tables"][table]["methods"])}
    if not len(scores):
        return pd.DataFrame(
            columns=["dataset", "ratio_pct", "method", "method_id", "class", "dsc_mean",
                     "dsc_std", "hd95_mean", "hd95_std", "n_seeds"]
        )  # fmt: skip
    grouped = scores.groupby(
        ["dataset", "ratio_pct", "method", "method_id", "class"], sort=False
    )
    frame = grouped.agg(
        dsc_mean=("dsc", "mean"),
        dsc_std=("dsc", "std"),
        hd95_mean=("hd95", "mean"),
        hd95_std=("hd95", "std"),
        n_seeds=("seed", "nunique"),
    ).reset_index()
    frame["_order"] = frame.method_id.map(order)
    classes = {c: i for i, c in enumerate(dict.fromkeys(scores["class"]))}
    frame["_class"] = frame["class"].map(classes)
    frame = frame.sort_values(["dataset", "ratio_pct", "_order", "_class"], kind="stable")
    return frame.drop(columns=["_order", "_class"]).reset_index(drop=True)


def _cell(mean, std, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None or pd.isna(std) else f" ± {std:.{digits}f}")


def class_pivot(frame: pd.DataFrame, dataset: str, metric: str) -> pd.DataFrame:
    """Rows (labeled %, method), one column per class: "mean ± std" cells, "-" where no seed
    scored the class."""
    part = frame[frame.dataset == dataset]
    digits = 1 if metric == "dsc" else 2
    cells = part.assign(
        cell=[_cell(m, s, digits) for m, s in zip(part[f"{metric}_mean"], part[f"{metric}_std"],
                                                     strict=True)]
    )  # fmt: skip
    pivot = cells.pivot_table(
        index=["ratio_pct", "method"], columns="class", values="cell", aggfunc="first", sort=False
    )
    pivot = pivot[list(dict.fromkeys(part["class"]))]
    pivot.columns.name = None
    pivot = pivot.reset_index().rename(columns={"ratio_pct": "labeled %"})
    return pivot.fillna("-")


def class_page(table: str, frame: pd.DataFrame) -> str:
    from mona.report.compare import _note, html_page

    sections = [
        (
            "",
            _note(
                "Per foreground class: Dice (%) and HD95 as mean ± sample std over seeds. '-': "
                "no seed scored the class (the empty-mask policy leaves a class out of the "
                "distance means when a mask is empty); a value without ± comes from one seed. "
                "The table's mean DSC averages these."
            ),
        )
    ]
    for dataset in dict.fromkeys(frame.dataset):
        for metric, label in (("dsc", "Dice %"), ("hd95", "HD95")):
            pivot = class_pivot(frame, dataset, metric)
            sections.append((f"{dataset}: {label} per class", pivot.to_html(index=False)))
    if not len(frame):
        sections.append(("", _note("No runs yet.")))
    return html_page(f"{table}: per-class scores", sections)


def write_class_table(
    table: str, metrics_paths: Sequence[Path], config: dict, csv_path: Path, page: Path
) -> pd.DataFrame:
    from mona.report.compare import write_csv, write_text

    frame = class_table(class_scores(table, metrics_paths, config), config, table)
    write_csv(frame, csv_path)
    write_text(class_page(table, frame), page)
    return frame


# ---------------------------------------------------------------- training curves


def read_log(path: Path) -> pd.DataFrame:
    """A run's `log.jsonl` (one JSON object per logged step), with the file named on error."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError([f"{path}:{number}: not a JSON line ({error.msg})"]) from None
    return pd.DataFrame(rows)


def curve_runs(
    metrics_paths: Sequence[Path], config: dict, table: str, dataset: str
) -> dict[str, list[tuple[int, str, pd.DataFrame]]]:
    """Per method of the table (in its order): (seed, stage, log) of every stage of every
    seed's run at the middle configured ratio (UNet-F: its one run)."""
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    ratios = config["ratios"]
    shown = shared_ratio(config, dataset, ratios[len(ratios) // 2])
    curves: dict[str, list[tuple[int, str, pd.DataFrame]]] = {}
    for method_id in config["tables"][table]["methods"]:
        stages = methods[split_variant(method_id)[0]].stages
        for path in metrics_paths:
            run = Path(path).parent
            parts = run.parts
            if len(parts) < 4 or parts[-4] != dataset or parts[-3] != method_id:
                continue
            if parts[-2] not in (f"r{shown}", "rall"):
                continue
            seed = int(parts[-1].lstrip("s"))
            for stage in stages:
                log = run / stage / "log.jsonl"
                if log.exists():
                    curves.setdefault(method_id, []).append((seed, stage, read_log(log)))
    return curves


def curves_figure(
    curves: dict[str, list[tuple[int, str, pd.DataFrame]]], names: dict[str, str], title: str
):
    """One panel per method: loss per seed (log scale, solid) and the lr (dashed, right axis);
    the stages of a multi-stage method follow each other on one step axis."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    count = max(len(curves), 1)
    columns = min(4, count)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(3.6 * columns, 2.7 * rows + 0.6), layout="constrained")
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    seeds_drawn: set[int] = set()
    for index, (method_id, runs) in enumerate(curves.items()):
        ax = fig.add_subplot(rows, columns, index + 1)
        lr_ax = ax.twinx()
        offsets: dict[int, int] = {}
        boundaries = set()
        for seed, _stage, log in sorted(runs, key=lambda r: r[0]):
            if "loss" not in log or not len(log):
                continue
            start = offsets.get(seed, 0)
            color = colors[seed % len(colors)]
            ax.plot(log.step + start, log.loss, color=color, lw=1.0, marker="o", ms=2.5)
            if "lr" in log and seed == min(r[0] for r in runs):  # the seeds share one schedule
                lr_ax.plot(log.step + start, log.lr, color="#555", lw=0.8, ls="--")
            offsets[seed] = start + int(log.step.max())
            if start:
                boundaries.add(start)
            seeds_drawn.add(seed)
        for boundary in boundaries:
            ax.axvline(boundary, color="#999", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_title(names.get(method_id, method_id), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        lr_ax.set_ylabel("lr", fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        lr_ax.tick_params(which="both", labelsize=7)
    if not curves:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no training logs yet", ha="center", va="center")
    handles = [
        Line2D([], [], color=colors[s % len(colors)], lw=1.2, label=f"seed {s}")
        for s in sorted(seeds_drawn)
    ]
    if handles:
        handles += [
            Line2D([], [], color="#444", lw=1.0, label="loss (left, log)"),
            Line2D([], [], color="#555", lw=0.8, ls="--", label="lr (right)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def write_curves(
    table: str,
    metrics_paths: Sequence[Path],
    config: dict,
    dataset: str,
    png: Path,
    pdf: Path,
) -> None:
    from mona.registry import load_methods
    from mona.report.figures import save_figure

    methods = load_methods(tuple(config.get("plugins", [])))
    listed = config["tables"][table]["methods"]
    names = {m: methods[split_variant(m)[0]].display_name or m for m in listed}
    ratios = config["ratios"]
    curves = curve_runs(metrics_paths, config, table, dataset)
    title = (
        f"{table}, {dataset}: training curves, {ratios[len(ratios) // 2]} % labeled\n"
        "(UNet-F: every label; dotted: the next stage starts)"
    )
    save_figure(curves_figure(curves, names, title), png, pdf)
