"""What produced a result: code version, device and library versions."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from pathlib import Path


@cache
def code_version() -> str:
    """`git describe`-like commit id of the harness, with `-dirty` for uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@cache
def cpu_model() -> str:
    """The processor's marketing name (/proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device) -> str:
    """The device and, on CPU, the vector ISA torch's kernels were dispatched for.

    Two CPUs that run different kernels (AVX2 against AVX-512) add in different orders, so
    their runs differ in the last bits, which training amplifies: the ISA says which runs can be
    compared digit for digit (README, "What is and is not bit-reproducible").
    """
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_model()} ({torch.backends.cpu.get_cpu_capability()})"


# the packages whose versions can change a number (or how it was scheduled)
RECORDED_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "snakemake",
    "segmentation-models-pytorch",
    "snakemake-executor-plugin-slurm",
    "medpy",
)


@cache
def package_versions() -> dict[str, str | None]:
    """Installed version of each recorded package (None where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def environment(device) -> dict:
    import torch

    return {
        "code_version": code_version(),
        "device": device_description(device),
        "torch": torch.__version__,
        "packages": package_versions(),
        "python": platform.python_version(),
        # intra-op threads change the order of parallel sums, hence the last bits of a run
        "threads": torch.get_num_threads(),
    }
