"""The cost model counts Snakemake's own plan and multiplies it by rates, checked by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mona.cost import grid_cost, parse_dry_run, plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dag import tiny_config  # noqa: E402

DRY_RUN = """
Building DAG of jobs...
rule train:
    input: data/processed/acdc/manifest.json
    output: runs/acdc/mona~k=3+lambda1=0.01/r5/s0/finetune/model.pt
    jobid: 4
    wildcards: dataset=acdc, method=mona~k=3+lambda1=0.01, ratio=5, stage=finetune
    resources: tmpdir=<TBD>, gpu=1

localrule table:
    input: runs/acdc/mt/r5/s0/metrics.json
    jobid: 0
    wildcards: table=table1
"""


def test_dry_run_jobs_keep_variant_names_whole():
    jobs = parse_dry_run(DRY_RUN)
    assert [job.rule for job in jobs] == ["train", "table"]
    assert jobs[0].wildcards == {"dataset": "acdc", "method": "mona~k=3+lambda1=0.01",
                                 "ratio": "5", "stage": "finetune"}  # fmt: skip
    assert jobs[1].wildcards == {"table": "table1"}


@pytest.mark.skipif(sys.platform == "win32", reason="runs snakemake")
def test_cost_of_a_tiny_table_is_its_iterations_times_the_rates():
    config = tiny_config()  # UNet-F and MT, 2 seeds, 3 iterations, ratio 10, plateau at 4x
    jobs = plan(config, ["results/table1.csv"])
    rates = {"train": {"unet_f/train": 1.0, "mt/train": 2.0}, "evaluate": {"acdc": 0.5},
             "job_startup_s": 1.0}  # fmt: skip
    cost = grid_cost(config, jobs, rates)
    # UNet-F: 2 seeds x 3 + the plateau's 1 x 12 iterations; MT: 2 x 3
    assert cost.iterations == {("unet_f", "train"): 18, ("mt", "train"): 6}
    assert cost.train == {("unet_f", "train"): 18.0, ("mt", "train"): 12.0}
    # 2 + 2 seeds scored, and the plateau run: 5 x 0.5 s
    assert cost.evaluate == pytest.approx(2.5)
    # 6 costed jobs: train x 2, evaluate x 2, plateau_train, plateau_evaluate
    assert cost.startup == pytest.approx(6.0)
    assert cost.total == pytest.approx(18 + 12 + 2.5 + 6)
    assert not cost.missing
    partial = grid_cost(config, jobs, {**rates, "train": {"mt/train": 2.0}})
    assert partial.missing == {("unet_f", "train")}
    # the engine validates only to pick the best weights: nothing under `checkpoint: last`
    config["train"]["val_every"] = 1
    rates["validate"] = {"acdc": 0.25}
    assert grid_cost(config, jobs, rates).validate == 0.0
    # under best_val a validation every iteration at 0.25 s: UNet-F 2 x 3 + 12, MT 2 x 3
    config.setdefault("protocol", {})["checkpoint"] = "best_val"
    validated = grid_cost(config, jobs, rates)
    assert validated.validate == pytest.approx(0.25 * (18 + 6))
