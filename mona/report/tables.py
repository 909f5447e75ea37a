"""Aggregate per-run metrics into the paper's tables, with the paper's numbers beside them.

One row per dataset x labeled ratio x method: DSC (%) and ASD as mean, sample standard
deviation (ddof = 1) and range over seeds, the number of seeds, how many class-level distances
the empty-mask policy excluded, the paper's values, whether the data were synthetic, and the
protocol switches in force (on every row, so a row copied elsewhere keeps them).

The switches, schedule and iterations of a row are the ones its runs recorded (a table never
labels old numbers with a newer config's policy); the config's only where no run exists yet.
Seeds recorded under different switches are never averaged into one row.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pandas as pd

from mona.config import dataset_train, protocol, run_ratio, split_variant
from mona.engine import TrainConfig
from mona.errors import DataError
from mona.io import atomic_path, read_json
from mona.registry import load_methods

PAPER_FILES = {"table1": "table1_acdc_lits.csv", "table4": "table4_mmwhs.csv"}
# Tables whose reported numbers come from several papers, each row naming its source and split
# (never compared cell by cell with the MONA paper's on the paper-vs-reproduced page).
REPORTED_FILES = {"table_beyond": "table_beyond_reported.csv"}
SWITCHES = ("split", "labeled", "checkpoint", "asd", "units", "empty", "baselines")
# What a row says about how its numbers were made, besides the switches.
SCHEDULE = ("schedule", "iterations", "lr")


def lr_text(train: dict, method: str | None = None, stage: str | None = None) -> str | None:
    """The lr a run's last stage started from, then its earlier stages' own where `stage_lr`
    names them ('0.2 (pretrain 0.01)')."""
    if train.get("lr") is None:
        return None
    config = TrainConfig(lr=train["lr"], stage_lr=train.get("stage_lr") or {})
    stages: tuple[str, ...] = ()
    if method is not None:
        methods = load_methods()  # a plugin method not loaded here: its earlier stages unnamed
        stages = methods[method].stages if method in methods else ()
    stages = stages[: stages.index(stage)] if stage in stages else ()  # the stages before it
    last = config.lr_for(stage, method) if stage else config.lr
    earlier = [
        f"{name} {config.lr_for(name, method):g}"
        for name in stages
        if config.lr_for(name, method) != last
    ]
    return f"{last:g}" + (f" ({', '.join(earlier)})" if earlier else "")


def paper_numbers(table: str) -> pd.DataFrame:
    """The reported DSC/ASD for `table` (empty frame if no paper reports such a table); a
    `source` column where the numbers come from several papers."""
    name = PAPER_FILES.get(table) or REPORTED_FILES.get(table)
    if name is None:
        return pd.DataFrame(columns=["dataset", "method", "ratio_pct", "dsc", "asd_mm"])
    with resources.files("mona.report").joinpath("paper", name).open() as handle:
        return pd.read_csv(handle)


def recorded_settings(metrics: dict) -> dict:
    """Switches and schedule a metrics file records (None where it records nothing).

    Training-time switches come from the run's `protocol`, evaluation-time ones from its
    `evaluation` block, which wins where both name one (`checkpoint`).
    """
    switches = {**metrics.get("protocol", {}), **metrics.get("evaluation", {})}
    train = metrics.get("train", {})
    return {
        **{s: switches.get(s) for s in SWITCHES},
        "schedule": train.get("schedule"),
        "iterations": metrics.get("iterations"),
        "lr": lr_text(train, metrics.get("method"), metrics.get("stage")),
    }


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
                "labeled_patients": metrics.get("labeled_patients"),
                "code_version": metrics.get("code_version"),
                "device": metrics.get("device"),
                "test_data": metrics.get("test_data_fingerprint"),
                **{f"recorded_{k}": v for k, v in recorded_settings(metrics).items()},
                "path": str(path),
            }
        )
    return pd.DataFrame(rows)


def runs_of(runs: pd.DataFrame, dataset: str, method_id: str, run_ratio: str) -> pd.DataFrame:
    """The seeds of one run (dataset, method or variant, ratio folder) among collected runs."""
    if not len(runs):
        return runs
    return runs[
        (runs.dataset == dataset) & (runs.method_id == method_id) & (runs.run_ratio == run_ratio)
    ]


def row_settings(config: dict, dataset: str, runs: pd.DataFrame) -> dict:
    """Data origin, switches and schedule of one table row: what its runs recorded.

    A setting no run recorded falls back to the config's; runs that recorded different values
    raise, naming the files.
    """
    train = dataset_train(config, dataset)
    configured = {
        **{s: protocol(config, dataset)[s] for s in SWITCHES},
        "schedule": train.get("schedule", "poly"),
        "iterations": train.get("iterations"),
        "lr": lr_text({"lr": train.get("lr", TrainConfig.lr)}),
    }
    synthetic = config["datasets"][dataset]["raw"] == "synthetic"
    settings = {"data": "synthetic" if synthetic else "real"}
    for key, fallback in configured.items():
        column = f"recorded_{key}"
        values = runs[column].dropna().unique() if column in runs else []
        if len(values) > 1:
            files = ", ".join(sorted(runs.path))
            raise DataError(
                [f"{files}: seeds of one table row were made under different {key} "
                 f"({', '.join(map(str, sorted(values, key=str)))}); rerun them under one"]
            )  # fmt: skip
        if not len(values):
            settings[key] = fallback
        else:
            settings[key] = values[0].item() if hasattr(values[0], "item") else values[0]
    return settings


def seed_statistics(runs: pd.DataFrame) -> dict:
    """DSC and ASD over a row's seeds: mean, sample std, min and max; seeds; exclusions."""
    stats: dict = {}
    for metric in ("dsc", "asd"):
        values = runs[metric].dropna().astype(float) if len(runs) else pd.Series(dtype=float)
        stats[f"{metric}_mean"] = values.mean() if len(values) else None
        stats[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else None
        stats[f"{metric}_min"] = values.min() if len(values) else None
        stats[f"{metric}_max"] = values.max() if len(values) else None
    stats["n_seeds"] = len(runs)
    stats["asd_excluded"] = int(runs.asd_excluded.sum()) if len(runs) else 0
    patients = runs.labeled_patients.dropna() if "labeled_patients" in runs else []
    # the same count for every seed (each seed labels the first n of its own patient order)
    stats["labeled_patients"] = int(patients.max()) if len(patients) else None
    return stats


def code_versions(runs: pd.DataFrame) -> str:
    return ";".join(sorted(set(runs.code_version.dropna()))) if len(runs) else ""


def test_data_of(runs: pd.DataFrame, dataset: str) -> str | None:
    """The one test-set fingerprint the runs of `dataset` were scored on (None if none says).

    Rows of one dataset are compared with each other, so they must be scores of the same
    bytes: runs scored on regenerated or re-preprocessed data raise, naming their files.
    """
    if not len(runs) or "test_data" not in runs:
        return None
    here = runs[(runs.dataset == dataset) & runs.test_data.notna()]
    values = sorted(here.test_data.unique())
    if len(values) > 1:
        groups = "; ".join(
            f"{value}: {', '.join(sorted(here[here.test_data == value].path))}"
            for value in values
        )
        raise DataError(
            [f"runs of {dataset} were scored on different test data ({groups}); re-evaluate "
             "them on one preprocessed dataset"]
        )  # fmt: skip
    return values[0] if values else None


def build_table(
    table: str, metrics_paths: list[Path], config: dict, plateau_paths: list[Path] = ()
) -> pd.DataFrame:
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    runs = collect_runs(metrics_paths)
    paper = paper_numbers(table)
    spec = config["tables"][table]
    rows = []
    for dataset in spec["datasets"]:
        test_data = test_data_of(runs, dataset)
        for ratio in config["ratios"]:
            for method_id in spec["methods"]:
                cls = methods[split_variant(method_id)[0]]
                folder = run_ratio(config, dataset, method_id, ratio)
                runs_here = runs_of(runs, dataset, method_id, folder)
                reported = paper[
                    (paper.dataset == dataset)
                    & (paper.method == cls.display_name)
                    & (paper.ratio_pct == ratio)
                ]
                rows.append(
                    {
                        "dataset": dataset,
                        "ratio_pct": ratio,
                        "method": cls.display_name or method_id,
                        "method_id": method_id,
                        **seed_statistics(runs_here),
                        "paper_dsc": reported.dsc.iloc[0] if len(reported) else None,
                        "paper_asd": reported.asd_mm.iloc[0] if len(reported) else None,
                        **(
                            {"paper_source": reported.source.iloc[0] if len(reported) else None}
                            if "source" in paper
                            else {}
                        ),
                        **row_settings(config, dataset, runs_here),
                        "code_version": code_versions(runs_here),
                        "test_data": test_data,
                        "all_labels": cls.labeled_pool == "all",
                    }
                )
    frame = pd.DataFrame(rows)
    frame["flag"] = bound_flags(frame) if len(frame) else []
    if len(frame):
        add_plateau_checks(frame, runs, collect_runs(list(plateau_paths)), config)
    return frame.drop(columns="all_labels")


def add_plateau_checks(
    frame: pd.DataFrame, runs: pd.DataFrame, longer: pd.DataFrame, config: dict
) -> None:
    """Columns `plateau_dsc` / `plateau_iterations` on the all-labels rows, and a flag on any
    whose seed is more than `convergence.tolerance` points below the same seed trained at
    `convergence.multiple` x the iterations: that bound is not at its plateau."""
    check = config.get("convergence")
    frame["plateau_dsc"] = None
    frame["plateau_iterations"] = None
    if not check:
        return
    for index in frame.index[frame.all_labels]:
        row = frame.loc[index]
        here = runs_of(longer, row.dataset, row.method_id, "all")
        if not len(here):
            continue
        long_run = here.iloc[0]
        frame.at[index, "plateau_dsc"] = long_run.dsc
        frame.at[index, "plateau_iterations"] = long_run.recorded_iterations
        same_seed = runs_of(runs, row.dataset, row.method_id, "all")
        same_seed = same_seed[same_seed.seed == long_run.seed] if len(same_seed) else same_seed
        if not len(same_seed) or long_run.dsc is None or same_seed.dsc.iloc[0] is None:
            continue
        short, gap = same_seed.dsc.iloc[0], long_run.dsc - same_seed.dsc.iloc[0]
        if gap > check["tolerance"]:
            sentence = (
                f"{row.dataset}: {row.method}, trained on every label, is not at its plateau: "
                f"seed {long_run.seed} reaches {long_run.dsc:.1f} DSC at "
                f"{long_run.recorded_iterations} iterations against {short:.1f} here, "
                f"{gap:.1f} points more than this schedule gives (tolerance "
                f"{check['tolerance']:g}), so no row of {row.dataset} is a converged result "
                "and the rows do not rank the methods."
            )
            frame.at[index, "flag"] = " ".join(filter(None, (frame.at[index, "flag"], sentence)))


# A row above the all-labels bound by more than its own seed std plus this many DSC points
# cannot be ranked: at that schedule the bound is not a bound.
BOUND_MARGIN = 2.0


def bound_flags(frame: pd.DataFrame) -> list[str]:
    """Per row, a sentence if its DSC beats the all-labels bound (UNet-F) of its dataset by
    more than its seed std + `BOUND_MARGIN` points; '' otherwise."""
    flags = []
    for row in frame.itertuples():
        bound = frame[(frame.dataset == row.dataset) & frame.all_labels & frame.dsc_mean.notna()]
        mean, std = row.dsc_mean, row.dsc_std
        if row.all_labels or not len(bound) or mean is None or pd.isna(mean):
            flags.append("")
            continue
        top = bound.iloc[0]
        spread = 0.0 if std is None or pd.isna(std) else float(std)
        if mean - top.dsc_mean > spread + BOUND_MARGIN:
            flags.append(
                f"{row.dataset}: {row.method} at {row.ratio_pct} % ({mean:.1f} DSC) beats "
                f"{top.method}, "
                f"trained on every label ({top.dsc_mean:.1f}), by more than its seed spread "
                f"+ {BOUND_MARGIN:g} points: the all-labels bound is not converged or not a "
                "bound here, so this row does not rank the methods."
            )
        else:
            flags.append("")
    return flags


def settings_line(frame: pd.DataFrame) -> str:
    """'Protocol: split=paper, ...' for a table; a setting that differs between rows (one
    dataset's own split, say) is listed per dataset."""
    parts = []
    for key in (*SWITCHES, *SCHEDULE):
        if key not in frame:  # a table written before the setting existed
            continue
        values = dict.fromkeys(frame[key])
        if len(values) == 1:
            parts.append(f"{key}={next(iter(values))}")
        else:
            per = frame.groupby("dataset", sort=False)[key].agg(
                lambda v: "/".join(map(str, dict.fromkeys(v)))
            )
            parts.append(f"{key}=" + ", ".join(f"{d}: {v}" for d, v in per.items()))
    return "Protocol: " + "; ".join(parts) + "."


TITLES = {
    "table1": "Table 1: ACDC and LiTS",
    "table4": "Table 4: MM-WHS",
    "table_beyond": "Beyond the paper: UniMatch and BCP beside MONA (Table 1 protocol)",
}


def source_lines(frame: pd.DataFrame) -> list[str]:
    """Where each method's reported numbers come from, for tables that quote several papers:
    their splits and ratios differ from this table's, so they sit beside it, not in it."""
    if "paper_source" not in frame:
        return []
    sources = frame.dropna(subset=["paper_source"]).groupby("method", sort=False)["paper_source"]
    lines = [f"- {method}: {'; '.join(dict.fromkeys(values))}." for method, values in sources]
    quoted = set(frame.dropna(subset=["paper_source"]).method)
    missing = [m for m in dict.fromkeys(frame.method) if m not in quoted]
    if missing:
        lines.append(f"- {', '.join(missing)}: no reported number for these rows.")
    return ["", "Reported numbers (`reported` columns):", *lines] if lines else []


def shared_subsets(frame: pd.DataFrame) -> list[str]:
    """Sentences naming ratios of a dataset that label the same patients.

    A ratio selects round(ratio x training patients) whole patients, at least one, as a prefix
    of each seed's patient order, so two ratios with the same count train on the same labeled
    set and their rows show the same training (MM-WHS's 15 training volumes: 1 % and 5 % are
    both one patient). Where the config fixes the patient count, the DAG trains it once
    (`mona.config.shared_ratio`).
    """
    notes = []
    if "labeled_patients" not in frame:
        return notes
    for dataset, rows in frame.groupby("dataset", sort=False):
        counts = (
            rows.dropna(subset=["labeled_patients"])
            .groupby("ratio_pct")["labeled_patients"]
            .min()
        )
        by_count: dict[int, list] = {}
        for ratio, count in counts.items():
            by_count.setdefault(int(count), []).append(ratio)
        for count, ratios in by_count.items():
            if len(ratios) > 1:
                listed = " and ".join(f"{r:g} %" for r in ratios)
                notes.append(
                    f"{dataset}: {listed} label the same {count} patient(s) per seed, so their "
                    "rows come from the same training (same seeds, same labeled patients)."
                )
    return notes


def plateau_lines(frame: pd.DataFrame) -> list[str]:
    """Whether each dataset's all-labels bound was checked against a longer run, and how it
    stood (the flags say when it fell short)."""
    if "plateau_dsc" not in frame or not len(frame):
        return []
    checked = frame[frame.plateau_iterations.notna()]
    if not len(checked):
        return ["", "The all-labels bound was not checked against a longer run (`convergence:` "
                "is off, or no such run was given), so this table cannot say whether its bound "
                "is converged."]  # fmt: skip
    lines = []
    for (dataset, method), rows in checked.groupby(["dataset", "method"], sort=False):
        row = rows.iloc[0]
        lines.append(
            f"Plateau check, {dataset}: {method}'s first seed trained "
            f"{int(row.plateau_iterations)} iterations reaches {row.plateau_dsc:.1f} DSC."
        )
    return [""] + lines if lines else []


def to_markdown(table: str, frame: pd.DataFrame, title: str | None = None) -> str:
    def cell(mean, std, digits):
        if mean is None or pd.isna(mean):
            return "-"
        return f"{mean:.{digits}f}" + (
            "" if std is None or pd.isna(std) else f" ± {std:.{digits}f}"
        )

    def labeled(row):
        count = getattr(row, "labeled_patients", None)
        return "-" if count is None or pd.isna(count) else str(int(count))

    def paper_cell(value, digits):
        return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    lines = [f"# {title or TITLES.get(table, table)}", ""]
    if len(frame):
        units = "/".join(
            "mm" if u == "mm" else "voxels" for u in dict.fromkeys(frame["units"])
        )
        lines += [
            f"Data: {', '.join(sorted(set(frame.data)))}. {settings_line(frame)}",
            f"Mean ± sample std over seeds; DSC in %, ASD in {units}. `asd excl.` counts "
            "class-level distances left out by the empty-mask policy; `labeled` is the number "
            "of labeled patients.",
            *shared_subsets(frame),
            "",
        ]
    quoted = "reported" if "paper_source" in frame else "paper"
    lines += [
        f"| dataset | ratio % | labeled | method | DSC | {quoted} DSC | ASD | {quoted} ASD "
        "| seeds | asd excl. |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    # the bound's rows repeat per ratio, and so would their flags
    flagged = list(
        dict.fromkeys(row.flag for row in frame.itertuples() if getattr(row, "flag", ""))
    )
    for row in frame.itertuples():
        mark = " (!)" if getattr(row, "flag", "") else ""
        lines.append(
            f"| {row.dataset} | {row.ratio_pct} | {labeled(row)} | {row.method}{mark} | "
            f"{cell(row.dsc_mean, row.dsc_std, 1)} | {paper_cell(row.paper_dsc, 1)} | "
            f"{cell(row.asd_mean, row.asd_std, 2)} | {paper_cell(row.paper_asd, 2)} | "
            f"{row.n_seeds} | {row.asd_excluded} |"
        )
    lines += plateau_lines(frame)
    lines += source_lines(frame)
    if flagged:
        lines += ["", f"(!) {len(flagged)} row(s) cannot be trusted:"]
        lines += [f"- {flag}" for flag in flagged]
    return "\n".join(lines) + "\n"


def write_table(
    table: str,
    metrics_paths: list[Path],
    csv_path: Path,
    md_path: Path,
    config: dict,
    plateau_paths: list[Path] = (),
) -> pd.DataFrame:
    frame = build_table(table, metrics_paths, config, plateau_paths)
    for path, text in (
        (csv_path, frame.to_csv(index=False, float_format="%.4f")),
        (md_path, to_markdown(table, frame)),
    ):
        tmp = atomic_path(path)
        tmp.write_text(text)
        os.replace(tmp, path)
    return frame
