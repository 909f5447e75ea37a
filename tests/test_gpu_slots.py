"""GPU slots: each job sees only the device of the slot it holds (fake devices, no GPU)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from mona import gpu_slots


@pytest.fixture(autouse=True)
def _release():
    yield
    gpu_slots.release()


def hold_in_another_process(lock_dir, devices, per_device, count=1):
    """A process that takes `count` slots and keeps them until killed (a running job)."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mona import gpu_slots
        print(gpu_slots.try_acquire(Path({str(lock_dir)!r}), {devices!r}, {per_device}, {count}),
              flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def test_two_devices_two_slots_fill_first_slots_first_then_wait(tmp_path):
    devices = ["0", "1"]
    first, got_first = hold_in_another_process(tmp_path, devices, 2)
    second, got_second = hold_in_another_process(tmp_path, devices, 2)
    try:
        assert (got_first, got_second) == ("['0']", "['1']")  # one job per GPU before sharing
        assert gpu_slots.try_acquire(tmp_path, devices, 2) == ["0"]  # device 0's second slot
        assert gpu_slots.try_acquire(tmp_path, devices, 2) == ["1"]
        assert gpu_slots.try_acquire(tmp_path, devices, 2) == []  # all four held
        first.kill()
        first.wait()
        assert gpu_slots.try_acquire(tmp_path, devices, 2) == ["0"]  # freed with its process
    finally:
        for process in (first, second):
            process.kill()
            process.wait()


def test_claim_sets_the_visible_device_and_hides_gpus_from_cpu_jobs(tmp_path):
    environ = {"MONA_GPU_DEVICES": "3,5", "MONA_GPU_SLOTS": "1"}
    other, got = hold_in_another_process(tmp_path, ["3", "5"], 1)
    try:
        assert got == "['3']"
        assert gpu_slots.claim(1, tmp_path, environ) == "5"
        assert environ["CUDA_VISIBLE_DEVICES"] == "5"
    finally:
        other.kill()
        other.wait()
    cpu_job = {"MONA_GPU_DEVICES": "0"}
    assert gpu_slots.claim(0, tmp_path, cpu_job) == "" and cpu_job["CUDA_VISIBLE_DEVICES"] == ""
    unnamed = {}  # no device list: the job's view is left as the machine gives it
    assert gpu_slots.claim(1, tmp_path, unnamed) is None and unnamed == {}
    slurm = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "2"}
    assert gpu_slots.claim(1, tmp_path, slurm) is None and slurm["CUDA_VISIBLE_DEVICES"] == "2"


def test_a_job_waits_for_a_slot_instead_of_sharing_it(tmp_path):
    other, _ = hold_in_another_process(tmp_path, ["0"], 1)
    started = time.monotonic()
    waiter = subprocess.Popen(
        [sys.executable, "-c",
         f"from pathlib import Path; from mona import gpu_slots; "
         f"print(gpu_slots.acquire(Path({str(tmp_path)!r}), ['0'], 1, poll_s=0.1))"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting while the slot is held
    other.kill()
    other.wait()
    out, err = waiter.communicate(timeout=30)
    assert out.strip() == "['0']" and "waiting for a free GPU slot" in err
    assert time.monotonic() - started >= 1.0
    with pytest.raises(ValueError, match="asks for 2 GPU slots"):
        gpu_slots.acquire(tmp_path, ["0"], 1, count=2)
