"""MONA's ablations: paper Tables 2 (components) and 3 (augmentations), Figures 7-9 (sweeps).

An ablation run is an ordinary run whose method names its hyperparameters
(`mona~tailness=false`, `mona~lambda1=0.1`); the config's `ablations` section lists which
ones, and values equal to MONA's defaults are left out of the name, so the full-MONA row of
Table 2, the default point of every sweep and a `mona` entry of Table 1 are one run.

Tables carry mean and sample std over seeds beside the paper's numbers (as `mona.report.tables`);
figures plot Dice and ASD against each swept value with a mean +- std band over seeds and mark
the value plain `mona` runs with (the paper's choice, unless the config's `methods.mona` sets
another, as the embedded default does for sizes that must scale with its small slices).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from mona.config import run_ratio, split_variant, variant_name
from mona.io import atomic_path
from mona.report.tables import (
    code_versions,
    collect_runs,
    row_settings,
    runs_of,
    seed_statistics,
    to_markdown,
)

METHOD = "mona"
COMPONENTS = ("tailness", "consistency", "diversity")
TABLES = ("table2", "table3")
FIGURES = ("fig7", "fig8", "fig9")
PAPER_FILES = {
    "table2": "table2_components_acdc5.csv",
    "table3": "table3_augmentation_5pct.csv",
}
TITLES = {
    "table2": "Table 2: MONA's components (tailness, consistency, diversity)",
    "table3": "Table 3: weak and strong views for MONA's student and teacher",
    "fig7": "Figure 7: GLCon's neighbours k, mined view-set size and mined view size",
    "fig8": "Figure 8: loss weights lambda1-4 of MONA's fine-tuning",
    "fig9": "Figure 9: confidence threshold, nearest neighbours K and embedding size",
}
# What each of the paper's figures sweeps; a config may sweep fewer (the embedded default does).
PAPER_SWEEPS = {
    "fig7": ("k", "view_set", "view_size"),
    "fig8": ("lambda1", "lambda2", "lambda3", "lambda4"),
    "fig9": ("delta0", "nn_k", "embed_dim"),
}
PARAMETER_LABELS = {
    "k": "k nearest neighbours (global)",
    "view_set": "mined view-set size",
    "view_size": "mined view size (px)",
    "lambda1": "lambda1 (contrast)",
    "lambda2": "lambda2 (equivariance)",
    "lambda3": "lambda3 (unsupervised CE)",
    "lambda4": "lambda4 (nearest neighbour)",
    "delta0": "confidence threshold delta0",
    "nn_k": "K nearest neighbours (fine-tuning)",
    "embed_dim": "embedding dimension m",
}


@dataclass(frozen=True)
class AblationRun:
    """One row of an ablation table or one point of a sweep: a run name and what it varies."""

    dataset: str
    ratio: float
    method_id: str
    label: str
    settings: tuple[tuple[str, Any], ...]


def section(config: dict) -> dict:
    return config.get("ablations") or {}


def paper_defaults() -> dict[str, Any]:
    """MONA's registered hyperparameters: the paper's choices."""
    from mona.registry import get_method

    return dict(get_method(METHOD).defaults)


def method_defaults(config: dict) -> dict[str, Any]:
    """What plain `mona` runs with under `config`: the paper's choices, then `methods.mona`.

    Ablation runs name only the values that differ from these, so a sweep point equal to the
    configured value is the plain `mona` run (the one Table 1 uses).
    """
    return {**paper_defaults(), **((config.get("methods") or {}).get(METHOD) or {})}


def run_name(overrides: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The run's method name: only the values that differ from MONA's defaults are named."""
    changed = {k: v for k, v in overrides.items() if v != defaults[k]}
    return variant_name(METHOD, changed)


def component_label(on: dict[str, bool]) -> str:
    """Row names of the paper's Table 2."""
    active = [name for name in COMPONENTS if on[name]]
    if len(active) == len(COMPONENTS):
        return "MONA"
    return "w/ " + " + ".join(active) if active else "Vanilla"


