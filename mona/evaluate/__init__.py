"""Evaluation: inference on test volumes and per-class segmentation metrics."""
