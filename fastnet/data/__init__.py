"""Data on disk and in batches: IDX files (MNIST's format), data sets, loaders."""

from .augment import Augment
from .idx import load_idx, save_idx

__all__ = ["Augment", "load_idx", "save_idx"]
