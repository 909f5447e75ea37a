"""Evaluate one trained run on its test volumes and write `metrics.json`.

Inference slice by slice at the training size, argmax, nearest-neighbour back to each volume's
own grid, then per-class Dice and surface distances from the volume's spacing, under the
protocol switches `asd`, `units` and `empty` (see `mona.evaluate.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mona.evaluate.inference import predict_volume, to_original_grid
from mona.evaluate.metrics import score_cases_parallel, summarize
from mona.io import file_digest, load_array, load_torch, read_json, write_json
from mona.models import build_backbone


def load_inference_net(model_path: Path, device: torch.device) -> torch.nn.Module:
    saved = load_torch(model_path, map_location=device)
    backbone = saved["backbone"]
    net = build_backbone(
        backbone["name"], 1, saved["num_classes"], backbone["widths"], backbone["upsample"]
    )
    net.load_state_dict(saved["inference_state"])
    return net.to(device).eval()


def predict_cases(
    model_path: Path, processed_dir: Path, cases: list[dict], device: torch.device
) -> Iterator[np.ndarray]:
    """Predicted label volumes on each case's original grid, one at a time."""
    net = load_inference_net(model_path, device)
    for case in tqdm(cases, desc="inference", disable=None, leave=False):
        images = load_array(processed_dir / case["image"], mmap_mode="r")
        labels = predict_volume(net, images, device)
        yield to_original_grid(labels, tuple(case["original_shape"]))


def evaluate_run(
    model_path: Path,
    processed_dir: Path,
    split: dict,
    switches: dict,
    provenance: dict,
    out_path: Path,
    workers: int = 1,
) -> dict:
    """Score the test patients of `split` and write the metrics file atomically.

    Volumes are predicted and read lazily: the scoring pool holds a few at a time, so a LiTS
    test set never sits in memory whole, and inference overlaps with scoring.
    """
    from mona.engine import pick_device

    manifest = read_json(processed_dir / "manifest.json")
    test = set(split["test"])
    cases = [c for c in manifest["cases"] if c["patient_id"] in test]
    device = pick_device()
    predictions = predict_cases(model_path, processed_dir, cases, device)
    pairs = (
        (pred, load_array(processed_dir / case["gt"]), case["spacing"])
        for pred, case in zip(predictions, cases, strict=True)
    )
    scores = score_cases_parallel(
        pairs,
        manifest["num_classes"],
        workers=workers,
        asd_mode=switches["asd"],
        units=switches["units"],
        empty=switches["empty"],
    )
    for case, score in zip(cases, scores, strict=True):
        score["case_id"] = case["case_id"]
    metrics = {
        **provenance,
        "evaluation": {k: switches[k] for k in ("asd", "units", "empty", "checkpoint")},
        # the bytes scored: manifest, and the test patients' images and ground truth
        "test_data_fingerprint": file_digest(
            [processed_dir / "manifest.json"]
            + [processed_dir / case[key] for case in cases for key in ("image", "gt")]
        ),
        "class_names": manifest["class_names"][1:],
        "summary": summarize(scores),
        "cases": scores,
    }
    write_json(metrics, out_path)
    return metrics