def ablation_runs(config: dict, name: str) -> list[AblationRun]:
    """The runs an ablation table or figure aggregates, in display order."""
    spec = section(config)[name]
    defaults = method_defaults(config)
    runs = []
    if name == "table2":
        for row in spec["rows"]:
            on = {c: bool(row[c]) for c in COMPONENTS}
            runs.append(
                AblationRun(
                    spec["dataset"], spec["ratio"], run_name(on, defaults),
                    component_label(on), tuple(on.items()),
                )  # fmt: skip
            )
    elif name == "table3":
        for dataset in spec["datasets"]:
            for pair in spec["pairs"]:
                views = {"student_aug": pair["student"], "teacher_aug": pair["teacher"]}
                label = f"student {pair['student']} / teacher {pair['teacher']}"
                runs.append(
                    AblationRun(
                        dataset, spec["ratio"], run_name(views, defaults), label,
                        tuple(views.items()),
                    )  # fmt: skip
                )
    elif name in FIGURES:
        for parameter, values in spec["sweeps"].items():
            for value in values:
                runs.append(
                    AblationRun(
                        spec["dataset"], spec["ratio"], run_name({parameter: value}, defaults),
                        f"{parameter}={value}", ((parameter, value),),
                    )  # fmt: skip
                )
    else:
        raise KeyError(f"unknown ablation {name!r}; known: {', '.join(TABLES + FIGURES)}")
    return runs


def config_problems(config: dict) -> list[str]:
    """What the schema cannot check: datasets that exist, parameters MONA has, path-safe values."""
    problems: list[str] = []
    if not section(config):
        return problems
    defaults = method_defaults(config)
    datasets = set(config["datasets"])
    for name, spec in section(config).items():
        names = spec.get("datasets", [spec.get("dataset")])
        for dataset in names:
            if dataset not in datasets:
                problems.append(f"config ablations.{name}: unknown dataset {dataset!r}")
        for parameter in spec.get("sweeps", {}):
            if parameter not in defaults:
                problems.append(
                    f"config ablations.{name}.sweeps: {parameter!r} is not a MONA "
                    f"hyperparameter (known: {', '.join(sorted(defaults))})"
                )
    if problems:
        return problems
    for name in section(config):
        try:
            ablation_runs(config, name)
        except ValueError as error:
            problems.append(f"config ablations.{name}: {error}")
    return problems


# ------------------------------------------------------------------------------- DAG wiring


def metrics_paths(
    config: dict, name: str, run_dir: str, run_ratio: Callable[[str, str, float], str]
) -> list[str]:
    """metrics.json of every seed of every run `name` aggregates; `run_dir` is the DAG's run
    folder pattern ({dataset}, {method}, {ratio}, {seed}), `run_ratio` its ratio naming."""
    return sorted(
        {
            os.path.join(
                run_dir.format(
                    dataset=run.dataset,
                    method=run.method_id,
                    ratio=run_ratio(run.dataset, run.method_id, run.ratio),
                    seed=seed,
                ),
                "metrics.json",
            )
            for run in ablation_runs(config, name)
            for seed in config["seeds"]
        }
    )


def shared_pretrain_regex(methods: Mapping[str, type]) -> str:
    """Run names that may share another run's pre-training: variants of a method with
    `finetune_only` keys that set at least one of them (a regex for a wildcard)."""
    value = "[A-Za-z0-9_.-]+"
    item = f"[A-Za-z0-9_]+={value}"
    alternatives = []
    for name, cls in sorted(methods.items()):
        keys = sorted(getattr(cls, "finetune_only", ()))
        if keys:
            finetune_item = f"(?:{'|'.join(map(re.escape, keys))})={value}"
            alternatives.append(rf"{re.escape(name)}~(?:{item}\+)*{finetune_item}(?:\+{item})*")
    return "|".join(alternatives) or "(?!)"


def pretrain_source(method: str, methods: Mapping[str, type]) -> str:
    """The run whose pre-training `method` shares: its name without fine-tuning-only keys."""
    name, overrides = split_variant(method)
    finetune_only = getattr(methods[name], "finetune_only", frozenset())
    return variant_name(name, {k: v for k, v in overrides.items() if k not in finetune_only})


