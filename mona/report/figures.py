"""The paper's qualitative panels (Figures 3, 4, 6) and the plots that summarise a reproduction.

Qualitative panels show, for one test slice, the image, the ground truth and each chosen
method's prediction as coloured overlays; predictions come from the runs' `model.pt`, so a
figure is redrawn from existing runs without training. Only methods some configured table runs
on the dataset can be drawn; requested methods without runs are named on the figure and the
table's methods drawn instead, so a figure never silently shows something else.

Result plots read the per-seed scores of Tables 1 and 4 (`results/seed_scores.csv`, from
`mona.report.compare`): Dice against labeled ratio (seeds as error bars, the paper dotted
beside), and paper against reproduced Dice.

Every figure is written as PNG and PDF with the non-interactive Agg backend; no pyplot state is
used, so figures can be drawn from any thread or process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mona.errors import DataError
from mona.io import atomic_path, load_array, read_json

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

DEFAULT_METHODS = ("cps", "gcl", "scs", "plc", "mona")
DEFAULT_DPI = 200
RESULT_PLOTS = ("dice_vs_ratio", "paper_vs_reproduced")
PANEL_INCHES = 2.1
OVERLAY_ALPHA = 0.5


# ---------------------------------------------------------------- what to draw


@dataclass(frozen=True)
class QualitativePlan:
    """One qualitative figure: which runs, which slices, and which requested methods are absent.

    `methods` are run names drawn, in order; `missing` the requested ones no configured table
    runs on `dataset`; `fallback` is true when none of the requested ones could be drawn and
    the table's methods are shown instead.
    """

    figure: str
    dataset: str
    ratio: float
    seed: int
    methods: tuple[str, ...]
    missing: tuple[str, ...]
    fallback: bool
    cases: tuple[tuple[str, Any], ...]  # (case id or "auto", slice index or "auto")
    crop: bool
    dpi: int


def table_methods(config: dict, dataset: str) -> list[str]:
    """Methods some configured table runs on `dataset`, in table order, without repeats."""
    seen: dict[str, None] = {}
    for spec in config.get("tables", {}).values():
        if dataset in spec["datasets"]:
            seen.update(dict.fromkeys(spec["methods"]))
    return list(seen)


def figures_section(config: dict) -> dict:
    return config.get("figures") or {}


def qualitative_plans(config: dict) -> dict[str, QualitativePlan]:
    """The configured qualitative figures whose dataset some table runs (others are skipped)."""
    section = figures_section(config)
    requested_default = section.get("methods", list(DEFAULT_METHODS))
    plans = {}
    for name, spec in (section.get("qualitative") or {}).items():
        dataset = spec["dataset"]
        available = table_methods(config, dataset)
        if dataset not in config["datasets"] or not available:
            continue
        requested = spec.get("methods", requested_default)
        drawn = [m for m in requested if m in available]
        missing = [m for m in requested if m not in available]
        cases = spec.get("cases") or [{}]
        plans[name] = QualitativePlan(
            figure=name,
            dataset=dataset,
            ratio=spec.get("ratio", config["ratios"][0]),
            seed=spec.get("seed", config["seeds"][0]),
            methods=tuple(drawn or available),
            missing=tuple(missing),
            fallback=not drawn,
            cases=tuple((c.get("case", "auto"), c.get("slice", "auto")) for c in cases),
            crop=spec.get("crop", True),
            dpi=section.get("dpi", DEFAULT_DPI),
        )
    return plans


def figure_config_problems(config: dict) -> list[str]:
    """Checks the schema cannot express: datasets, ratios and seeds the DAG really runs."""
    problems = []
    for name, spec in (figures_section(config).get("qualitative") or {}).items():
        where = f"config figures.qualitative.{name}"
        if name in RESULT_PLOTS:
            problems.append(f"{where}: the name is taken by a result plot")
        if spec["dataset"] not in config["datasets"]:
            problems.append(f"{where}.dataset: unknown dataset {spec['dataset']!r}")
        if "ratio" in spec and spec["ratio"] not in config["ratios"]:
            problems.append(
                f"{where}.ratio: {spec['ratio']} is not one of the config's ratios "
                f"{config['ratios']}, so no run exists for it"
            )
        if "seed" in spec and spec["seed"] not in config["seeds"]:
            problems.append(
                f"{where}.seed: {spec['seed']} is not one of the config's seeds {config['seeds']}"
            )
    return problems


def display_names(config: dict, method_ids: Sequence[str]) -> list[str]:
    """Paper names of methods (`MT`), the run name for unregistered or variant ones."""
    from mona.config import split_variant
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    names = []
    for method_id in method_ids:
        base, overrides = split_variant(method_id)
        cls = methods.get(base)
        if cls is None or not cls.display_name:
            names.append(method_id)
        else:
            variant = f" ({method_id.partition('~')[2]})" if overrides else ""
            names.append(cls.display_name + variant)
    return names


# ---------------------------------------------------------------- choosing slices


def best_slice(truth: np.ndarray, num_classes: int) -> int:
    """The slice showing the most classes, then the largest smallest class, then most foreground.

    Why this order: a qualitative panel should show every structure, and the rarest one (a
    tumour, a thin myocardium) large enough to judge.
    """
    keys = []
    for index in range(truth.shape[0]):
        counts = np.bincount(np.asarray(truth[index]).ravel(), minlength=num_classes)[1:]
        present = counts[counts > 0]
        smallest = int(present.min()) if len(present) else 0
        keys.append((len(present), smallest, int(counts.sum()), -index))
    return int(max(range(len(keys)), key=keys.__getitem__))


def choose_slices(
    manifest: dict, processed_dir: Path, test_patients: Sequence[str], requests: Sequence[tuple]
) -> list[tuple[dict, int]]:
    """Resolve (case, slice) requests; "auto" picks distinct test cases showing most classes."""
    by_id = {case["case_id"]: case for case in manifest["cases"]}
    test = set(test_patients)

    def classes_present(case: dict) -> int:
        return sum(1 for v in case.get("class_voxels", [])[1:] if v > 0)

    ranked = sorted(
        (c for c in manifest["cases"] if c["patient_id"] in test),
        key=lambda c: (-classes_present(c), c["case_id"]),
    )
    chosen, used, problems = [], set(), []
    for case_name, slice_request in requests:
        if case_name == "auto":
            case = next((c for c in ranked if c["case_id"] not in used), None)
            if case is None:
                problems.append(
                    f"figures: more 'auto' cases requested than the {len(ranked)} test cases"
                )
                continue
        elif case_name in by_id:
            case = by_id[case_name]
        else:
            problems.append(f"figures: case {case_name!r} is not in {processed_dir}/manifest.json")
            continue
        used.add(case["case_id"])
        depth = case["original_shape"][0]
        if slice_request == "auto":
            truth = load_array(processed_dir / case["gt"], mmap_mode="r")
            index = best_slice(truth, manifest["num_classes"])
        elif 0 <= int(slice_request) < depth:
            index = int(slice_request)
        else:
            problems.append(
                f"figures: slice {slice_request} of {case['case_id']} is not in [0, {depth})"
            )
            continue
        chosen.append((case, index))
    if problems:
        raise DataError(problems)
    return chosen


# ---------------------------------------------------------------- predictions


def predict_slice(net, image_volume: np.ndarray, index: int, shape: tuple[int, int]) -> np.ndarray:
    """One slice's predicted labels on the volume's own (H, W) grid, as evaluation computes them."""
    from mona.evaluate.inference import predict_volume, to_original_grid

    device = next(net.parameters()).device
    labels = predict_volume(net, image_volume[index : index + 1], device)
    return to_original_grid(labels, (1, *shape))[0]


def case_dice(metrics: dict, case_id: str) -> float | None:
    """A run's 3D Dice (%) on one test volume, mean over foreground classes scored."""
    for case in metrics.get("cases", []):
        if case.get("case_id") == case_id:
            values = [v for v in case.get("dice", []) if v is not None]
            return 100.0 * float(np.mean(values)) if values else None
    return None


