"""Which GPU a job may use: each job sees only the device of the slot it holds.

Snakemake's local executor counts `gpu` resources but assigns no devices, so two jobs would
both land on `cuda:0`. A job that asks for `gpu=1` takes one free slot, a lock file per
(device, k) for k < slots per device, held (flock) for the life of its process, and sets
CUDA_VISIBLE_DEVICES to that device before anything initialises CUDA. A job that asks for no
GPU gets CUDA_VISIBLE_DEVICES="" and runs on the CPU. Under SLURM the scheduler has already
set the job's devices, and nothing here changes them.

Devices come from MONA_GPU_DEVICES (comma-separated ids), else CUDA_VISIBLE_DEVICES; where
neither names any, jobs see whatever the machine shows them, as without this module. Slots per
device come from MONA_GPU_SLOTS (default 1). Give Snakemake `--resources gpu=<devices x slots>`
so that it never starts more GPU jobs than there are slots. The slot logic is tested on the CPU
with named fake devices; it has not yet been run on a GPU machine.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO

_held: list[IO] = []  # open lock files: a slot is free again when its process ends


def visible_devices(environ: dict[str, str] | None = None) -> list[str]:
    """The devices named by MONA_GPU_DEVICES, else CUDA_VISIBLE_DEVICES; [] if neither is set
    (then nothing here changes what a job sees)."""
    environ = os.environ if environ is None else environ
    for name in ("MONA_GPU_DEVICES", "CUDA_VISIBLE_DEVICES"):
        value = environ.get(name)
        if value is not None and value.strip():
            return [d.strip() for d in value.split(",") if d.strip()]
    return []


def try_acquire(lock_dir: Path, devices: list[str], per_device: int, count: int = 1) -> list[str]:
    """Hold `count` free slots, filling the devices' first slots before any second one, and
    return the devices they belong to (a device once even if two of its slots are held); []
    and nothing held if fewer than `count` are free."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    taken: list[str] = []
    handles: list[IO] = []
    for k in range(per_device):
        for device in devices:
            if len(taken) == count:
                break
            handle = (lock_dir / f"gpu{device}-slot{k}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handles.append(handle)
            taken.append(device)
    if len(taken) < count:
        for handle in handles:
            handle.close()
        return []
    _held.extend(handles)
    return list(dict.fromkeys(taken))


def acquire(
    lock_dir: Path, devices: list[str], per_device: int, count: int = 1, poll_s: float = 5.0
) -> list[str]:
    """`try_acquire`, waiting while other jobs hold every slot (Snakemake was not told how
    many there are, or another workflow shares the GPUs)."""
    if count > len(devices) * per_device:
        raise ValueError(f"a job asks for {count} GPU slots; {len(devices)} device(s) x "
                         f"{per_device} slot(s) exist")  # fmt: skip
    said = False
    while not (taken := try_acquire(lock_dir, devices, per_device, count)):
        if not said:
            print(f"waiting for a free GPU slot in {lock_dir} ({len(devices)} device(s) x "
                  f"{per_device}; set --resources gpu=<devices x MONA_GPU_SLOTS>)",
                  file=sys.stderr, flush=True)  # fmt: skip
            said = True
        time.sleep(poll_s)
    return taken


def release() -> None:
    while _held:
        _held.pop().close()


def claim(gpus: int, lock_dir: Path, environ: dict[str, str] | None = None) -> str | None:
    """Set CUDA_VISIBLE_DEVICES for a job that asked for `gpus` GPU slots; the value set, or
    None where the environment already decides (SLURM, or no GPU on this machine)."""
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" in environ:
        return None
    if gpus <= 0:
        environ["CUDA_VISIBLE_DEVICES"] = ""
        return ""
    devices = visible_devices(environ)
    if not devices:
        return None
    per_device = int(environ.get("MONA_GPU_SLOTS", "1"))
    chosen = ",".join(acquire(lock_dir, devices, per_device, gpus))
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen
