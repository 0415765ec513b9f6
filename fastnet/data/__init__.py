"""Data on disk and in batches: IDX files (MNIST's format), data sets, loaders."""

from fastnet.data.augment import Augment
from fastnet.data.idx import load_idx, save_idx

__all__ = ["Augment", "load_idx", "save_idx"]