@dataclass
class PanelRow:
    """Everything one row of a qualitative figure shows."""

    case_id: str
    slice_index: int
    depth: int
    image: np.ndarray  # processed slice (h, w), what the network saw
    truth: np.ndarray  # (H, W) on the volume's own grid
    spacing: tuple[float, float]  # (row, col) in mm
    predictions: list[np.ndarray]
    dice: list[float | None]


def load_rows(
    plan: QualitativePlan,
    processed_dir: Path,
    split_path: Path,
    models: Sequence[Path],
    metrics: Sequence[Path],
) -> tuple[list[PanelRow], dict]:
    """Choose the slices and predict them with each run's test-time network (on the CPU)."""
    import torch

    from mona.evaluate.run import load_inference_net

    processed_dir = Path(processed_dir)
    manifest = read_json(processed_dir / "manifest.json")
    split = read_json(split_path)
    picks = choose_slices(manifest, processed_dir, split["test"], plan.cases)
    nets = [load_inference_net(Path(p), torch.device("cpu")) for p in models]
    scores = [read_json(p) for p in metrics]
    rows = []
    for case, index in picks:
        images = load_array(processed_dir / case["image"], mmap_mode="r")
        truth = np.asarray(load_array(processed_dir / case["gt"], mmap_mode="r")[index])
        rows.append(
            PanelRow(
                case_id=case["case_id"],
                slice_index=index,
                depth=case["original_shape"][0],
                image=np.asarray(images[index], dtype=np.float32),
                truth=truth,
                spacing=(float(case["spacing"][1]), float(case["spacing"][2])),
                predictions=[predict_slice(net, images, index, truth.shape) for net in nets],
                dice=[case_dice(m, case["case_id"]) for m in scores],
            )
        )
    return rows, manifest


