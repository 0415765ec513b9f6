"""Batch assembly with augmentation: gather rows of the data set into the input buffer, each
randomly shifted (a crop of the image zero-padded by `pad`, as torchvision's
RandomCrop(size, padding=pad)) and flipped left-right with probability 1/2
(RandomHorizontalFlip), in one pass: no extra copy, no allocation.

The choices for the image at position i of the batch of step `step` come from
splitmix64(seed, step * rows + i): reproducible, thread-count independent, resumable.
"""

import numpy as np
from numba import njit, prange

from .random import splitmix64


@njit(cache=True, parallel=True)
def gather_crop_flip(x, rows, out, pad, flip, fill, seed, step):
    """out[i] = crop(pad(x[rows[i]], pad, fill))[optionally flipped]; offsets in [-pad, pad]."""
    n = rows.shape[0]
    C, H, W = out.shape[1], out.shape[2], out.shape[3]
    span = np.uint64(2 * pad + 1)
    value = out.dtype.type(fill)
    for i in prange(n):
        z = splitmix64(seed, step * np.int64(n) + i)
        shift_h = np.int64(z % span) - pad
        shift_w = np.int64((z >> np.uint64(20)) % span) - pad
        mirrored = flip and ((z >> np.uint64(40)) & np.uint64(1)) == np.uint64(1)
        src = x[rows[i]]
        for c in range(C):
            for h in range(H):
                sh = h + shift_h
                for w in range(W):
                    sw = (W - 1 - w if mirrored else w) + shift_w
                    if 0 <= sh < H and 0 <= sw < W:
                        out[i, c, h, w] = src[c, sh, sw]
                    else:
                        out[i, c, h, w] = value
