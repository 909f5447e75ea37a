"""Run Snakemake with its full output in a log and a short status on the terminal.

    python -m mona.progress [--every 30] -- snakemake --cores all results/table1.csv

Every `--every` seconds: jobs done / running / failed, the time so far and an estimate of the
time left (each rule's measured mean job time x its jobs still to run, over the cores), and for
each running job its run, step, iterations per second and the time left in it, read from the
step lines the engine writes to the job's log. Snakemake's own output goes whole to
`logs/snakemake/<start>.log`; failures are repeated on the terminal at the end.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_RULE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_FIELD = re.compile(r"^\s+(jobid|log|wildcards): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
_ERROR = re.compile(r"^Error in rule (\w+):")
_STATS_ROW = re.compile(r"^(\w+)\s+(\d+)$")
_CORES = re.compile(r"^Provided cores: (\d+)")
_STEP = re.compile(r"^(\S+) step (\d+)/(\d+) .*?seconds ([0-9.]+)")


@dataclass
class JobState:
    rule: str
    jobid: str = ""
    log: str = ""
    wildcards: str = ""
    started: float = 0.0


@dataclass
class Progress:
    """What a Snakemake log says so far; `feed` it lines as they come."""

    planned: dict[str, int] = field(default_factory=dict)
    running: dict[str, JobState] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    cores: int = 1
    _block: JobState | None = None
    _in_stats: bool = False
    _stats_done: bool = False

    def feed(self, line: str, now: float) -> None:
        line = line.rstrip("\n")
        if match := _CORES.match(line):
            self.cores = int(match.group(1))
        if line.startswith("Job stats:") and not self._stats_done:
            self._in_stats = True
            return
        if self._in_stats:
            if match := _STATS_ROW.match(line):
                if match.group(1) != "total":
                    self.planned[match.group(1)] = int(match.group(2))
                else:
                    self._in_stats, self._stats_done = False, True
            return
        if match := _RULE.match(line):
            self._block = JobState(match.group(1), started=now)
            return
        if self._block is not None and (match := _FIELD.match(line)):
            key, value = match.groups()
            if key == "log":
                value = value.split(" (")[0].split(", ")[0]
            setattr(self._block, key, value)
            if key == "jobid":
                self.running[value] = self._block
            return
        if match := _FINISHED.match(line):
            job = self.running.pop(match.group(1), None)
            if job is not None:
                self.durations.setdefault(job.rule, []).append(now - job.started)
            return
        if match := _ERROR.match(line):
            self.failed.append(match.group(1))

    @property
    def done(self) -> int:
        return sum(len(v) for v in self.durations.values())

    def seconds_left(self) -> float | None:
        """Each rule's mean finished-job time x its jobs not yet finished, over the cores;
        None before any job has finished."""
        finished = [d for values in self.durations.values() for d in values]
        if not finished:
            return None
        overall = sum(finished) / len(finished)
        left = 0.0
        for rule, count in self.planned.items():
            times = self.durations.get(rule, [])
            mean = sum(times) / len(times) if times else overall
            left += max(count - len(times), 0) * mean
        return left / max(self.cores, 1)


def last_step(log: Path) -> tuple[str, int, int, float] | None:
    """(run, step, iterations, steps per second) of the last step line in a job's log.

    The engine's `seconds` count from this process's start, and a resumed run starts at its
    checkpoint's step ("resuming RUN from step N"), so the rate counts only the steps this
    process ran: from that line, or, when it lies before the lines read, between the first
    and the last step line read of this run.
    """
    try:
        with log.open("rb") as handle:
            handle.seek(0, 2)
            offset = max(handle.tell() - 8192, 0)
            handle.seek(offset)
            tail = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    steps = [(i, m.groups()) for i, line in enumerate(tail) if (m := _STEP.match(line))]
    if not steps:
        return None
    index, (run, step, total, seconds) = steps[-1]
    step, seconds = int(step), float(seconds)
    start, start_seconds = 0, 0.0
    earliest = None  # this process's first step line of this run among those read
    for line in reversed(tail[:index]):
        if line.startswith(f"resuming {run} from step "):
            start = int(line.rsplit(" ", 1)[-1])
            break
        match = _STEP.match(line)
        if match is None:
            continue
        if match.group(1) != run or float(match.group(4)) >= seconds:
            break  # another run, or an earlier process: this one started at step 0
        earliest = int(match.group(2)), float(match.group(4))
    else:
        if offset and earliest is not None:  # the resume line, if any, lies before the tail
            start, start_seconds = earliest
    elapsed = seconds - start_seconds
    return run, step, int(total), (step - start) / elapsed if elapsed > 0 else 0.0


def minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def status_lines(progress: Progress, elapsed: float, workdir: Path) -> list[str]:
    total = sum(progress.planned.values())
    left = progress.seconds_left()
    eta = f"about {minutes(left)} left" if left is not None else "no estimate yet"
    lines = [
        f"[{time.strftime('%H:%M:%S')}] {progress.done}/{total or '?'} jobs done, "
        f"{len(progress.running)} running, {len(progress.failed)} failed; "
        f"{minutes(elapsed)} so far, {eta}"
    ]
    for job in progress.running.values():
        where = job.wildcards.replace("dataset=", "").replace("method=", "")
        text = f"  {job.rule} {where}"
        step = last_step(workdir / job.log) if job.log else None
        if step is not None:
            run, done, iterations, rate = step
            remaining = (iterations - done) / rate if rate else float("nan")
            text += (f": {Path(run).parent.name}/{Path(run).name} step {done}/{iterations}, "
                     f"{rate:.1f} it/s, {remaining:.0f} s left in this run")  # fmt: skip
        lines.append(text)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=30.0, help="seconds between statuses")
    parser.add_argument("--log-dir", type=Path, default=Path("logs/snakemake"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the snakemake command after --")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.log_dir / f"{time.strftime('%Y-%m-%dT%H%M%S')}.log"
    print(f"{' '.join(command)}\n(Snakemake's full output: {log_path})", flush=True)
    started = time.monotonic()
    progress = Progress()
    with log_path.open("w") as log, log_path.open() as reader:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        signal.signal(signal.SIGINT, lambda *_: process.send_signal(signal.SIGINT))
        signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
        last_print = started
        while True:
            finished = process.poll() is not None
            for line in reader:
                progress.feed(line, time.monotonic())
            now = time.monotonic()
            if finished:
                break
            if now - last_print >= args.every:
                print("\n".join(status_lines(progress, now - started, Path.cwd())), flush=True)
                last_print = now
            time.sleep(0.5)
    print("\n".join(status_lines(progress, time.monotonic() - started, Path.cwd())[:1]))
    if process.returncode != 0:
        print(f"snakemake exited with {process.returncode}; what went wrong:", file=sys.stderr)
        print(failure_report(log_path), file=sys.stderr)
    return process.returncode


def failure_report(log_path: Path, limit: int = 40) -> str:
    """Snakemake's error blocks (or its last lines) from the log, for the terminal."""
    lines = log_path.read_text(errors="replace").splitlines()
    picked: list[str] = []
    for index, line in enumerate(lines):
        if _ERROR.match(line) or line.startswith(("WorkflowError", "error:", "MissingInput")):
            picked += lines[index : index + 12]
    return "\n".join((picked or lines[-limit:])[: limit * 3]) + f"\n(full log: {log_path})"


if __name__ == "__main__":
    sys.exit(main())
