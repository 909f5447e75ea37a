"""Figures and the paper-vs-reproduced file, built from small fabricated runs.

Runs are fabricated as the pipeline leaves them: `metrics.json` with hand-chosen scores, a
`model.pt` saved the way the engine saves one (a fresh backbone), benchmark files; the processed
data are the 10-patient synthetic ACDC of `conftest.py`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mona.config import validate_schema
from mona.errors import DataError
from mona.io import read_json, write_json
from mona.report.compare import (
    run_records,
    runtime_summary,
    write_comparison,
    write_provenance,
    write_seed_scores,
    write_table_page,
)
from mona.report.figures import (
    best_slice,
    crop_box,
    figure_config_problems,
    qualitative_plans,
    view_mm,
    write_qualitative,
    write_result_plots,
)

REPO = Path(__file__).resolve().parent.parent

# Hand-chosen Dice (fraction) and ASD (mm) per (method, ratio) and seed.
SCORES = {
    ("mt", "5"): [(0.50, 4.0), (0.60, 6.0), (0.70, 8.0)],
    ("unet_l", "5"): [(0.40, 10.0), (0.44, 12.0)],
    ("mt", "1"): [(0.30, 20.0)],
    ("unet_f", "all"): [(0.90, 1.0), (0.92, 1.2)],
}


def small_config() -> dict:
    config = copy.deepcopy(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    config["ratios"] = [1, 5]
    config["seeds"] = [0, 1, 2]
    config["tables"] = {"table1": {"datasets": ["acdc"], "methods": ["unet_f", "unet_l", "mt"]}}
    return config


def save_model(path: Path, num_classes: int, image_size: int) -> None:
    """A fresh backbone saved with the fields `mona.engine` writes."""
    from mona.io import save_torch
    from mona.models import build_backbone

    torch.manual_seed(0)
    widths = [4, 8, 16, 32, 64]
    net = build_backbone("unet", 1, num_classes, widths, "bilinear")
    save_torch(
        {
            "method": "mt",
            "stage": "train",
            "num_classes": num_classes,
            "image_size": image_size,
            "backbone": {"name": "unet", "widths": widths, "upsample": "bilinear"},
            "inference_state": net.state_dict(),
            "method_state": {},
        },
        path,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, processed_acdc):
    """Fabricated runs of `SCORES` under runs/acdc/{method}/r{ratio}/s{seed}/."""
    root = tmp_path_factory.mktemp("runs")
    manifest = read_json(processed_acdc / "manifest.json")
    patients = sorted({c["patient_id"] for c in manifest["cases"]})
    split = {"train": patients[:7], "val": [], "test": patients[7:]}
    write_json(split, root / "split.json")
    test_cases = [c["case_id"] for c in manifest["cases"] if c["patient_id"] in split["test"]]
    paths = []
    for (method, ratio), scores in SCORES.items():
        for seed, (dsc, asd) in enumerate(scores):
            run = root / "runs" / "acdc" / method / f"r{ratio}" / f"s{seed}"
            (run / "train").mkdir(parents=True)
            save_model(run / "train" / "model.pt", manifest["num_classes"], 32)
            write_json(
                {"stage": "train", "iterations": 10, "seconds": 3.0 + seed},
                run / "train" / "train.json",
            )
            # UNet-F: one job per seed; the others: one job for every seed of a ratio
            timed = run if method == "unet_f" else run.parent
            train_bench = run / "train" / "benchmark.tsv" if method == "unet_f" else None
            (train_bench or timed / "train.train.benchmark.tsv").write_text(
                f"s\th:m:s\tmax_rss\tcpu_time\n{10.0 + seed}\t0:00:10\t500.0\t9.0\n"
            )
            (timed / "evaluate.benchmark.tsv").write_text("s\tmax_rss\n2.5\t300.0\n")
            write_json(
                {
                    "dataset": "acdc",
                    "method": method,
                    "run_method": method,
                    "ratio": ratio,
                    "seed": seed,
                    "code_version": "abc123",
                    "device": "cpu:x86_64",
                    "torch": torch.__version__,
                    "protocol": {"split": "paper", "asd": "symmetric"},
                    "summary": {"dsc": dsc, "asd": asd, "asd_excluded": 0},
                    # per-case Dice: the mean over classes is `dsc` for every case
                    "cases": [{"case_id": c, "dice": [dsc, dsc, None]} for c in test_cases],
                },
                run / "metrics.json",
            )
            paths.append(run / "metrics.json")
    return root, paths


def test_paper_vs_reproduced_cells_match_hand_computed_values(runs, tmp_path):
    root, paths = runs
    config = small_config()
    write_seed_scores(config, paths, tmp_path / "seeds.csv")
    cells = write_comparison(
        config, tmp_path / "seeds.csv", tmp_path / "cmp.csv", tmp_path / "cmp.html"
    )
    csv = pd.read_csv(tmp_path / "cmp.csv")
    assert {
        "table", "dataset", "ratio_pct", "method", "metric", "unit", "paper", "reproduced_mean",
        "reproduced_std", "n_seeds", "seed_min", "seed_max", "delta", "paper_within_seeds",
        "split", "labeled", "checkpoint", "asd", "units", "empty", "data",
    } <= set(csv.columns)  # fmt: skip

    def cell(method, ratio, metric):
        rows = cells[
            (cells.dataset == "acdc")
            & (cells.method == method)
            & (cells.ratio_pct == ratio)
            & (cells.metric == metric)
        ]
        assert len(rows) == 1
        return rows.iloc[0]

    mt = cell("MT", 5, "dsc")  # seeds 50, 60, 70 %; paper Table 1: 58.3
    assert (mt.paper, mt.n_seeds, mt.seed_min, mt.seed_max) == (58.3, 3, 50.0, 70.0)
    assert mt.reproduced_mean == pytest.approx(60.0)
    assert mt.reproduced_std == pytest.approx(10.0)
    assert mt.delta == pytest.approx(1.7)
    assert bool(mt.paper_within_seeds)
    unet_l = cell("UNet-L", 5, "dsc")  # seeds 40, 44 %; paper 51.7 lies above both
    assert unet_l.delta == pytest.approx(42.0 - 51.7)
    assert not bool(unet_l.paper_within_seeds)
    mt_asd = cell("MT", 5, "asd")  # seeds 4, 6, 8 mm; paper 11.2
    assert mt_asd.delta == pytest.approx(6.0 - 11.2) and mt_asd.unit == "mm"
    single = cell("MT", 1, "dsc")  # one seed: no spread, range is the point itself
    assert single.n_seeds == 1 and pd.isna(single.reproduced_std)
    assert single.delta == pytest.approx(30.0 - 36.8) and not bool(single.paper_within_seeds)
    # UNet-F learns from every label: its one run counts at every ratio, as in the paper
    for ratio in (1, 5):
        full = cell("UNet-F", ratio, "dsc")
        assert full.reproduced_mean == pytest.approx(91.0) and full.n_seeds == 2
    # paper cells this config does not run stay in the file, empty
    not_run = cell("MT", 10, "dsc")
    assert not_run.n_seeds == 0 and pd.isna(not_run.delta) and pd.isna(not_run.paper_within_seeds)
    assert len(cells[(cells.dataset == "lits") & (cells.method == "MONA")]) == 6
    assert set(csv[csv.dataset == "acdc"].data) == {"synthetic"}
    assert set(csv.units) == {"mm"} and set(csv["empty"]) == {"strict"}
    page = (tmp_path / "cmp.html").read_text()
    assert "58.3" in page and "60.00" in page


def test_seed_scores_one_row_per_seed_and_ratio(runs, tmp_path):
    _, paths = runs
    write_seed_scores(small_config(), paths, tmp_path / "s.csv")
    seeds = pd.read_csv(tmp_path / "s.csv")
    # mt: 3 seeds at 5 %, 1 at 1 %; unet_l: 2 at 5 %; unet_f: 2 seeds repeated at 1 and 5 %
    assert len(seeds) == 3 + 1 + 2 + 2 * 2
    assert sorted(seeds[seeds.method_id == "mt"].dsc.round(6)) == [30.0, 50.0, 60.0, 70.0]
    assert seeds[seeds.method_id == "unet_f"].all_labels.all()


def test_result_plots_are_drawn_at_their_size(runs, tmp_path, assert_drawn):
    _, paths = runs
    config = small_config()
    config["figures"] = {"dpi": 60}
    write_seed_scores(config, paths, tmp_path / "s.csv")
    out = {name: tmp_path / name for name in ("d.png", "d.pdf", "p.png", "p.pdf")}
    write_result_plots(
        config, tmp_path / "s.csv", out["d.png"], out["d.pdf"], out["p.png"], out["p.pdf"]
    )
    dice = assert_drawn(out["d.png"])
    scatter = assert_drawn(out["p.png"])
    # one dataset panel plus the legend: (4.6 + 1.9) x 4.3 in, (4.2 + 1.8) x 4.5 in at 60 dpi
    assert dice.shape[:2] == (round(4.3 * 60), round(6.5 * 60))
    assert scatter.shape[:2] == (round(4.5 * 60), round(6.0 * 60))
    for pdf in (out["d.pdf"], out["p.pdf"]):
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_result_plots_without_any_run_still_draw_axes(tmp_path, assert_drawn):
    config = small_config()
    config["figures"] = {"dpi": 50}
    write_seed_scores(config, [], tmp_path / "s.csv")
    write_comparison(config, tmp_path / "s.csv", tmp_path / "c.csv", tmp_path / "c.html")
    assert pd.read_csv(tmp_path / "c.csv").n_seeds.eq(0).all()
    out = [tmp_path / n for n in ("d.png", "d.pdf", "p.png", "p.pdf")]
    write_result_plots(config, tmp_path / "s.csv", *out)
    assert_drawn(out[0], min_colors=3)
    assert_drawn(out[2], min_colors=3)


def test_qualitative_falls_back_to_table_methods_and_matches_evaluation(
    runs, processed_acdc, tmp_path, assert_drawn
):
    from mona.evaluate.run import predict_cases

    root, _ = runs
    config = small_config()
    config["figures"] = {
        "methods": ["cps", "mona"],
        "dpi": 60,
        "qualitative": {
            "fig3_acdc": {"dataset": "acdc", "ratio": 5, "seed": 1, "cases": [{}, {}]},
            "fig6_mmwhs": {"dataset": "mmwhs", "ratio": 5},  # no table runs MM-WHS here
            "partial": {"dataset": "acdc", "methods": ["mt", "cps"]},
        },
    }
    assert figure_config_problems(config) == []
    plans = qualitative_plans(config)
    assert set(plans) == {"fig3_acdc", "partial"}
    plan = plans["fig3_acdc"]
    assert plan.methods == ("unet_f", "unet_l", "mt") and plan.fallback
    assert plan.missing == ("cps", "mona")
    partial = plans["partial"]
    assert partial.methods == ("mt",) and partial.missing == ("cps",) and not partial.fallback
    assert (partial.ratio, partial.seed) == (1, 0)  # the config's first ratio and seed

    run_dirs = [root / "runs" / "acdc" / m / ("rall" if m == "unet_f" else "r5") / "s1"
                for m in plan.methods]  # fmt: skip
    models = [d / "train" / "model.pt" for d in run_dirs]
    png, pdf = tmp_path / "fig3.png", tmp_path / "fig3.pdf"
    rows = write_qualitative(
        config, plan, processed_acdc, root / "split.json", models,
        [d / "metrics.json" for d in run_dirs], png, pdf,
    )  # fmt: skip
    assert len(rows) == 2 and rows[0].case_id != rows[1].case_id
    split = read_json(root / "split.json")
    manifest = read_json(processed_acdc / "manifest.json")
    cases = {c["case_id"]: c for c in manifest["cases"]}
    for row in rows:
        case = cases[row.case_id]
        assert case["patient_id"] in split["test"]
        truth = np.load(processed_acdc / case["gt"])
        assert np.array_equal(row.truth, truth[row.slice_index])
        assert row.slice_index == best_slice(truth, manifest["num_classes"])
        # the drawn prediction is the one evaluation scores, slice for slice
        full = next(predict_cases(models[2], processed_acdc, [case], torch.device("cpu")))
        assert np.array_equal(row.predictions[2], full[row.slice_index])
        assert row.dice == [pytest.approx(92.0), pytest.approx(44.0), pytest.approx(60.0)]
    image = assert_drawn(png, min_colors=30)
    # 2 + 3 columns of 2.1 in plus 0.4; two rows as tall as their views, title, two notes
    aspects = [(b - t) / (r - left) for left, r, b, t in (view_mm(row, True) for row in rows)]
    rows_in = sum(2.1 * min(2.0, max(0.45, a)) for a in aspects) + 0.08
    assert image.shape[:2] == (round((rows_in + 0.7 + 0.55 + 0.44) * 60), round(10.9 * 60))
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_best_slice_prefers_every_class_then_the_largest_rarest_one():
    truth = np.zeros((4, 6, 6), dtype=np.uint8)
    truth[0, :4, :4] = 1  # one class, large
    truth[1, :3, :3] = 1
    truth[1, 5, 5] = 2  # both classes, class 2 one voxel
    truth[2, :2, :2] = 1
    truth[2, 4:, 4:] = 2  # both classes, class 2 four voxels: the pick
    truth[3, :, :3] = 1
    truth[3, 0, 5] = 2
    assert best_slice(truth, 3) == 2


def test_crop_box_covers_every_mask_with_margin():
    truth = np.zeros((40, 40), dtype=np.uint8)
    truth[10:20, 10:20] = 1
    prediction = np.zeros_like(truth)
    prediction[30, 35] = 2  # a far false positive must stay in view
    r0, r1, c0, c1 = crop_box([truth, prediction], margin=0.1)
    # rows 10..30 and cols 10..35, each padded by max(2, int(0.1 * extent)) = 2
    assert (r0, r1, c0, c1) == (8, 33, 8, 38)
    assert crop_box([np.zeros((5, 5))]) is None


def test_figure_config_errors_name_the_setting():
    config = small_config()
    config["figures"] = {
        "qualitative": {
            "fig9": {"dataset": "brats"},
            "dice_vs_ratio": {"dataset": "acdc"},
            "odd": {"dataset": "acdc", "ratio": 7, "seed": 9},
        }
    }
    problems = figure_config_problems(config)
    assert any("fig9.dataset" in p and "brats" in p for p in problems)
    assert any("dice_vs_ratio" in p and "result plot" in p for p in problems)
    assert any("odd.ratio" in p for p in problems) and any("odd.seed" in p for p in problems)
    assert len(problems) == 4


def test_config_figures_sections_pass_the_schema_and_bad_keys_fail():
    for name in ("config.yaml", "paper.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        validate_schema(config)
        assert figure_config_problems(config) == []
        assert set(config["figures"]["qualitative"]) == {"fig3_acdc", "fig4_lits", "fig6_mmwhs"}
    config["figures"]["qualitative"]["fig3_acdc"]["slices"] = 3
    with pytest.raises(DataError, match="fig3_acdc"):
        validate_schema(config)


def test_provenance_and_runtimes_from_benchmark_files(runs, tmp_path):
    _, paths = runs
    config = small_config()
    runs_frame, jobs = run_records(config, paths)
    assert len(runs_frame) == 8
    # UNet-F: train + evaluate per seed (2 seeds); mt r1, mt r5, unet_l r5: one pair each
    assert len(jobs) == 2 * 2 + 3 * 2
    mt5 = runs_frame[(runs_frame.method == "mt") & (runs_frame.ratio == "5")]
    assert sorted(mt5.train_s) == [3.0, 4.0, 5.0]  # the engine's seconds, 3 + seed
    assert mt5.protocol_as_config.all()
    summary = runtime_summary(jobs).set_index(["rule", "method"])
    # one all-seeds job per ratio; the file written last (seed 2 of r5, seed 0 of r1) counts
    assert summary.loc[("train", "mt"), "total_s"].item() == pytest.approx(12.0 + 10.0)
    assert summary.loc[("train", "unet_f"), "total_s"].item() == pytest.approx(10.0 + 11.0)
    assert summary.loc[("evaluate", "unet_l"), "jobs"].item() == 1
    assert set(jobs[jobs.method == "mt"].seeds) == {"all"}
    assert set(jobs[jobs.method == "unet_f"].seeds) == {"0", "1"}
    out = [tmp_path / n for n in ("runs.csv", "runs.html", "times.html", "protocol.html")]
    write_provenance(config, paths, *out)
    assert len(pd.read_csv(out[0])) == 8
    assert "abc123" in out[1].read_text() and "22.0" in out[2].read_text()
    assert "symmetric" in out[3].read_text()


def test_table_page_renders_values_and_deltas(tmp_path):
    frame = pd.DataFrame(
        {
            "dataset": ["acdc"], "ratio_pct": [5], "method": ["MT"], "method_id": ["mt"],
            "dsc_mean": [60.0], "dsc_std": [10.0], "asd_mean": [6.0], "asd_std": [2.0],
            "n_seeds": [3], "asd_excluded": [1], "paper_dsc": [58.3], "paper_asd": [11.2],
            "data": ["synthetic"], "split": ["paper"], "labeled": ["patients"],
            "checkpoint": ["last"], "asd": ["symmetric"], "units": ["mm"], "empty": ["strict"],
            "schedule": ["poly"], "iterations": [200],
        }
    )  # fmt: skip
    frame.to_csv(tmp_path / "t.csv", index=False)
    write_table_page("table1", tmp_path / "t.csv", tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    assert "60.0 ± 10.0" in page and "+1.7" in page and "6.00 ± 2.00" in page
    assert "Data: synthetic" in page and "empty=strict" in page
