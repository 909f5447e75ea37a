"""Starting the DAG again after Snakemake itself was killed finishes what it was running.

A killed Snakemake leaves the outputs its running jobs had written (a training job writes
each seed's model.pt in turn) marked incomplete, and its lock. With
the workflow's profile, `snakemake --unlock` and a second start rerun those jobs instead of
stopping with "IncompleteFilesException" and asking for a flag.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SNAKEFILE = """
rule slow:
    output: "a.txt", "b.txt"
    shell: "echo done > {output[0]}; touch started; sleep 30; echo done > {output[1]}"
"""


def _snakemake(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "--cores", "1", "--quiet",
        "--workflow-profile", str(tmp_path / "profile"), *args,
    ]  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="kills a process group")
def test_a_killed_snakemake_resumes_with_the_profile(tmp_path: Path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    shutil.copytree(REPO / "profiles" / "default", tmp_path / "profile")
    process = subprocess.Popen(
        _snakemake(tmp_path), cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (tmp_path / "a.txt").exists() and not (tmp_path / "b.txt").exists()

    Path(tmp_path / "Snakefile").write_text(SNAKEFILE.replace("sleep 30", "sleep 0"))
    unlock = subprocess.run(_snakemake(tmp_path, "--unlock"), cwd=tmp_path, capture_output=True)
    assert unlock.returncode == 0, unlock.stderr.decode()[-2000:]
    again = subprocess.run(_snakemake(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "b.txt").read_text() == "done\n"