def shared_pretrain_models(
    config: dict, methods: Mapping[str, type], run_dir: str, dataset: str, method: str,
    ratio: str,
) -> list[str]:
    """The pre-training models (one per seed) that run `method` copies."""
    source = pretrain_source(method, methods)
    return [
        os.path.join(
            run_dir.format(dataset=dataset, method=source, ratio=ratio, seed=seed),
            "pretrain",
            "model.pt",
        )
        for seed in config["seeds"]
    ]


def share_pretrain(sources: list[str], targets: list[str], log: str) -> None:
    """Copy each source's pre-training model (and its run record) to its target run."""
    with open(log, "w") as note:
        for source, target in zip(sources, targets, strict=True):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = atomic_path(Path(target))
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            record = Path(source).with_name("train.json")
            if record.exists():
                shutil.copyfile(record, Path(target).with_name("train.json"))
            print(f"{target}: pre-training shared from {source}", file=note)


# ----------------------------------------------------------------------------- aggregation


def paper_numbers(name: str) -> pd.DataFrame:
    file = PAPER_FILES.get(name)
    if file is None:
        return pd.DataFrame()
    with resources.files("mona.report").joinpath("paper", file).open() as handle:
        return pd.read_csv(handle)


def _paper_match(paper: pd.DataFrame, run: AblationRun) -> tuple[float | None, float | None]:
    if paper.empty:
        return None, None
    keep = (paper.dataset == run.dataset) & (paper.ratio_pct == run.ratio)
    for key, value in run.settings:
        if key not in paper.columns:
            return None, None
        keep &= paper[key] == (int(value) if isinstance(value, bool) else value)
    found = paper[keep]
    if not len(found):
        return None, None
    return float(found.dsc.iloc[0]), float(found.asd_mm.iloc[0])


def summarize(config: dict, name: str, metrics_paths: list[Path]) -> pd.DataFrame:
    """One row per ablation run: settings, seed statistics and (tables) the paper's numbers."""
    runs = collect_runs(metrics_paths)
    paper = paper_numbers(name)
    rows = []
    for run in ablation_runs(config, name):
        here = runs_of(
            runs, run.dataset, run.method_id,
            run_ratio(config, run.dataset, run.method_id, run.ratio),
        )  # fmt: skip
        paper_dsc, paper_asd = _paper_match(paper, run)
        rows.append(
            {
                "dataset": run.dataset,
                "ratio_pct": run.ratio,
                "method": run.label,
                "method_id": run.method_id,
                **dict(run.settings),
                **seed_statistics(here),
                "paper_dsc": paper_dsc,
                "paper_asd": paper_asd,
                **row_settings(config, run.dataset, here),
                "code_version": code_versions(here),
            }
        )
    return pd.DataFrame(rows)


# Columns that name one cell of the paper's ablation tables.
PAPER_KEYS = {
    "table2": ("dataset", "ratio_pct", *COMPONENTS),
    "table3": ("dataset", "ratio_pct", "student_aug", "teacher_aug"),
}


def comparison(config: dict, name: str, metrics_paths: list[Path]):
    """Table 2 or 3 against its seeds, for `results/paper_vs_reproduced.csv`."""
    from mona.report.compare import Comparison

    runs = collect_runs(metrics_paths)
    keys = PAPER_KEYS[name]
    rows = []
    for run in ablation_runs(config, name):
        here = runs_of(
            runs, run.dataset, run.method_id,
            run_ratio(config, run.dataset, run.method_id, run.ratio),
        )  # fmt: skip
        settings = {k: int(v) if isinstance(v, bool) else v for k, v in run.settings}
        for seed in here.itertuples():
            rows.append(
                {
                    "dataset": run.dataset,
                    "ratio_pct": run.ratio,
                    **settings,
                    "method_id": run.method_id,
                    "seed": seed.seed,
                    "dsc": seed.dsc,
                    "asd": seed.asd,
                }
            )
    seeds = pd.DataFrame(rows, columns=[*keys, "method_id", "seed", "dsc", "asd"])
    return Comparison(name, paper_numbers(name), seeds, keys)


def _write(path: Path, text: str) -> None:
    path = Path(path)
    tmp = atomic_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_table(
    name: str, config: dict, metrics_paths: list[Path], csv_path: Path, md_path: Path
) -> pd.DataFrame:
    """`results/table2.csv` / `.md` (or table3)."""
    frame = summarize(config, name, metrics_paths)
    markdown = to_markdown(name, frame, TITLES[name])
    _write(csv_path, frame.to_csv(index=False, float_format="%.4f"))
    _write(md_path, markdown)
    return frame