# ---------------------------------------------------------------- drawing


def class_colors(num_classes: int) -> list[tuple[float, float, float]]:
    """One colour per foreground class, distinguishable and the same in every figure."""
    import seaborn as sns

    palette = "tab10" if num_classes - 1 <= 10 else "tab20"
    return [tuple(c) for c in sns.color_palette(palette, max(num_classes - 1, 1))]


def overlay(labels: np.ndarray, colors: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """RGBA image: each foreground class in its colour, background transparent."""
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for index, color in enumerate(colors, start=1):
        mask = labels == index
        rgba[mask, :3] = color
        rgba[mask, 3] = OVERLAY_ALPHA
    return rgba


def crop_box(masks: Sequence[np.ndarray], margin: float = 0.25) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) around every mask's foreground, widened by `margin`; None if none.

    The box covers predictions too, so a false positive far from the organ stays visible.
    """
    union = np.zeros(masks[0].shape, dtype=bool)
    for mask in masks:
        union |= mask > 0
    if not union.any():
        return None
    rows, cols = np.nonzero(union)
    height, width = union.shape
    pad_r = max(2, int(margin * (rows.max() - rows.min() + 1)))
    pad_c = max(2, int(margin * (cols.max() - cols.min() + 1)))
    return (
        max(0, rows.min() - pad_r),
        min(height, rows.max() + 1 + pad_r),
        max(0, cols.min() - pad_c),
        min(width, cols.max() + 1 + pad_c),
    )


def view_mm(row: PanelRow, crop: bool) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) in mm of what a row shows: the crop box, or the whole slice."""
    height_px, width_px = row.truth.shape
    box = crop_box([row.truth, *row.predictions]) if crop else None
    r0, r1, c0, c1 = box if box is not None else (0, height_px, 0, width_px)
    row_mm, col_mm = row.spacing
    return c0 * col_mm, c1 * col_mm, r1 * row_mm, r0 * row_mm


