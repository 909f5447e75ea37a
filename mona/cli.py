"""Command line for single steps outside Snakemake: `python -m mona.cli train ...`.

Useful to debug or resume one run by hand; Snakemake calls the same functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from mona.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mona.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train (or resume) one run")
    train.add_argument("--config", type=Path, required=True)
    train.add_argument("--dataset", required=True)
    train.add_argument("--method", required=True)
    train.add_argument("--ratio", required=True)
    train.add_argument("--seed", type=int, required=True)
    train.add_argument("--stage", default="train")
    train.add_argument("--manifest", type=Path, required=True)
    train.add_argument("--split", type=Path, required=True)
    train.add_argument("--run-dir", type=Path, required=True)
    train.add_argument("--previous-stage", type=Path)
    train.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from mona.config import check_config, validate_schema
    from mona.workflow import train_run

    torch.set_num_threads(args.threads)
    try:
        config = yaml.safe_load(args.config.read_text())
        validate_schema(config)
        check_config(config)
        train_run(
            config,
            dataset=args.dataset,
            method=args.method,
            ratio=args.ratio,
            seed=args.seed,
            stage=args.stage,
            manifest_path=args.manifest,
            split_path=args.split,
            run_dir=args.run_dir,
            previous_stage=args.previous_stage,
        )
    except DataError as error:
        print("error: problems in the input data or config:", file=sys.stderr)
        for message in error.messages:
            print(f"  - {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