# --------------------------------------------------------------------------------- figures


def draw_sweeps(name: str, frame: pd.DataFrame, config: dict):
    """One panel per swept parameter: Dice (left axis) and ASD (right) against its values,
    mean +- std over seeds as a band, the configured default (paper's choice) dotted."""
    from matplotlib.figure import Figure

    defaults, paper = method_defaults(config), paper_defaults()
    parameters = list(section(config)[name]["sweeps"])
    figure = Figure(figsize=(4.2 * len(parameters), 3.4), layout="constrained")
    axes = figure.subplots(1, len(parameters), squeeze=False)[0]
    for ax, parameter in zip(axes, parameters, strict=True):
        part = frame[frame.parameter == parameter].reset_index(drop=True)
        x = list(range(len(part)))
        dice = part.dsc_mean.astype(float)
        dice_std = part.dsc_std.astype(float).fillna(0.0)
        asd = part.asd_mean.astype(float)
        asd_std = part.asd_std.astype(float).fillna(0.0)
        ax.plot(x, dice, "o-", color="C0", label="Dice")
        ax.fill_between(x, dice - dice_std, dice + dice_std, color="C0", alpha=0.2)
        ax.set_ylabel("Dice (%)", color="C0")
        twin = ax.twinx()
        ax.set_zorder(twin.get_zorder() + 1)  # Dice drawn over ASD where the two meet
        ax.patch.set_visible(False)
        twin.plot(x, asd, "s--", color="C3", label="ASD")
        twin.fill_between(x, asd - asd_std, asd + asd_std, color="C3", alpha=0.15)
        twin.set_ylabel(f"ASD ({'mm' if part.units.iloc[0] == 'mm' else 'voxels'})", color="C3")
        ax.set_xticks(x, [f"{v:g}" if isinstance(v, float) else str(v) for v in part.value])
        ax.set_xlabel(PARAMETER_LABELS.get(parameter, parameter))
        chosen = [i for i, v in enumerate(part.value) if v == defaults[parameter]]
        for i in chosen:
            ax.axvline(i, color="0.4", linestyle=":", linewidth=1.2)
        chosen_text = f"default: {defaults[parameter]}"
        if defaults[parameter] != paper[parameter]:
            chosen_text += f" (paper: {paper[parameter]})"
        ax.set_title(chosen_text, fontsize=9)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    # one legend under the panels: inside an axis it hides points at either end of a sweep
    figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=2)
    first = frame.iloc[0]
    seeds = int(frame.n_seeds.max()) if len(frame) else 0
    paper_sweeps = PAPER_SWEEPS.get(name, ())
    missing = [PARAMETER_LABELS.get(p, p) for p in paper_sweeps if p not in parameters]
    not_swept = f"\nnot swept in this config: {', '.join(missing)}" if missing else ""
    figure.suptitle(
        f"{TITLES[name]}\n{first.dataset}, {first.ratio_pct:g} % labeled, {first.data} data, "
        f"{seeds} seed(s){not_swept}",
        fontsize=10,
    )
    return figure


def write_figure(
    name: str,
    config: dict,
    metrics_paths: list[Path],
    png_path: Path,
    pdf_path: Path,
    csv_path: Path,
) -> pd.DataFrame:
    """`results/figures/fig7.png` / `.pdf` and the numbers behind them (`.csv`)."""
    frame = summarize(config, name, metrics_paths)
    frame.insert(2, "parameter", [run.settings[0][0] for run in ablation_runs(config, name)])
    frame.insert(3, "value", [run.settings[0][1] for run in ablation_runs(config, name)])
    figure = draw_sweeps(name, frame, config)
    for path, kind in ((png_path, "png"), (pdf_path, "pdf")):
        tmp = atomic_path(Path(path))
        figure.savefig(tmp, format=kind, dpi=150)
        os.replace(tmp, path)
    _write(csv_path, frame.to_csv(index=False, float_format="%.4f"))
    return frame