def draw_qualitative(
    rows: Sequence[PanelRow],
    class_names: Sequence[str],
    method_names: Sequence[str],
    title: str,
    notes: Sequence[str],
    crop: bool = True,
) -> Figure:
    """Image | ground truth | one column per method; one row per chosen slice.

    Panels keep the anatomy's physical proportions (pixel spacing), so a row is as tall as
    its view is high relative to its width.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = class_colors(len(class_names))
    columns = ["Image", "Ground truth", *method_names]
    ncols = len(columns)
    views = [view_mm(row, crop) for row in rows]
    aspects = [min(2.0, max(0.45, (b - t) / (r - left))) for left, r, b, t in views]
    top_in, bottom_in, gap_in = 0.7, 0.55 + 0.22 * len(notes), 0.08
    width = PANEL_INCHES * ncols + 0.4
    panels_in = sum(PANEL_INCHES * a for a in aspects) + gap_in * (len(rows) - 1)
    height = panels_in + top_in + bottom_in
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.4 / width,
        right=0.995,
        top=1 - top_in / height,
        bottom=bottom_in / height,
        wspace=0.04,
        hspace=gap_in / (PANEL_INCHES * float(np.mean(aspects))),
    )
    axes = fig.subplots(len(rows), ncols, squeeze=False, gridspec_kw={"height_ratios": aspects})
    for r, (row, (left, right, bottom, top)) in enumerate(zip(rows, views, strict=True)):
        height_px, width_px = row.truth.shape
        extent = (0, width_px * row.spacing[1], height_px * row.spacing[0], 0)
        for c, labels in enumerate([None, row.truth, *row.predictions]):
            ax = axes[r][c]
            ax.imshow(
                row.image, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="bilinear"
            )
            if labels is not None:
                ax.imshow(overlay(labels, colors), extent=extent, interpolation="nearest")
            ax.set_xlim(left, right)
            ax.set_ylim(bottom, top)
            ax.set_aspect("equal")  # millimetres on both axes: true proportions
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=11)
            if c >= 2:
                dice = row.dice[c - 2]
                ax.text(
                    0.03, 0.03, "3D DSC " + ("n/a" if dice is None else f"{dice:.1f} %"),
                    transform=ax.transAxes, fontsize=8.5, color="white",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 2, "edgecolor": "none"},
                )  # fmt: skip
        axes[r][0].set_ylabel(f"{row.case_id}\nslice {row.slice_index + 1}/{row.depth}", fontsize=9)
    handles = [
        Patch(facecolor=color, alpha=0.8, label=name)
        for color, name in zip(colors, class_names[1:], strict=False)
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 8),
        frameon=False,
        fontsize=10,
        bbox_to_anchor=(0.5, (0.22 * len(notes) + 0.05) / height),
    )
    fig.suptitle(title, fontsize=12, y=1 - 0.1 / height, va="top")
    for i, note in enumerate(notes):
        fig.text(
            0.5, (0.22 * (len(notes) - i) - 0.12) / height, note, ha="center", fontsize=8.5,
            color="#444",
        )  # fmt: skip
    return fig


def save_figure(fig: Figure, png: Path, pdf: Path, dpi: int = DEFAULT_DPI) -> None:
    """PNG and PDF, each written beside its target and renamed into place."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    for path, fmt in ((Path(png), "png"), (Path(pdf), "pdf")):
        tmp = atomic_path(path)
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white")
        os.replace(tmp, path)


def write_qualitative(
    config: dict,
    plan: QualitativePlan,
    processed_dir: Path,
    split_path: Path,
    models: Sequence[Path],
    metrics: Sequence[Path],
    png: Path,
    pdf: Path,
) -> list[PanelRow]:
    """Draw one qualitative figure from the runs named by `plan` (models in plan order)."""
    from mona.report.compare import data_origin, dataset_label

    rows, manifest = load_rows(plan, processed_dir, split_path, models, metrics)
    names = display_names(config, plan.methods)
    origin = data_origin(config, plan.dataset)
    title = (
        f"{dataset_label(config, plan.dataset)}: {plan.ratio:g} % labeled, seed {plan.seed}"
        + (" (synthetic data)" if origin == "synthetic" else "")
    )
    notes = ["3D DSC: the run's mean foreground Dice over this whole test volume."]
    if plan.missing:
        missing = ", ".join(display_names(config, plan.missing))
        notes.append(
            f"Requested but not run by any configured table on this dataset: {missing}"
            + ("; drawn instead: the table's methods." if plan.fallback else ".")
        )
    fig = draw_qualitative(rows, manifest["class_names"], names, title, notes, crop=plan.crop)
    save_figure(fig, png, pdf, plan.dpi)
    return rows


# ---------------------------------------------------------------- result plots


def method_palette(config: dict) -> dict[str, tuple]:
    """One colour per method name of the configured tables, the same in every figure.

    More than ten methods take tab20 with its dark shades first, so that neighbours in the
    tables' order stay easy to tell apart.
    """
    import seaborn as sns

    ids = list(dict.fromkeys(m for spec in config["tables"].values() for m in spec["methods"]))
    names = list(dict.fromkeys(display_names(config, ids)))
    if len(names) <= 10:
        colors = sns.color_palette("tab10", 10)
    else:
        pairs = sns.color_palette("tab20", 20)
        colors = pairs[0::2] + pairs[1::2]
    return {name: colors[i % len(colors)] for i, name in enumerate(names)}


def _palette_for(config: dict, names: Sequence[str]) -> dict[str, tuple]:
    """The config's method colours, extended for names the tables do not list."""
    import seaborn as sns

    palette = method_palette(config)
    extra = list(dict.fromkeys(n for n in names if n not in palette))
    palette.update(zip(extra, sns.color_palette("dark", len(extra)), strict=True))
    return palette


