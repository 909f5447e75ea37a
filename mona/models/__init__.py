"""Segmentation backbones behind one interface (see `mona.models.base`)."""

from mona.models.base import SegmentationNet, SegOutput, build_backbone

__all__ = ["SegOutput", "SegmentationNet", "build_backbone"]
