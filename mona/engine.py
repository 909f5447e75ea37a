"""The one training loop every method runs through.

It seeds everything, picks the device, builds the method from the registry, draws batches from
the memory-mapped slices, applies the weak augmentation, and does backward, optimizer steps, the
learning-rate schedule, logging, validation, atomic checkpoints and automatic resume. Methods only
compute losses (`mona.method.Method`).

Randomness is re-seeded from (seed, step) at every step, so a run killed and resumed from its last
checkpoint ends with the same weights as an uninterrupted one (on CPU, bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mona.augment import AugmentConfig, Augmenter
from mona.data.slices import EpochSampler, SliceStore
from mona.evaluate.inference import mean_foreground_dice, predict_volume
from mona.io import (
    UnreadableFileError,
    file_digest,
    load_array,
    load_torch,
    read_json,
    remove_orphans,
    save_torch,
    write_json,
)
from mona.method import Batch, Method, MethodContext
from mona.provenance import environment
from mona.registry import get_method

# Ramps end while the lr is at least this fraction of its start (`TrainConfig.ramp_iterations`).
RAMP_LR_FLOOR = 0.1


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or inf; the message names the steps and the losses."""


@dataclass
class TrainConfig:
    """The `train` section of the config (defaults: the official code's schedule)."""

    iterations: int = 30000
    batch_labeled: int = 12
    batch_unlabeled: int = 12
    image_size: int = 256
    backbone: str = "unet"
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    upsample: str = "bilinear"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    schedule: str = "poly"
    poly_power: float = 0.9
    step_every: int = 2500
    step_gamma: float = 0.1
    checkpoint_every: int = 1000
    log_every: int = 50
    val_every: int = 500
    bf16: bool = False
    channels_last: bool = False
    cache: str = "auto"
    device: str = "auto"
    stage_iterations: dict[str, int] = field(default_factory=dict)
    stage_lr: dict[str, float] = field(default_factory=dict)

    def iterations_for(self, stage: str) -> int:
        return int(self.stage_iterations.get(stage, self.iterations))

    def lr_for(self, stage: str, method: str | None = None) -> float:
        """The starting lr of `stage` (of `method`): a contrastive stage 1 may need another lr
        than the supervised fine-tuning that follows it. `stage_lr` keys are stage names
        (`{pretrain: 0.01}`) or, more specific and winning, `method.stage` (`bcp.pretrain`)."""
        for key in (f"{method}.{stage}" if method else None, stage):
            if key in self.stage_lr:
                return float(self.stage_lr[key])
        return float(self.lr)

    def lr_factor(self, step: int, iterations: int) -> float:
        if self.schedule == "poly":
            return (1.0 - step / iterations) ** self.poly_power
        if self.schedule == "step":
            return self.step_gamma ** (step // self.step_every)
        raise ValueError(f"train.schedule must be 'poly' or 'step', not {self.schedule!r}")

    def ramp_iterations(self, iterations: int) -> int:
        """The last step at which the lr is still at least `RAMP_LR_FLOOR` of its start.

        Under `protocol.baselines: shared` every ramp and delayed start is laid out over the
        steps before it, so an unsupervised term reaches full weight while the lr can still
        move the weights (poly 0.9: 92 % of the run; lr / 10 every 2500: step 4999).
        """
        if self.schedule == "poly":
            if self.poly_power <= 0:
                return max(iterations - 1, 1)
            last = math.floor(iterations * (1.0 - RAMP_LR_FLOOR ** (1.0 / self.poly_power)))
        elif self.schedule == "step":
            if self.step_gamma >= 1.0:
                return max(iterations - 1, 1)
            decays = math.floor(math.log(RAMP_LR_FLOOR) / math.log(self.step_gamma) + 1e-9)
            last = (decays + 1) * self.step_every - 1
        else:
            raise ValueError(f"train.schedule must be 'poly' or 'step', not {self.schedule!r}")
        return max(1, min(last, iterations - 1))


@dataclass
class RunSpec:
    """Everything that identifies one training run of one stage."""

    dataset: str
    method: str
    ratio: str
    seed: int
    stage: str
    processed_dir: Path
    run_dir: Path
    split: dict
    labeled: dict
    hparams: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    previous_stage: Path | None = None
    plugins: tuple[str, ...] = ()
    run_method: str = ""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_step(seed: int, step: int, generator: torch.Generator) -> None:
    """Make every random draw of `step` a function of (seed, step) alone.

    Seeds the CPU generator, the CUDA ones when CUDA is in use, and `generator`; not
    `torch.manual_seed`, whose lazy seeding of every other backend costs more than a small
    CPU step.
    """
    value = (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)
    torch.random.default_generator.manual_seed(value)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(value)
    generator.manual_seed(value)


class Trainer:
    """Trains one `RunSpec`; `run()` resumes from `run_dir/checkpoint.pt` when it exists."""

    def __init__(self, spec: RunSpec, config: TrainConfig, augment: AugmentConfig | None = None):
        self.spec, self.config = spec, config
        self.device = pick_device(config.device)
        self.iterations = config.iterations_for(spec.stage)
        self.lr = config.lr_for(spec.stage, spec.method)
        self.manifest = read_json(spec.processed_dir / "manifest.json")
        self._data_fingerprint: str | None = None
        self.generator = torch.Generator(device=self.device)
        self.augmenter = Augmenter(augment or AugmentConfig(), self.generator)
        method_cls = get_method(spec.method, spec.plugins)
        unknown = set(spec.hparams) - set(method_cls.defaults)
        if unknown:
            raise ValueError(
                f"methods.{spec.method}: unknown hyperparameters {sorted(unknown)}; "
                f"known: {sorted(method_cls.defaults)}"
            )
        if method_cls.labeled_pool == "all" and spec.ratio != "all":
            raise ValueError(
                f"{spec.method} labels every training patient, so its run is ratio 'all' "
                f"(runs/<dataset>/{spec.method}/rall), not ratio {spec.ratio!r}"
            )
        torch.manual_seed(spec.seed)
        self.method: Method = method_cls(
            MethodContext(
                num_classes=self.manifest["num_classes"],
                in_channels=1,
                backbone=config.backbone,
                widths=list(config.widths),
                upsample=config.upsample,
                max_iterations=self.iterations,
                ramp_iterations=(
                    self.iterations
                    if spec.protocol.get("baselines", "shared") == "reference"
                    else config.ramp_iterations(self.iterations)
                ),
                augmenter=self.augmenter,
                optimizer=config.optimizer,
                stage=spec.stage,
                hparams=dict(spec.hparams),
            )
        ).to(self.device)
        if config.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        if spec.previous_stage is not None:
            previous = load_torch(spec.previous_stage, map_location=self.device)
            self.method.start_from(previous["method_state"])
        self.optimizers = self.method.configure_optimizers(
            self.lr, config.momentum, config.weight_decay
        )
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.phases = self._phases()
        self._build_data()

    def _phases(self) -> list[tuple[str, list[torch.optim.Optimizer]]]:
        """The method's phases with the optimizers each steps (see `Method.phases`)."""
        phases = []
        for name, indices in type(self.method).phases:
            chosen = range(len(self.optimizers)) if indices is None else indices
            phases.append((name, [self.optimizers[i] for i in chosen]))
        stepped = {id(o) for _, optimizers in phases for o in optimizers}
        if len(stepped) != len(self.optimizers):
            raise ValueError(f"{self.spec.method}: an optimizer belongs to no phase")
        return phases

    # data ---------------------------------------------------------------------------------
    def _build_data(self) -> None:
        spec, config = self.spec, self.config
        train_cases = {
            c["case_id"]: list(range(c["slices"]))
            for c in self.manifest["cases"]
            if c["patient_id"] in set(spec.split["train"])
        }
        labeled = {k: v for k, v in spec.labeled["slices"].items() if v}
        unlabeled = {}
        for case_id, indices in train_cases.items():
            rest = sorted(set(indices) - set(labeled.get(case_id, [])))
            if rest:
                unlabeled[case_id] = rest
        reads_unlabeled = type(self.method).reads_unlabeled(spec.stage)
        batch_total = config.batch_labeled + config.batch_unlabeled
        self.batch_labeled = config.batch_labeled if reads_unlabeled else batch_total
        self.batch_unlabeled = config.batch_unlabeled if reads_unlabeled else 0
        if reads_unlabeled and not unlabeled:
            raise ValueError(f"{spec.method} needs unlabeled slices but every slice is labeled")
        self.labeled = SliceStore(
            spec.processed_dir, self.manifest, labeled, self.device, config.cache
        )
        self.unlabeled = SliceStore(
            spec.processed_dir,
            self.manifest,
            unlabeled if self.batch_unlabeled else {},
            self.device,
            config.cache,
        )
        self.labeled_sampler = EpochSampler(len(self.labeled), self.batch_labeled, spec.seed, 0)
        self.unlabeled_sampler = EpochSampler(
            len(self.unlabeled), self.batch_unlabeled, spec.seed, 1
        )
        self.val_cases = [
            c for c in self.manifest["cases"] if c["patient_id"] in set(spec.split.get("val", []))
        ]

    def make_batch(self, step: int) -> Batch:
        image, mask, position, volume = self.labeled.gather(self.labeled_sampler.rows(step))
        if self.batch_unlabeled:
            u_image, _, u_position, u_volume = self.unlabeled.gather(
                self.unlabeled_sampler.rows(step)
            )
        else:
            size = self.manifest["image_size"]
            u_image = torch.empty(0, 1, size, size, device=self.device)
            u_position = torch.empty(0, device=self.device)
            u_volume = torch.empty(0, dtype=torch.long, device=self.device)
        weak_image, weak_mask = self.augmenter.weak(image, mask)
        weak_u = self.augmenter.weak(u_image)[0] if len(u_image) else u_image
        if self.config.channels_last:
            weak_image = weak_image.contiguous(memory_format=torch.channels_last)
            weak_u = weak_u.contiguous(memory_format=torch.channels_last)
        return Batch(
            labeled_image=weak_image,
            labeled_mask=weak_mask,
            unlabeled_image=weak_u,
            labeled_raw_image=image,
            labeled_raw_mask=mask,
            unlabeled_raw_image=u_image,
            labeled_position=position,
            unlabeled_position=u_position,
            labeled_volume=volume,
            unlabeled_volume=u_volume,
        )

    # checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.spec.run_dir / "checkpoint.pt"

    def data_fingerprint(self) -> str:
        """Digest of the bytes the run trains on: the manifest and its training patients' arrays.

        Recorded with every result, so two runs' numbers are known to come from the same data.
        """
        if self._data_fingerprint is None:
            train = set(self.spec.split["train"])
            arrays = [
                self.spec.processed_dir / case[key]
                for case in self.manifest["cases"]
                if case["patient_id"] in train
                for key in ("image", "label")
            ]
            self._data_fingerprint = file_digest(
                [self.spec.processed_dir / "manifest.json", *arrays]
            )
        return self._data_fingerprint

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed.

        The settings, the labeled set, the code version, the bytes of the data the run reads
        (manifest and the arrays of its training patients) and of the previous stage's
        weights: a changed image, a retrained stage 1 or an edited harness never resume old
        weights.
        """
        spec = self.spec
        identity = {
            "train": asdict(self.config),
            "hparams": spec.hparams,
            "protocol": spec.protocol,
            "labeled": spec.labeled.get("slices"),
            "method": spec.method,
            "stage": spec.stage,
            "seed": spec.seed,
            "code": environment(self.device).get("code_version"),
            "data": self.data_fingerprint(),
            "previous": file_digest([spec.previous_stage]) if spec.previous_stage else None,
        }
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _save_checkpoint(self, step: int, best: dict) -> None:
        self._check_weights(step)
        save_torch(
            {
                "fingerprint": self._fingerprint,
                "step": step,
                "method_state": self.method.state_dict(),
                "optimizers": [o.state_dict() for o in self.optimizers],
                "best": best,
            },
            self.checkpoint_path,
        )

    def _set_aside(self, reason: str) -> None:
        """Move an unusable checkpoint out of the way (kept for inspection), say so."""
        aside = self.checkpoint_path.with_name(f"checkpoint.{reason}.pt")
        os.replace(self.checkpoint_path, aside)
        print(f"{self.checkpoint_path}: {reason}; moved to {aside.name}, starting afresh",
              file=sys.stderr)  # fmt: skip

    def _resume(self) -> tuple[int, dict]:
        """(step, best) of a matching unfinished checkpoint; a fresh start otherwise.

        A finished run's checkpoint is never resumed: a run asked for again (a forced rerun,
        a deleted model.pt) trains again rather than serve the weights it made before.
        """
        fresh = 0, {"score": -math.inf, "step": None}
        if not self.checkpoint_path.exists():
            return fresh
        try:
            state = load_torch(self.checkpoint_path, map_location=self.device)
        except UnreadableFileError:
            self._set_aside("unreadable")
            return fresh
        if state.get("fingerprint") != self._fingerprint:
            self._set_aside("stale")
            return fresh
        if state["step"] >= self.iterations:
            print(f"{self.checkpoint_path}: a finished run; training again from step 0",
                  file=sys.stderr)  # fmt: skip
            return fresh
        self.method.load_state_dict(state["method_state"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        return state["step"], state["best"]

    def _trim_log(self, path: Path, step: int) -> None:
        """Drop the log records a killed run wrote after its last checkpoint (they repeat)."""
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if record.get("step", 0) <= step or "event" in record:
                kept.append(line)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)

    # validation ---------------------------------------------------------------------------
    def validate(self) -> float:
        """Mean foreground Dice over validation volumes at the training resolution."""
        net = self.method.inference_net()
        was_training = net.training
        net.eval()
        scores = []
        for case in self.val_cases:
            images = load_array(self.spec.processed_dir / case["image"], mmap_mode="r")
            labels = load_array(self.spec.processed_dir / case["label"], mmap_mode="r")
            pred = predict_volume(net, images, self.device)
            ref = torch.from_numpy(np.array(labels)).to(pred.device)
            scores.append(mean_foreground_dice(pred, ref, self.manifest["num_classes"]))
        net.train(was_training)
        return float(np.mean(scores)) if scores else float("nan")

    # the loop -----------------------------------------------------------------------------
    def run(self) -> dict:
        spec, config = self.spec, self.config
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphans(spec.run_dir):
            print(f"removed {orphan}, left by a killed write", file=sys.stderr)
        self._fingerprint = self.fingerprint()
        start_step, best = self._resume()
        select_best = spec.protocol.get("checkpoint", "last") == "best_val"
        if select_best and not self.val_cases:
            raise ValueError("checkpoint: best_val needs validation patients in the split")
        log_path = spec.run_dir / "log.jsonl"
        if start_step:
            self._trim_log(log_path, start_step)
        elif log_path.exists():
            log_path.unlink()
        log = log_path.open("a")
        if start_step:
            log.write(json.dumps({"event": "resume", "step": start_step}) + "\n")
            print(f"resuming {spec.run_dir} from step {start_step}", file=sys.stderr)
        self.method.train()
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.bf16)
        tty = sys.stderr.isatty()
        bar = tqdm(
            total=self.iterations,
            initial=start_step,
            disable=not tty,
            desc=spec.method,
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        losses: dict[str, torch.Tensor] = {}
        for step in range(start_step, self.iterations):
            seed_step(spec.seed, step, self.generator)
            factor = config.lr_factor(step, self.iterations)
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
            batch = self.make_batch(step)
            losses = {}
            for index, (phase, optimizers) in enumerate(self.phases):
                with autocast:
                    phase_losses = getattr(self.method, phase)(batch, step)
                loss = phase_losses["loss"]
                bad |= ~torch.isfinite(loss.detach())
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                if index:  # a later phase's total is logged under its name
                    phase_losses = {
                        (phase if k == "loss" else k): v for k, v in phase_losses.items()
                    }
                losses.update(phase_losses)
            self.method.after_step(step)
            done = step + 1
            bar.update(1)
            last = done == self.iterations
            if done % config.log_every == 0 or last:
                self._check_finite(bad, losses, done)
                record = {"step": done, "lr": factor * self.lr}
                record.update({k: float(v.detach()) for k, v in losses.items()})
                record["seconds"] = round(time.perf_counter() - started, 3)
                log.write(json.dumps(record) + "\n")
                log.flush()
                if not tty:
                    text = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
                    print(f"{spec.run_dir} step {done}/{self.iterations} {text}", file=sys.stderr)
            if select_best and (done % config.val_every == 0 or last):
                score = self.validate()
                log.write(json.dumps({"step": done, "val_dice": score}) + "\n")
                if score > best["score"]:
                    best = {"score": score, "step": done}
                    self._save_model(spec.run_dir / "best.pt")
            if done % config.checkpoint_every == 0 or last:
                self._check_finite(bad, losses, done)
                self._save_checkpoint(done, best)
        bar.close()
        log.close()
        seconds = time.perf_counter() - started
        final = spec.run_dir / "model.pt"
        if select_best:
            tmp = final.with_name(f".{final.name}.tmp")
            shutil.copyfile(spec.run_dir / "best.pt", tmp)
            tmp.replace(final)
        else:
            self._save_model(final)
        record_path = spec.run_dir / "train.json"
        record = self.record(seconds, start_step, best if select_best else None)
        write_json(record, record_path)
        return record

    def _check_weights(self, step: int) -> None:
        """Refuse to checkpoint non-finite weights (a later resume would start from them)."""
        values = [v for v in self.method.state_dict().values() if v.is_floating_point()]
        if values and not bool(torch.stack([torch.isfinite(v).all() for v in values]).all()):
            raise NonFiniteLossError(
                f"{self.spec.run_dir}: non-finite weights at step {step}; not checkpointed (the "
                "last checkpoint is kept), lower the learning rate or check the inputs"
            )

    def _check_finite(self, bad: torch.Tensor, losses: dict, step: int) -> None:
        if bool(bad):
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLossError(
                f"{self.spec.run_dir}: non-finite loss at or before step {step} "
                f"(last losses {values}); the last checkpoint is kept, lower the learning rate "
                "or check the inputs"
            )

    def _save_model(self, path: Path) -> None:
        save_torch(
            {
                "method": self.spec.method,
                "stage": self.spec.stage,
                "num_classes": self.manifest["num_classes"],
                "image_size": self.manifest["image_size"],
                "backbone": {
                    "name": self.config.backbone,
                    "widths": list(self.config.widths),
                    "upsample": self.config.upsample,
                },
                "inference_state": self.method.inference_net().state_dict(),
                "method_state": self.method.state_dict(),
            },
            path,
        )

    def record(self, seconds: float, start_step: int, best: dict | None) -> dict:
        spec = self.spec
        steps = self.iterations - start_step
        return {
            "dataset": spec.dataset,
            "method": spec.method,
            "run_method": spec.run_method or spec.method,
            "ratio": spec.ratio,
            "seed": spec.seed,
            "stage": spec.stage,
            "iterations": self.iterations,
            "resumed_from": start_step,
            "seconds": round(seconds, 3),
            "steps_per_second": round(steps / seconds, 3) if seconds > 0 else None,
            "best_val": best,
            "labeled_patients": len(spec.labeled["patients"]),
            "labeled_slices": len(self.labeled),
            "unlabeled_slices": len(self.unlabeled),
            "train": asdict(self.config),
            "hparams": {**type(self.method).defaults, **spec.hparams},
            "protocol": spec.protocol,
            "data_fingerprint": self.data_fingerprint(),
            **environment(self.device),
        }