def _dataset_title(config: dict, dataset: str) -> str:
    from mona.report.compare import data_origin, dataset_label

    origin = data_origin(config, dataset)
    return dataset_label(config, dataset) + (f" ({origin} data)" if origin else "")


def _seed_count(seeds: pd.DataFrame) -> str:
    counts = seeds.groupby(["dataset", "ratio_pct", "method_id"]).seed.nunique()
    if not len(counts):
        return "no seeds"
    low, high = int(counts.min()), int(counts.max())
    return f"{low} seed{'s' if high > 1 else ''}" if low == high else f"{low}-{high} seeds"


def _style():
    """Seaborn's white grid at a readable size, for this figure only (no global state)."""
    from contextlib import ExitStack

    import seaborn as sns

    stack = ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.95))
    return stack


def plot_dice_vs_ratio(config: dict, seeds: pd.DataFrame, cells: pd.DataFrame) -> Figure:
    """Dice against labeled ratio, one panel per dataset: mean ± SD over seeds, seeds as dots.

    A method trained on every label (UNet-F) does not depend on the ratio and is drawn as a
    horizontal line with its SD band; the paper's values for the same cells are dotted in the
    same colour.
    """
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    seeds = seeds.drop_duplicates(["dataset", "ratio_pct", "method_id", "seed"])
    datasets = list(dict.fromkeys(seeds.dataset)) or ["(no runs)"]
    palette = _palette_for(config, list(seeds.method))
    method_order = [name for name in palette if name in set(seeds.method)]
    ratios = sorted(config["ratios"])
    # methods sit side by side around each ratio so that their error bars stay apart
    spread = len(method_order) - 1
    dodge = {m: 1.0 + 0.04 * (i - spread / 2) for i, m in enumerate(method_order)}
    paper = cells[(cells.metric == "dsc") & cells.ratio_pct.isin(ratios)] if len(cells) else cells
    with _style():
        fig = Figure(figsize=(4.6 * len(datasets) + 1.9, 4.3), layout="constrained")
        axes = fig.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            here = seeds[seeds.dataset == dataset].copy()
            here["x"] = here.ratio_pct * here.method.map(dodge)
            full = here.all_labels.astype(bool)
            curves = here[~full]
            if len(curves):
                sns.lineplot(
                    data=curves, x="x", y="dsc", hue="method", palette=palette, errorbar="sd",
                    err_style="bars", err_kws={"capsize": 3}, marker="o", ax=ax, legend=False,
                )  # fmt: skip
                ax.scatter(
                    curves.x, curves.dsc, s=16, color=[palette[m] for m in curves.method],
                    alpha=0.6, edgecolors="white", linewidths=0.4, zorder=3,
                )  # fmt: skip
            for method, runs in here[full].groupby("method"):
                mean, std = runs.dsc.mean(), runs.dsc.std(ddof=1)
                ax.axhline(mean, color=palette[method], lw=1.6, ls="--")
                if pd.notna(std):
                    ax.axhspan(mean - std, mean + std, color=palette[method], alpha=0.12, lw=0)
            reported = paper[paper.dataset == dataset] if len(paper) else paper
            for method, cell in reported.groupby("method") if len(reported) else []:
                if method in palette:
                    cell = cell.sort_values("ratio_pct")
                    ax.plot(
                        cell.ratio_pct, cell.paper, ls=":", marker="o", mfc="none",
                        color=palette[method], lw=1.2, ms=5,
                    )  # fmt: skip
            ax.set_xscale("log")
            ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
            ax.minorticks_off()
            ax.set_xlim(min(ratios) / 1.35, max(ratios) * 1.35)
            ax.set_ylim(0, 100)
            ax.set_xlabel("Labeled training patients (%)")
            ax.set_ylabel("Dice (%)")
            ax.set_title(_dataset_title(config, dataset), fontsize=11)
        handles = [Line2D([], [], color=palette[m], marker="o", label=m) for m in method_order]
        handles += [
            Line2D([], [], color="#555", marker="o", label="reproduced: mean ± SD"),
            Line2D([], [], color="#555", ls="", marker="o", alpha=0.6, ms=4, label="single seeds"),
            Line2D([], [], color="#555", ls="--", label="all labels (any ratio)"),
            Line2D([], [], color="#555", ls=":", marker="o", mfc="none", label="paper"),
        ]
        fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=9)
        fig.suptitle(f"Dice against labeled ratio ({_seed_count(seeds)} per point)", fontsize=12)
    return fig


