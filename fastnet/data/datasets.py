"""Datasets for users: `fastnet.datasets.load_idx` / `save_idx` read and write IDX files."""

from .idx import load_idx, save_idx

__all__ = ["load_idx", "save_idx"]
