"""The evidence a reader needs to judge a reproduction, as data and as self-contained pages.

- `seed_scores`: every table's runs, one row per seed (a run that labels every training patient
  counts at every labeled ratio, as the paper's tables list UNet-F);
- `compare_cells`: each cell the paper reports beside the seeds' mean, spread and range, so a
  reader sees at once whether the paper's value is even reachable by the seeds run here;
- `run_records`: per-run provenance (code version, device, protocol recorded by the run) and
  what each rule cost (Snakemake `benchmark:` files);
- `*_html`: the same as pages for `snakemake --report`, which shows HTML inline but offers CSV
  files only as downloads.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mona.config import PROTOCOL_DEFAULTS, dataset_train, protocol, run_ratio, split_variant
from mona.io import atomic_path, read_json
from mona.report.tables import (
    PAPER_FILES,
    SWITCHES,
    collect_runs,
    paper_numbers,
    runs_of,
    settings_line,
    shared_subsets,
    source_lines,
)

# Paper metric column -> reproduced column; ASD's unit follows the `units` switch.
PAPER_METRICS = {"dsc": "dsc", "asd": "asd_mm"}
# Columns that identify one cell of a paper table; a table with other keys adds its entry here.
PAPER_KEYS: dict[str, tuple[str, ...]] = {
    "table1": ("dataset", "ratio_pct", "method"),
    "table4": ("dataset", "ratio_pct", "method"),
}
SEED_COLUMNS = [
    "table",
    "dataset",
    "ratio_pct",
    "method",
    "method_id",
    "all_labels",
    "seed",
    "dsc",
    "asd",
    "code_version",
    "device",
]
COMPARE_COLUMNS = [
    "metric",
    "unit",
    "paper",
    "reproduced_mean",
    "reproduced_std",
    "n_seeds",
    "seed_min",
    "seed_max",
    "delta",
    "paper_within_seeds",
    "method_id",
]
DATASET_NAMES = {"acdc": "ACDC", "lits": "LiTS", "mmwhs": "MM-WHS"}


def dataset_label(config: dict, dataset: str) -> str:
    """How a dataset is named in figures: by its kind (ACDC, LiTS, MM-WHS), else its key."""
    kind = config.get("datasets", {}).get(dataset, {}).get("kind", dataset)
    return DATASET_NAMES.get(kind, dataset)


def data_origin(config: dict, dataset: str) -> str:
    """'synthetic' or 'real' for a configured dataset, '' for one the config does not name."""
    spec = config.get("datasets", {}).get(dataset)
    if spec is None:
        return ""
    return "synthetic" if spec["raw"] == "synthetic" else "real"


def switch_columns(config: dict, dataset: str) -> dict:
    """The protocol switches and schedule in force for `dataset`, as table columns."""
    known = dataset in config.get("datasets", {})
    switches = protocol(config, dataset if known else None)
    return {
        "data": data_origin(config, dataset),
        **{s: switches[s] for s in SWITCHES},
        "schedule": dataset_train(config, dataset if known else None).get("schedule", "poly"),
        "iterations": dataset_train(config, dataset if known else None).get("iterations"),
    }


def seed_scores(config: dict, metrics_paths: Sequence[Path]) -> pd.DataFrame:
    """One row per table x dataset x ratio x method x seed: DSC in %, ASD in the run's unit."""
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    runs = collect_runs(list(metrics_paths))
    rows = []
    if len(runs):
        for table, spec in config["tables"].items():
            for dataset in spec["datasets"]:
                for ratio in config["ratios"]:
                    for method_id in spec["methods"]:
                        cls = methods[split_variant(method_id)[0]]
                        folder = run_ratio(config, dataset, method_id, ratio)
                        for run in runs_of(runs, dataset, method_id, folder).itertuples():
                            rows.append(
                                {
                                    "table": table,
                                    "dataset": dataset,
                                    "ratio_pct": ratio,
                                    "method": cls.display_name or method_id,
                                    "method_id": method_id,
                                    "all_labels": cls.labeled_pool == "all",
                                    "seed": run.seed,
                                    "dsc": run.dsc,
                                    "asd": run.asd,
                                    "code_version": run.code_version,
                                    "device": run.device,
                                }
                            )
    frame = pd.DataFrame(rows, columns=SEED_COLUMNS)
    return frame  # in table order: table, dataset, ratio, the table's method order, seed


