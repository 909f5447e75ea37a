"""Training slices read from the memory-mapped per-volume arrays, sampled without a data loader.

Every volume's array is opened once (`np.load(mmap_mode="r")`); a batch is a gather of rows. When
the selected slices are small enough they are copied once to the training device, so a step moves
no data at all. Sampling is a pure function of (seed, stream, step): the same seed gives the same
batches, and a resumed run continues with exactly the batches an uninterrupted one would draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mona.io import load_array

CACHE_LIMIT_BYTES = 2 * 1024**3


class SliceStore:
    """The slices `{case_id: [slice indices]}` of one processed dataset."""

    def __init__(
        self,
        processed_dir: Path,
        manifest: dict,
        case_slices: dict[str, list[int]],
        device: torch.device,
        cache: str = "auto",
    ):
        self.device = device
        cases = {c["case_id"]: c for c in manifest["cases"]}
        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        volume, slice_index, position = [], [], []
        for v, (case_id, indices) in enumerate(sorted(case_slices.items())):
            case = cases[case_id]
            self._images.append(load_array(processed_dir / case["image"], mmap_mode="r"))
            self._labels.append(load_array(processed_dir / case["label"], mmap_mode="r"))
            volume += [v] * len(indices)
            slice_index += list(indices)
            position += [(i + 1) / case["slices"] for i in indices]
        self.volume = torch.tensor(volume, dtype=torch.long)
        self.slice_index = torch.tensor(slice_index, dtype=torch.long)
        self.position = torch.tensor(position, dtype=torch.float32)
        size = manifest["image_size"]
        nbytes = len(volume) * size * size * 5
        self.cached = cache == "device" or (cache == "auto" and nbytes <= CACHE_LIMIT_BYTES)
        if self.cached and len(volume):
            images, labels = self._read(np.arange(len(volume)))
            self._cache_images = images.to(device)
            self._cache_labels = labels.to(device)
            self._device_volume = self.volume.to(device)
            self._device_position = self.position.to(device)

    def __len__(self) -> int:
        return len(self.volume)

    def _read(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images = np.stack([self._images[self.volume[r]][self.slice_index[r]] for r in rows])
        labels = np.stack([self._labels[self.volume[r]][self.slice_index[r]] for r in rows])
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(images (B,1,H,W) float, masks (B,H,W) long, positions (B,), volumes (B,)) on device."""
        if self.cached:
            index = rows.to(self.device)
            return (
                self._cache_images[index],
                self._cache_labels[index].long(),
                self._device_position[index],
                self._device_volume[index],
            )
        images, labels = self._read(rows.numpy())
        return (
            images.to(self.device, non_blocking=True),
            labels.to(self.device, non_blocking=True),
            self.position[rows].to(self.device),
            self.volume[rows].to(self.device),
        )


class EpochSampler:
    """Rows of `step`'s batch from an endless sequence of seeded epoch permutations."""

    def __init__(self, size: int, batch: int, seed: int, stream: int):
        self.size, self.batch, self.seed, self.stream = size, batch, seed, stream
        self._epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.stream, epoch])
            self._order, self._epoch = rng.permutation(self.size), epoch
        return self._order

    def rows(self, step: int) -> torch.Tensor:
        if self.batch == 0 or self.size == 0:
            return torch.empty(0, dtype=torch.long)
        start = step * self.batch
        positions = range(start, start + self.batch)
        rows = [self._permutation(p // self.size)[p % self.size] for p in positions]
        return torch.tensor(rows, dtype=torch.long)
