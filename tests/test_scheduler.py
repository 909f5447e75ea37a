"""The installed Snakemake runs no more jobs at once than `--cores` allows.

Snakemake 9.10 to 9.16 handed a job's cores back on finishing even when its selection had not
taken them (a lone ready job), so every such job raised the count of jobs run at once: the
embedded default's DAG ran five one-thread training jobs on two cores, and GPU slots
(`resources: gpu`) overfilled the same way. `constraints.txt` pins a release without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A lone first job (as synthesize -> preprocess -> split), then four that could run together.
SNAKEFILE = """
rule all:
    input: expand("done{i}.txt", i=range(4))

rule first:
    output: "first.txt"
    threads: 1
    shell: "touch {output}"

rule second:
    input: "first.txt"
    output: "second.txt"
    threads: 1
    shell: "touch {output}"

rule work:
    input: "second.txt"
    output: "done{i}.txt"
    threads: 1
    resources: gpu=1
    shell: "python3 -c 'import time; print(time.time())' > {output}; sleep 1.5; "
           "python3 -c 'import time; print(time.time())' >> {output}"
"""


@pytest.mark.skipif(sys.platform == "win32", reason="runs snakemake with a shell")
def test_jobs_at_once_never_exceed_the_cores(tmp_path: Path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    spans = sorted(
        tuple(float(x) for x in (tmp_path / f"done{i}.txt").read_text().split())
        for i in range(4)
    )
    overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, f"jobs ran at once on one core: {overlaps}"
