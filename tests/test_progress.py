"""The progress display reads Snakemake's log and the engine's step lines; checked by hand."""

from __future__ import annotations

import sys

import pytest

from mona.progress import Progress, last_step, main, status_lines

LOG = """Provided cores: 2
Job stats:
job          count
---------  -------
train            3
evaluate         1
total            4

rule train:
    input: a
    output: runs/acdc/mt/r5/s0/train/model.pt
    log: runs/acdc/mt/r5/train.train.log
    jobid: 7
    wildcards: dataset=acdc, method=mt, ratio=5, stage=train
"""


def test_status_counts_jobs_and_estimates_the_time_left_from_finished_ones(tmp_path):
    progress = Progress()
    for line in LOG.splitlines():
        progress.feed(line, now=100.0)
    assert progress.planned == {"train": 3, "evaluate": 1} and progress.cores == 2
    assert list(progress.running) == ["7"] and progress.seconds_left() is None
    progress.feed("Finished jobid: 7 (Rule: train)", now=160.0)
    # train: 60 s measured, 2 still to run; evaluate: none measured, 1 at the overall 60 s
    assert progress.done == 1 and progress.seconds_left() == pytest.approx((2 * 60 + 60) / 2)
    for line in LOG.replace("jobid: 7", "jobid: 8").splitlines()[8:]:
        progress.feed(line, now=160.0)
    log = tmp_path / "runs/acdc/mt/r5/train.train.log"
    log.parent.mkdir(parents=True)
    run = "runs/acdc/mt/r5/s1/train"
    log.write_text(f"{run} step 50/150 lr 0.04 loss 0.3 seconds 2.5\n"
                   f"{run} step 100/150 lr 0.03 loss 0.2 seconds 5.0\n")  # fmt: skip
    assert last_step(log) == ("runs/acdc/mt/r5/s1/train", 100, 150, 20.0)
    lines = status_lines(progress, elapsed=60.0, workdir=tmp_path)
    assert "1/4 jobs done, 1 running, 0 failed" in lines[0] and "about 1.5 min left" in lines[0]
    assert lines[1] == ("  train acdc, mt, ratio=5, stage=train: s1/train step 100/150, "
                        "20.0 it/s, 2 s left in this run")  # fmt: skip


def test_a_failing_command_returns_its_code_and_shows_the_error_block(tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "fake.py"
    script.write_text("print('Error in rule train:')\nprint('    jobid: 3')\nraise SystemExit(1)\n")
    code = main(["--every", "0.1", "--log-dir", str(tmp_path / "logs"), "--",
                 sys.executable, str(script)])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "snakemake exited with 1" in err and "Error in rule train:" in err
    assert len(list((tmp_path / "logs").glob("*.log"))) == 1


def test_a_resumed_run_s_rate_counts_only_the_steps_it_ran(tmp_path):
    run = "runs/acdc/mt/r5/s0/train"
    log = tmp_path / "train.log"
    log.write_text(f"resuming {run} from step 1200\n"
                   f"{run} step 1250/2400 lr 0.1 loss 0.3 seconds 12.5\n"
                   f"{run} step 1300/2400 lr 0.1 loss 0.3 seconds 25.0\n")  # fmt: skip
    assert last_step(log) == (run, 1300, 2400, 4.0)  # 100 steps in 25 s, not 1300
    # the resume line long before the lines read: the rate between the first and last read
    lines = [f"resuming {run} from step 200", *(
        f"{run} step {s}/2400 lr 0.1 loss 0.3 {'x' * 60} seconds {(s - 200) / 10:.1f}"
        for s in range(250, 2400, 50)
    )]  # fmt: skip
    log.write_text("\n".join(lines) + "\n")
    assert last_step(log)[3] == pytest.approx(10.0)
    # a later seed's run in the same job counts from its own start
    seed1 = "runs/acdc/mt/r5/s1/train"
    log.write_text(f"{run} step 2400/2400 lr 0 loss 0.3 seconds 300.0\n"
                   f"{seed1} step 50/2400 lr 0.1 loss 0.3 seconds 10.0\n")  # fmt: skip
    assert last_step(log) == (seed1, 50, 2400, 5.0)
