"""Shared fixtures: small synthetic datasets generated and preprocessed once per session, and a
check that a drawn figure is really drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def processed_acdc(tmp_path_factory) -> Path:
    """A 10-patient synthetic ACDC, preprocessed to 32x32 slices."""
    from mona.data.preprocess import preprocess
    from mona.data.synthetic import generate

    root = tmp_path_factory.mktemp("acdc")
    generate("acdc", root / "raw", patients=10, slices=(4, 6), size=48, seed=0)
    preprocess("acdc", root / "raw", root / "processed", image_size=32)
    return root / "processed"


def _assert_drawn(path: Path, min_colors: int = 8) -> np.ndarray:
    """The PNG opens as RGB(A), is not one flat colour and holds more than a few colours."""
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    image = image[..., :3]
    assert image.std() > 0.02
    colors = np.unique((image.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colors) >= min_colors
    return image


@pytest.fixture
def assert_drawn():
    """`assert_drawn(png, min_colors=8)` -> the RGB image, after checking it is not blank."""
    return _assert_drawn
