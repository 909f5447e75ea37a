"""Slice-by-slice inference on a 3D volume, and the way back to the volume's own grid."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def predict_volume(
    net: nn.Module, volume: np.ndarray, device: torch.device, batch_size: int = 32
) -> torch.Tensor:
    """Argmax labels (S, h, w) of a processed volume (S, h, w) at the training resolution."""
    labels = []
    for start in range(0, volume.shape[0], batch_size):
        chunk = torch.from_numpy(np.array(volume[start : start + batch_size], dtype=np.float32))
        logits = net(chunk.unsqueeze(1).to(device)).logits
        labels.append(logits.argmax(1))
    return torch.cat(labels)


def to_original_grid(labels: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of (S, h, w) labels to the original (S, H, W) grid."""
    if tuple(labels.shape[1:]) == tuple(shape[1:]):
        return labels.to(torch.uint8).cpu().numpy()
    resized = F.interpolate(labels[:, None].float(), size=tuple(shape[1:]), mode="nearest-exact")
    return resized[:, 0].to(torch.uint8).cpu().numpy()


def mean_foreground_dice(pred: torch.Tensor, ref: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over foreground classes present in either mask (model selection only)."""
    scores = []
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        total = p.sum() + r.sum()
        if total > 0:
            scores.append(2 * (p & r).sum().item() / total.item())
    return float(np.mean(scores)) if scores else 1.0