def all_label_methods(config: dict) -> set[str]:
    """Table methods that learn from every training label, whatever the ratio (UNet-F)."""
    from mona.config import split_variant
    from mona.registry import load_methods

    methods = load_methods(tuple(config.get("plugins", [])))
    ids = {m for spec in config["tables"].values() for m in spec["methods"]}
    return {m for m in ids if methods[split_variant(m)[0]].labeled_pool == "all"}


def plot_paper_vs_reproduced(config: dict, cells: pd.DataFrame) -> Figure:
    """Reproduced against paper Dice, one point per method x ratio, identity line dashed."""
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    run = cells[(cells.metric == "dsc") & (cells.n_seeds > 0)]
    # a method trained on every label is one run at every ratio: draw it once
    full = run.method_id.isin(all_label_methods(config))
    run = pd.concat(
        [
            run[~full].assign(where=[f"{r:g} % labeled" for r in run[~full].ratio_pct]),
            run[full].drop_duplicates(["dataset", "method_id"]).assign(where="all labels"),
        ]
    )
    datasets = list(dict.fromkeys(run.dataset)) or ["(no runs)"]
    palette = _palette_for(config, list(run.method))
    method_order = [name for name in palette if name in set(run.method)]
    ratios = sorted(set(run[run["where"] != "all labels"].ratio_pct))
    wheres = [f"{r:g} % labeled" for r in ratios]
    shapes = ["o", "s", "^", "D", "v", "P", "X"][: len(ratios)]
    if (run["where"] == "all labels").any():
        wheres, shapes = [*wheres, "all labels"], [*shapes, "*"]
    markers = dict(zip(wheres, shapes, strict=True))
    with _style():
        fig = Figure(figsize=(4.2 * len(datasets) + 1.8, 4.5), layout="constrained")
        axes = fig.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            ax.plot([0, 100], [0, 100], ls="--", color="#888", lw=1, zorder=1)
            here = run[run.dataset == dataset]
            if len(here):
                ax.errorbar(
                    here.paper, here.reproduced_mean, yerr=here.reproduced_std.fillna(0),
                    fmt="none", ecolor="#999", elinewidth=0.8, capsize=2, zorder=2,
                )  # fmt: skip
                per_ratio = here[here["where"] != "all labels"]
                if len(per_ratio):
                    sns.scatterplot(
                        data=per_ratio, x="paper", y="reproduced_mean", hue="method",
                        style="where", palette=palette, markers=markers, s=55, ax=ax,
                        legend=False, zorder=3,
                    )  # fmt: skip
                once = here[here["where"] == "all labels"]
                ax.scatter(
                    once.paper, once.reproduced_mean, marker="*", s=150, zorder=3,
                    color=[palette[m] for m in once.method], edgecolors="white", linewidths=0.5,
                )  # fmt: skip
            ax.set_xlim(0, 100)
            ax.set_ylim(0, 100)
            ax.set_aspect("equal")
            ax.set_xlabel("Paper Dice (%)")
            ax.set_ylabel("Reproduced Dice (%)")
            ax.set_title(_dataset_title(config, dataset), fontsize=11)
        handles = [
            Line2D([], [], color=palette[m], marker="o", ls="", label=m) for m in method_order
        ]
        handles += [
            Line2D([], [], color="#555", marker=markers[w], ls="", label=w, ms=size)
            for w in wheres
            for size in [11 if w == "all labels" else 6]
        ]
        handles.append(Line2D([], [], color="#888", ls="--", label="reproduced = paper"))
        fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=9)
        fig.suptitle("Paper against reproduced Dice (bars: SD over seeds)", fontsize=12)
    return fig


def write_result_plots(
    config: dict,
    seeds_csv: Path,
    dice_png: Path | None = None,
    dice_pdf: Path | None = None,
    scatter_png: Path | None = None,
    scatter_pdf: Path | None = None,
) -> None:
    """Draw whichever result plots have targets, from the per-seed scores of Tables 1 and 4."""
    from mona.report.compare import paper_vs_reproduced, read_seed_scores

    seeds = read_seed_scores(seeds_csv)
    cells = paper_vs_reproduced(config, seeds)
    dpi = figures_section(config).get("dpi", DEFAULT_DPI)
    if dice_png is not None:
        save_figure(plot_dice_vs_ratio(config, seeds, cells), dice_png, dice_pdf, dpi)
    if scatter_png is not None:
        save_figure(plot_paper_vs_reproduced(config, cells), scatter_png, scatter_pdf, dpi)
