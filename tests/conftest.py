"""Shared fixtures: small synthetic datasets generated and preprocessed once per session."""

from __future__ import annotations

from pathlib import Path

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
