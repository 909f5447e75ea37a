"""Training steps per second of one method through the real engine on the current device.

Generates a small synthetic dataset at the requested image size, then times the engine's loop
(batch gather, weak augmentation, forward, backward, optimizer step) after a warm-up. Prints one
line per measurement; no target, it is the yardstick for speed work.

    python benchmarks/train_step.py --method mt --backbone unet --image-size 256 --batch 12

`--memory` also prints what the steps held above what the process held before training: on
CUDA the peak of allocated tensor memory, on the CPU the peak resident set size (an upper bound,
the allocator keeps freed blocks). MONA's stage 2 at the paper's setting:

    python benchmarks/train_step.py --method mona --stage finetune --batch 6 --memory
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

import psutil
import torch

from mona.data.preprocess import preprocess
from mona.data.splits import labeled_subset, make_split
from mona.data.synthetic import generate
from mona.engine import RunSpec, TrainConfig, Trainer, pick_device
from mona.io import read_json
from mona.registry import get_method


def measure(args: argparse.Namespace, processed: Path, run_dir: Path) -> tuple[float, int]:
    """Steps per second after the warm-up, and bytes the run held above its start."""
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    ratio = "all" if get_method(args.method).labeled_pool == "all" else "10"
    spec = RunSpec(
        dataset=args.dataset,
        method=args.method,
        ratio=ratio,
        seed=0,
        stage=args.stage,
        processed_dir=processed,
        run_dir=run_dir,
        split=split,
        labeled=labeled_subset(split, manifest, ratio, 0),
    )
    config = TrainConfig(
        iterations=args.warmup + args.steps,
        stage_iterations={args.stage: args.warmup + args.steps},
        batch_labeled=args.batch // 2,
        batch_unlabeled=args.batch - args.batch // 2,
        image_size=args.image_size,
        backbone=args.backbone,
        widths=args.widths,
        log_every=args.warmup,
        checkpoint_every=10**9,
        bf16=args.bf16,
        channels_last=args.channels_last,
    )
    trainer = Trainer(spec, config)
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = psutil.Process().memory_info().rss
    trainer.run()
    if device.type == "cuda":
        held = torch.cuda.max_memory_allocated(device) - before
    else:
        held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    seconds = {entry["step"]: entry["seconds"] for entry in log if "seconds" in entry}
    rate = args.steps / (seconds[args.warmup + args.steps] - seconds[args.warmup])
    return rate, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="unet_l")
    parser.add_argument("--backbone", default="unet")
    parser.add_argument("--widths", type=int, nargs=5, default=[16, 32, 64, 128, 256])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=12, help="labeled + unlabeled images")
    parser.add_argument("--stage", default="train", help="stage of a multi-stage method")
    parser.add_argument("--dataset", default="acdc", choices=["acdc", "lits", "mmwhs"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also print peak memory")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(args.dataset, root / "raw", patients=20, slices=(6, 10), size=64, seed=0)
        preprocess(args.dataset, root / "raw", root / "processed", image_size=args.image_size)
        rate, held = measure(args, root / "processed", root / "run")
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"method={args.method} stage={args.stage} backbone={args.backbone} widths={args.widths} "
        f"image={args.image_size} batch={args.batch} bf16={args.bf16} "
        f"channels_last={args.channels_last} device={name} threads={torch.get_num_threads()}: "
        f"{rate:.2f} it/s ({1000 / rate:.1f} ms/step)"
        + (f", peak {held / 2**30:.2f} GiB above the start" if args.memory else "")
    )


if __name__ == "__main__":
    main()
