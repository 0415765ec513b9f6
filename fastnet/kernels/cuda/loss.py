"""Losses on the GPU, with the reductions of kernels/cpu/loss.py: the forward kernels return the
summed loss (the caller divides), count_correct the number of rows whose argmax is the label.

A returned total is reduced on the device by a single block: each thread takes every T-th row (or
element), sums in float64 (int64 for counts), and a tree reduction in shared memory adds the
threads' sums; thread 0 writes the total into a one-element buffer made once per dtype
(launch.result_buffers), and that one number is copied back. The order of the additions differs
from the CPU's loop (rounding-level differences in the float64 total).
"""

import numpy as np
from numba import cuda, float64, int64

from .activation import softmax_row
from .launch import REDUCE_THREADS, block_sum, fetch, grid_1d, reduce_threads, result_buffers


@cuda.jit(cache=True)
def _cross_entropy_forward_kernel(logits, labels, probs, out):
    buf = cuda.shared.array(REDUCE_THREADS, float64)
    t = cuda.threadIdx.x
    s = np.float64(0.0)
    for n in range(t, logits.shape[0], cuda.blockDim.x):
        # -log softmax(x)[label] = logsumexp(x) - x[label], the row's softmax written on the way
        s += softmax_row(logits, n, probs) - logits[n, labels[n]]
    buf[t] = s
    total = block_sum(buf, t)
    if t == 0:
        out[0] = total


@cuda.jit(cache=True)
def _cross_entropy_backward_kernel(probs, labels, scale, dlogits):
    N, K = probs.shape
    idx = cuda.grid(1)
    if idx < N * K:
        n = idx // K
        j = idx - n * K
        d = probs[n, j] * scale
        if j == labels[n]:
            d -= scale
        dlogits[n, j] = d


@cuda.jit(cache=True)
def _mse_forward_kernel(pred, target, out):
    buf = cuda.shared.array(REDUCE_THREADS, float64)
    t = cuda.threadIdx.x
    s = np.float64(0.0)
    for i in range(t, pred.size, cuda.blockDim.x):
        d = pred[i] - target[i]
        s += d * d
    buf[t] = s
    total = block_sum(buf, t)
    if t == 0:
        out[0] = total


@cuda.jit(cache=True)
def _mse_backward_kernel(pred, target, s, dpred):
    i = cuda.grid(1)
    if i < pred.size:
        dpred[i] = s * (pred[i] - target[i])


@cuda.jit(cache=True)
def _count_correct_kernel(scores, labels, out):
    buf = cuda.shared.array(REDUCE_THREADS, int64)
    t = cuda.threadIdx.x
    count = 0
    for n in range(t, scores.shape[0], cuda.blockDim.x):
        best = 0
        for j in range(1, scores.shape[1]):
            if scores[n, j] > scores[n, best]:     # strict: the first maximum wins, as argmax
                best = j
        if best == labels[n]:
            count += 1
    buf[t] = count
    total = block_sum(buf, t)
    if t == 0:
        out[0] = total


# ---- host side ----


def cross_entropy_workspace_shapes(classes):
    """name -> per-sample shape: `probs`, one softmax row per sample (as the CPU's)."""
    return {"probs": (classes,)}


def cross_entropy_forward(logits, labels, probs):
    """probs = softmax(logits) row-wise; returns sum_n -log softmax(logits[n])[labels[n]] (a float).
    One block, up to 256 threads, each taking every T-th row."""
    result = result_buffers(np.float64)
    _cross_entropy_forward_kernel[1, reduce_threads(logits.shape[0])](logits, labels, probs, result[0])
    return float(fetch(result))


def cross_entropy_backward(labels, scale, dlogits, probs):
    """dlogits = scale * (probs - onehot(labels)). One thread per element."""
    blocks, threads = grid_1d(probs.size)
    _cross_entropy_backward_kernel[blocks, threads](probs, labels, probs.dtype.type(scale), dlogits)


def mse_forward(pred, target):
    """Returns sum (pred - target)^2 over flat views (a float). One block, as cross_entropy_forward."""
    result = result_buffers(np.float64)
    _mse_forward_kernel[1, reduce_threads(pred.size)](pred, target, result[0])
    return float(fetch(result))


def mse_backward(pred, target, scale, dpred):
    """dpred = scale * 2 (pred - target). One thread per element."""
    blocks, threads = grid_1d(pred.size)
    _mse_backward_kernel[blocks, threads](pred, target, pred.dtype.type(2.0 * scale), dpred)


def count_correct(scores, labels):
    """How many rows have their largest score at the label (an int). One block, as above."""
    result = result_buffers(np.int64)
    _count_correct_kernel[1, reduce_threads(scores.shape[0])](scores, labels, result[0])
    return int(fetch(result))
