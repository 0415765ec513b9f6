"""Batch assembly with augmentation on the GPU: the crop and flip of kernels/cpu/augment.py, with
the same choices (splitmix64(seed, step * rows + i) for the image at position i), one thread per
element of the output batch.
"""

import numpy as np
from numba import cuda

from .launch import grid_1d
from .random import seed_u64, splitmix64


@cuda.jit(cache=True)
def _gather_crop_flip_kernel(x, rows, out, pad, flip, fill, seed, step):
    n = rows.shape[0]
    _, C, H, W = out.shape
    idx = cuda.grid(1)
    if idx < n * C * H * W:
        w = idx % W
        h = (idx // W) % H
        c = (idx // (W * H)) % C
        i = idx // (W * H * C)
        # Every thread of image i draws the same z: the image's shift and flip.
        z = splitmix64(seed, step * n + i)
        span = np.uint64(2 * pad + 1)
        shift_h = np.int64(z % span) - pad
        shift_w = np.int64((z >> np.uint64(20)) % span) - pad
        mirrored = flip and ((z >> np.uint64(40)) & np.uint64(1)) == np.uint64(1)
        sh = h + shift_h
        sw = (W - 1 - w if mirrored else w) + shift_w
        if 0 <= sh < H and 0 <= sw < W:
            out[i, c, h, w] = x[rows[i], c, sh, sw]
        else:
            out[i, c, h, w] = fill


def gather_crop_flip(x, rows, out, pad, flip, fill, seed, step):
    """out[i] = crop(pad(x[rows[i]], pad, fill))[optionally flipped]; offsets in [-pad, pad].
    rows: a device integer array. One thread per element of out[:len(rows)]."""
    blocks, threads = grid_1d(rows.shape[0] * out.shape[1] * out.shape[2] * out.shape[3])
    _gather_crop_flip_kernel[blocks, threads](x, rows, out, int(pad), bool(flip), out.dtype.type(fill),
                                              seed_u64(seed), int(step))