def compare_cells(paper: pd.DataFrame, seeds: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """Each paper cell and metric beside the matching seeds (matched on `keys`).

    `delta` is reproduced mean minus paper value; `paper_within_seeds` says whether the paper's
    value lies within [min, max] of the seeds (empty when no seed was run).
    """
    keys = list(keys)
    rows = []
    for _, cell in paper.iterrows():
        match = seeds
        for key in keys:
            match = match[match[key] == cell[key]]
        method_ids = ";".join(sorted(set(match["method_id"]))) if "method_id" in match else ""
        for metric, paper_column in PAPER_METRICS.items():
            if paper_column not in paper.columns or pd.isna(cell[paper_column]):
                continue
            reported = float(cell[paper_column])
            values = match[metric].dropna().astype(float)
            n = len(values)
            low, high = (values.min(), values.max()) if n else (None, None)
            mean = values.mean() if n else None
            rows.append(
                {
                    **{key: cell[key] for key in keys},
                    "metric": metric,
                    "unit": "%" if metric == "dsc" else "",
                    "paper": reported,
                    "reproduced_mean": mean,
                    "reproduced_std": values.std(ddof=1) if n > 1 else None,
                    "n_seeds": n,
                    "seed_min": low,
                    "seed_max": high,
                    "delta": None if mean is None else mean - reported,
                    "paper_within_seeds": None if n == 0 else bool(low <= reported <= high),
                    "method_id": method_ids,
                }
            )
    frame = pd.DataFrame(rows, columns=[*keys, *COMPARE_COLUMNS])
    frame["paper_within_seeds"] = frame["paper_within_seeds"].astype("boolean")
    return frame


@dataclass(frozen=True)
class Comparison:
    """One paper table against its reproduced seeds (one row per seed), matched on `keys`.

    Tables 1 and 4 come from the configured tables (`table_comparisons`); Tables 2, 3 and 5
    from their own modules (keyed by components, views, or setting and framework).
    """

    table: str
    paper: pd.DataFrame
    seeds: pd.DataFrame
    keys: tuple[str, ...] = ("dataset", "ratio_pct", "method")


def comparison_frame(config: dict, comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """The cells of every comparison, with the unit of ASD and the switches in force."""
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    ids_by_name = {cls.display_name: name for name, cls in methods.items() if cls.display_name}
    frames = []
    for comparison in comparisons:
        cells = compare_cells(comparison.paper, comparison.seeds, comparison.keys)
        if "method" in cells:
            unmatched = cells.method_id == ""
            cells.loc[unmatched, "method_id"] = cells.loc[unmatched, "method"].map(
                lambda name: ids_by_name.get(name, "")
            )
        for dataset in cells.dataset.unique():
            units = protocol(config, dataset if dataset in config["datasets"] else None)["units"]
            cells.loc[(cells.dataset == dataset) & (cells.metric == "asd"), "unit"] = units
        extra = pd.DataFrame([switch_columns(config, d) for d in cells.dataset], index=cells.index)
        frames.append(pd.concat([cells.assign(table=comparison.table), extra], axis=1))
    keys = list(dict.fromkeys(k for comparison in comparisons for k in comparison.keys))
    if not frames:
        return pd.DataFrame(columns=["table", *(keys or PAPER_KEYS["table1"]), *COMPARE_COLUMNS])
    frame = pd.concat(frames, ignore_index=True)
    first = ["table", *keys, *COMPARE_COLUMNS]
    return frame[[*first, *(c for c in frame.columns if c not in first)]]


def table_comparisons(config: dict, seeds: pd.DataFrame) -> list[Comparison]:
    """Tables 1 and 4 (the configured `tables`) against their seeds.

    Cells of methods or datasets this config does not run stay in, with `n_seeds` 0, so the
    file also says what is left to reproduce. Variant runs (`name~key=value`) are never
    matched to a paper cell: the paper reports each method under its own settings only.
    """
    plain = seeds[~seeds.method_id.astype(str).str.contains("~", regex=False)]
    return [
        Comparison(
            table,
            paper_numbers(table),
            plain[plain.table == table],
            PAPER_KEYS.get(table, ("dataset", "ratio_pct", "method")),
        )
        for table in config["tables"]
        if table in PAPER_FILES
    ]


def paper_vs_reproduced(config: dict, seeds: pd.DataFrame) -> pd.DataFrame:
    """Every cell of every configured table (1, 4) the paper reports, switches in force."""
    return comparison_frame(config, table_comparisons(config, seeds))


def extra_comparisons(
    config: dict, extra: Mapping[str, Sequence[Path]] | None
) -> list[Comparison]:
    """Tables 2 and 3 (MONA's ablations) and 5 (frameworks), from their runs' metrics files."""
    from mona.report import ablations, table5

    comparisons = []
    for name, paths in (extra or {}).items():
        paths = [Path(p) for p in paths]
        if name in ablations.PAPER_FILES:
            comparisons.append(ablations.comparison(config, name, paths))
        elif name == "table5":
            comparisons.append(table5.comparison(config, paths))
        else:
            raise ValueError(f"no paper comparison for {name!r}")
    return comparisons


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    tmp = atomic_path(path)
    frame.to_csv(tmp, index=False, float_format="%.4f")
    os.replace(tmp, path)


def write_text(text: str, path: Path) -> None:
    path = Path(path)
    tmp = atomic_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- provenance and cost


BENCHMARK_SUFFIX = ".benchmark.tsv"
# `{stage}.{kind}.benchmark.tsv` -> the rule that wrote it
STAGE_RULES = {"train": "train", "evaluate": "evaluate_stage", "share": "share_pretrain"}


def _benchmark(path: Path) -> dict:
    """Seconds, peak memory (MB) and CPU seconds of one Snakemake benchmark file."""
    frame = pd.read_csv(path, sep="\t")
    if not len(frame):
        return {}
    last = frame.iloc[-1]
    return {
        "s": float(last["s"]),
        "max_rss_mb": pd.to_numeric(last.get("max_rss"), errors="coerce"),
        "cpu_s": pd.to_numeric(last.get("cpu_time"), errors="coerce"),
    }


def _benchmark_files(run_dir: Path) -> dict[Path, tuple[str, str, str]]:
    """Benchmark files timing a run -> (rule, stage, which seeds).

    A job may train or evaluate one seed (`{run}/{stage}/benchmark.tsv`,
    `{run}/evaluate.benchmark.tsv`) or every seed of a ratio in turn
    (`{run}/../{stage}.train.benchmark.tsv`, `{run}/../evaluate.benchmark.tsv`).
    """
    seed = run_dir.name.removeprefix("s")
    found = {path: ("train", path.parent.name, seed) for path in run_dir.glob("*/benchmark.tsv")}
    for folder, seeds in ((run_dir, seed), (run_dir.parent, "all")):
        for path in folder.glob(f"*{BENCHMARK_SUFFIX}"):
            parts = path.name.removesuffix(BENCHMARK_SUFFIX).split(".")
            if parts == ["evaluate"]:
                found[path] = ("evaluate", "", seeds)
            elif len(parts) == 2 and parts[1] in STAGE_RULES:
                stage, rule = parts
                found[path] = (STAGE_RULES[rule], stage, seeds)
    return found


def run_records(config: dict, metrics_paths: Sequence[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, one row per timed job) from `metrics.json` and the files beside it.

    A run's stages are the folders beside its `metrics.json` holding a `train.json`; its
    training time is what the engine measured per stage, and the jobs' times come from the
    Snakemake benchmark files, whether a job ran one seed or all seeds of a ratio.
    """
    runs, jobs, timed = [], [], set()
    for path in sorted(Path(p) for p in metrics_paths):
        metrics = read_json(path)
        run_dir = path.parent
        ident = {
            "dataset": metrics["dataset"],
            "method": metrics.get("run_method") or metrics["method"],
            "ratio": str(metrics["ratio"]),
        }
        stages = sorted(
            (read_json(p) for p in run_dir.glob("*/train.json")),
            key=lambda record: record.get("stage", ""),
        )
        for bench, (rule, stage, seeds) in sorted(_benchmark_files(run_dir).items()):
            if bench not in timed:
                timed.add(bench)
                jobs.append(
                    {"rule": rule, **ident, "stage": stage, "seeds": seeds, **_benchmark(bench)}
                )
        recorded = {**PROTOCOL_DEFAULTS, **metrics.get("protocol", {})}
        recorded.update(metrics.get("evaluation", {}))
        known = ident["dataset"] in config["datasets"]
        in_force = protocol(config, ident["dataset"] if known else None)
        summary = metrics.get("summary", {})
        runs.append(
            {
                **ident,
                "seed": metrics["seed"],
                "dsc": None if summary.get("dsc") is None else 100.0 * summary["dsc"],
                "asd": summary.get("asd"),
                "stages": "+".join(r.get("stage", "train") for r in stages),
                "iterations": sum(r.get("iterations") or 0 for r in stages),
                "labeled_patients": metrics.get("labeled_patients"),
                "labeled_slices": metrics.get("labeled_slices"),
                "train_s": round(sum(r.get("seconds") or 0.0 for r in stages), 2),
                "steps_per_s": stages[-1].get("steps_per_second") if stages else None,
                "code_version": metrics.get("code_version"),
                "device": metrics.get("device"),
                "torch": metrics.get("torch"),
                "protocol": ", ".join(f"{s}={recorded.get(s)}" for s in SWITCHES),
                "protocol_as_config": all(recorded.get(s) == in_force[s] for s in SWITCHES),
                "run_dir": str(run_dir),
            }
        )
    return pd.DataFrame(runs), pd.DataFrame(jobs)


def runtime_summary(jobs: pd.DataFrame) -> pd.DataFrame:
    """Time per rule, method and stage: jobs, total, mean and longest seconds, peak memory."""
    if not len(jobs) or "s" not in jobs:
        return pd.DataFrame(columns=["rule", "method", "stage", "jobs", "total_s", "mean_s"])
    timed = jobs.dropna(subset=["s"])
    grouped = timed.groupby(["rule", "method", "stage"], sort=True)
    summary = grouped.agg(
        jobs=("s", "size"),
        total_s=("s", "sum"),
        mean_s=("s", "mean"),
        max_s=("s", "max"),
        max_rss_mb=("max_rss_mb", "max"),
    )
    return summary.reset_index()


# ---------------------------------------------------------------- HTML pages

_STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
p.note { color: #555; max-width: 60em; }
"""


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A self-contained page: a title, then (heading, HTML body) sections."""
    body = "".join(
        (f"<h2>{html.escape(heading)}</h2>" if heading else "") + content
        for heading, content in sections
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# Column headers a reader understands; any other column loses its underscores.
HEADERS = {
    "ratio_pct": "labeled %",
    "method_id": "run",
    "reproduced_mean": "reproduced mean",
    "reproduced_std": "reproduced std",
    "n_seeds": "seeds",
    "seed_min": "lowest seed",
    "seed_max": "highest seed",
    "delta": "Δ (reproduced - paper)",
    "paper_within_seeds": "paper within seeds' range",
}


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """Readable headers, and yes / no for booleans (which pandas would print as True/False)."""
    shown = frame.copy()
    for column in shown.columns:
        values = shown[column].dropna()
        if len(values) and values.map(lambda v: isinstance(v, bool)).all():
            shown[column] = shown[column].map(
                lambda v: "-" if v is None or (isinstance(v, float) and pd.isna(v))
                else ("yes" if v else "no")
            )  # fmt: skip
    return shown.rename(columns=lambda c: HEADERS.get(c, str(c).replace("_", " ")))


def _frame_html(frame: pd.DataFrame, digits: int = 2) -> str:
    return readable(frame).to_html(
        index=False, na_rep="-", float_format=lambda v: f"{v:.{digits}f}"
    )


def _mean_std(mean, std, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    spread = "" if std is None or pd.isna(std) else f" ± {std:.{digits}f}"
    return f"{mean:.{digits}f}{spread}"


def _number(value, digits: int, sign: bool = False) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _numeric(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce")


def _protocol_line(frame: pd.DataFrame) -> str:
    data = ", ".join(sorted(set(frame.data.dropna().astype(str)) - {""}))
    return f"Data: {data}. {settings_line(frame)}"


def table_html(table: str, frame: pd.DataFrame) -> str:
    """A results table (`results/{table}.csv`) as the paper lays it out, paper values beside."""
    if not len(frame):
        return html_page(table, [("", _note("No rows."))])
    units = "/".join("mm" if u == "mm" else "voxels" for u in dict.fromkeys(frame["units"]))
    rows = list(frame.itertuples())
    methods = frame.method
    if "setting" in frame:  # Table 5: each framework twice, pre-training only and fine-tuned
        pairs = zip(methods, frame.setting, strict=True)
        methods = [f"{m} ({s.replace('_', ' ')})" for m, s in pairs]
    delta = _numeric(frame.dsc_mean) - _numeric(frame.paper_dsc)
    # a table quoting several papers (the beyond table) names each row's source below
    quoted = "reported" if "paper_source" in frame else "paper"
    shown = pd.DataFrame(
        {
            "dataset": frame.dataset,
            "labeled %": frame.ratio_pct,
            "labeled patients": [
                "-" if pd.isna(v) else str(int(v))
                for v in frame.get("labeled_patients", pd.Series([None] * len(frame)))
            ],
            "method": methods,
            "DSC %": [_mean_std(r.dsc_mean, r.dsc_std, 1) for r in rows],
            f"{quoted} DSC": [_number(v, 1) for v in frame.paper_dsc],
            "Δ DSC": [_number(v, 1, True) for v in delta],
            f"ASD ({units})": [_mean_std(r.asd_mean, r.asd_std, 2) for r in rows],
            f"{quoted} ASD (mm)": [_number(v, 2) for v in frame.paper_asd],
            "seeds": frame.n_seeds,
            "ASD excluded": frame.asd_excluded,
        }
    )
    notes = _note(_protocol_line(frame)) + _note(
        "Mean ± sample standard deviation over seeds. Δ = reproduced - paper. 'ASD excluded' "
        "counts class-level distances the empty-mask policy left out."
    )
    notes += "".join(_note(line) for line in shared_subsets(frame))
    sources = "".join(_note(line.lstrip("- ")) for line in source_lines(frame) if line)
    flags = list(dict.fromkeys(f for f in frame.get("flag", pd.Series(dtype=str)).fillna("") if f))
    flagged = "".join(_note(f"Cannot be trusted: {flag}") for flag in flags)
    return html_page(
        f"{table}: reproduced and {quoted}",
        [("", notes + shown.to_html(index=False) + sources + flagged)],
    )


def compare_html(cells: pd.DataFrame) -> str:
    """The paper-vs-reproduced cells, with a count of how many the seeds bracket."""
    if not len(cells):
        return html_page("Paper vs reproduced", [("", _note("No table with paper numbers."))])
    run = cells[cells.n_seeds > 0]
    dsc = run[run.metric == "dsc"]
    summary = _note(
        f"{len(run)} of {len(cells)} paper cells have reproduced seeds; the paper's value lies "
        f"within the seeds' [min, max] for {int(run.paper_within_seeds.sum())} of them. Mean "
        f"|Δ DSC| over reproduced cells: {_number(dsc.delta.abs().mean(), 1)} points."
    ) + _note(_protocol_line(cells))
    sections = [("", summary)]
    for table, part in run.groupby("table", sort=False):
        keys = [
            c
            for c in cells.columns[1 : cells.columns.get_loc("metric")]
            if part[c].notna().any()
        ]
        shown = part[[*keys, *(c for c in COMPARE_COLUMNS if c != "method_id")]]
        if not {"method"} & set(keys):
            shown = shown.assign(run=part.method_id)
        sections.append((f"{table}: cells with reproduced seeds", _frame_html(shown)))
    return html_page("Paper vs reproduced", sections)


def protocol_html(config: dict, runs: pd.DataFrame) -> str:
    """The switches, schedule and data in force, per dataset, and the code versions seen."""
    per_dataset = pd.DataFrame(
        [
            {
                "dataset": name,
                "kind": spec["kind"],
                "raw": spec["raw"],
                **switch_columns(config, name),
                "split_seed": protocol(config, name)["split_seed"],
            }
            for name, spec in config["datasets"].items()
        ]
    )
    train = pd.DataFrame(
        [{"setting": k, "value": str(v)} for k, v in sorted(config.get("train", {}).items())]
        + [
            {"setting": f"{k} ({name})", "value": str(v)}
            for name, spec in config["datasets"].items()
            for k, v in sorted((spec.get("train") or {}).items())
        ]
    )
    grid = _note(
        f"Labeled ratios (%): {', '.join(map(str, config['ratios']))}. Seeds: "
        f"{', '.join(map(str, config['seeds']))}. Tables: "
        + "; ".join(
            f"{t}: {', '.join(s['methods'])} on {', '.join(s['datasets'])}"
            for t, s in config["tables"].items()
        )
        + "."
    )
    sections = [("Datasets and switches", per_dataset.to_html(index=False)), ("Grid", grid)]
    sections.append(("Training schedule", train.to_html(index=False)))
    if len(runs):
        versions = runs.groupby(["code_version", "device", "torch"], dropna=False).size()
        seen = versions.rename("runs").reset_index()
        mismatch = int((~runs.protocol_as_config).sum())
        sections.append(
            (
                "Code and devices of the runs",
                seen.to_html(index=False)
                + _note(
                    f"{mismatch} run(s) recorded protocol switches other than the config's."
                    if mismatch
                    else "Every run recorded the protocol switches the config sets."
                ),
            )
        )
    return html_page("Protocol in force", sections)


def runs_html(runs: pd.DataFrame) -> str:
    if not len(runs):
        return html_page("Runs", [("", _note("No runs."))])
    intro = _note(
        "One row per evaluated run: scores (DSC %, ASD), labeled patients and slices, "
        "training iterations and seconds over all stages (as the engine measured them), the "
        "last stage's steps per second, and the provenance each run recorded."
    )
    return html_page("Runs and provenance", [("", intro + _frame_html(runs))])


def runtimes_html(jobs: pd.DataFrame) -> str:
    summary = runtime_summary(jobs)
    by_rule = summary.groupby("rule", sort=True).agg(
        jobs=("jobs", "sum"), total_s=("total_s", "sum")
    )
    intro = _note(
        "Wall-clock seconds per job from Snakemake's benchmark files (train: per stage; "
        "evaluate: inference and scoring), grouped by rule, method and stage. 'seeds' says "
        "whether a job ran one seed or every seed of its labeled ratio in turn."
    )
    return html_page(
        "Time per rule",
        [
            ("Totals", intro + _frame_html(by_rule.reset_index(), 1)),
            ("By method and stage", _frame_html(summary, 1)),
            ("Every job", _frame_html(jobs, 2)),
        ],
    )


# ---------------------------------------------------------------- entry points of the rules


def write_seed_scores(config: dict, metrics_paths: Sequence[Path], seeds_csv: Path) -> pd.DataFrame:
    """Per-seed scores of the configured tables (what the result plots draw)."""
    seeds = seed_scores(config, metrics_paths)
    write_csv(seeds, seeds_csv)
    return seeds


def read_seed_scores(seeds_csv: Path) -> pd.DataFrame:
    return pd.read_csv(seeds_csv, dtype={"method_id": str, "method": str, "dataset": str})


def write_comparison(
    config: dict,
    seeds_csv: Path,
    compare_csv: Path,
    page: Path,
    extra: Mapping[str, Sequence[Path]] | None = None,
) -> pd.DataFrame:
    """Paper-vs-reproduced cells of every table the paper reports (CSV) and their page.

    `extra` maps `table2`, `table3` and `table5` to their runs' metrics files.
    """
    seeds = read_seed_scores(seeds_csv)
    comparisons = [*table_comparisons(config, seeds), *extra_comparisons(config, extra)]
    cells = comparison_frame(config, comparisons)
    write_csv(cells, compare_csv)
    write_text(compare_html(cells), page)
    return cells


def write_provenance(
    config: dict,
    metrics_paths: Sequence[Path],
    runs_csv: Path,
    runs_page: Path,
    runtimes_page: Path,
    protocol_page: Path,
) -> pd.DataFrame:
    """Per-run provenance (CSV and page), time per rule and the protocol in force."""
    runs, jobs = run_records(config, metrics_paths)
    write_csv(runs, runs_csv)
    write_text(runs_html(runs), runs_page)
    write_text(runtimes_html(jobs), runtimes_page)
    write_text(protocol_html(config, runs), protocol_page)
    return runs


def write_table_page(table: str, table_csv: Path, page: Path) -> None:
    write_text(table_html(table, pd.read_csv(table_csv)), page)
