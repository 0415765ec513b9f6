"""Batch normalisation on the GPU over an input viewed as (N, C, L), with the formulas and
precision of kernels/cpu/norm.py (PyTorch's semantics): two passes, mean then the biased variance
that normalises; the running variance takes the unbiased one; sums in float64 for float32 data
too; y and dx in the data's dtype from the saved mean and invstd.

Training forward and backward: one block per channel. Its threads take strided shares of the
channel's M = N * L values, each sums its share in float64, and a tree reduction in shared memory
(launch.block_sum) adds the shares; then every thread normalises its share. The sums are added
in another order than the CPU's loop (rounding-level differences in float64).
Eval forward: one thread per element; the eval fold into a convolution, one per weight.
"""

import math

import numpy as np
from numba import cuda, float64

from ..workspace import WorkspaceSpec
from .launch import REDUCE_THREADS, block_sum, grid_1d, reduce_threads


@cuda.jit(cache=True)
def _batchnorm_forward_train_kernel(x, weight, bias, eps, momentum, y, save_mean, save_invstd,
                                    running_mean, running_var):
    buf = cuda.shared.array(REDUCE_THREADS, float64)
    N, C, L = x.shape
    M = N * L
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    s = np.float64(0.0)          # np.float64, not 0.0: the simulator then sums in float64 too
    for i in range(t, M, T):
        s += x[i // L, c, i % L]
    buf[t] = s
    mean = block_sum(buf, t) / M
    ss = np.float64(0.0)
    for i in range(t, M, T):
        d = x[i // L, c, i % L] - mean        # formed in float64: no E[x^2] - E[x]^2 cancellation
        ss += d * d
    buf[t] = ss
    ss = block_sum(buf, t)
    var = ss / M
    invstd = 1.0 / math.sqrt(var + eps)
    if t == 0:
        unbiased = ss / (M - 1) if M > 1 else var   # M == 1: the layer refuses it; never divide by 0
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased
        save_mean[c] = mean
        save_invstd[c] = invstd
    m = x.dtype.type(mean)
    a = x.dtype.type(invstd * weight[c])
    b = bias[c]
    for i in range(t, M, T):
        n = i // L
        l = i - n * L
        y[n, c, l] = (x[n, c, l] - m) * a + b


@cuda.jit(cache=True)
def _batchnorm_forward_eval_kernel(x, weight, bias, running_mean, running_var, eps, y):
    N, C, L = x.shape
    idx = cuda.grid(1)
    if idx < N * C * L:
        l = idx % L
        c = (idx // L) % C
        n = idx // (L * C)
        m = running_mean[c]
        a = x.dtype.type(weight[c] / math.sqrt(running_var[c] + eps))
        y[n, c, l] = (x[n, c, l] - m) * a + bias[c]


@cuda.jit(cache=True)
def _batchnorm_fold_kernel(weight, bias, has_bias, gamma, beta, running_mean, running_var, eps,
                           folded_weight, folded_bias):
    O, K = weight.shape
    idx = cuda.grid(1)
    if idx < O * K:
        o = idx // K
        k = idx - o * K
        a = weight.dtype.type(gamma[o] / math.sqrt(running_var[o] + eps))
        folded_weight[o, k] = weight[o, k] * a
        if k == 0:
            b = bias[o] if has_bias else weight.dtype.type(0)
            folded_bias[o] = (b - running_mean[o]) * a + beta[o]


@cuda.jit(cache=True)
def _batchnorm_backward_kernel(x, dy, weight, save_mean, save_invstd, dx, dweight, dbias):
    buf_dy = cuda.shared.array(REDUCE_THREADS, float64)
    buf_dyx = cuda.shared.array(REDUCE_THREADS, float64)
    N, C, L = x.shape
    M = N * L
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    m = save_mean[c]
    inv = save_invstd[c]
    sdy = np.float64(0.0)
    sdyx = np.float64(0.0)
    for i in range(t, M, T):
        n = i // L
        l = i - n * L
        g = dy[n, c, l]
        sdy += g
        sdyx += g * ((x[n, c, l] - m) * inv)
    buf_dy[t] = sdy
    buf_dyx[t] = sdyx
    sdy = block_sum(buf_dy, t)
    sdyx = block_sum(buf_dyx, t)
    if t == 0:
        dbias[c] = sdy
        dweight[c] = sdyx
    if dx is not None:
        # dx = (weight * inv / M) * (M*dy - sdy - xhat*sdyx) = k * (dy - sdy/M - xhat * sdyx/M)
        k = x.dtype.type(weight[c] * inv)
        mdy = x.dtype.type(sdy / M)
        mdyx = x.dtype.type(sdyx / M)
        for i in range(t, M, T):
            n = i // L
            l = i - n * L
            xhat = (x[n, c, l] - m) * inv
            dx[n, c, l] = k * (dy[n, c, l] - mdy - xhat * mdyx)


# ---- host side ----


def batchnorm_workspace_shapes(channels):
    """name -> WorkspaceSpec: the saved batch mean and inverse std, one per channel (as the CPU's)."""
    return {"save_mean": WorkspaceSpec((channels,), per_sample=False),
            "save_invstd": WorkspaceSpec((channels,), per_sample=False)}


def batchnorm_forward_train(x, weight, bias, eps, momentum, y, running_mean, running_var,
                            save_mean, save_invstd):
    """Normalise with batch statistics; write y, save_mean, save_invstd; update running_* in place.
    One block per channel, a power of two of threads (at most 256, fewer for few values)."""
    N, C, L = x.shape
    _batchnorm_forward_train_kernel[C, reduce_threads(N * L)](
        x, weight, bias, np.float64(eps), np.float64(momentum), y, save_mean, save_invstd, running_mean,
        running_var)


def batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, y):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias. One thread per element."""
    blocks, threads = grid_1d(x.size)
    _batchnorm_forward_eval_kernel[blocks, threads](x, weight, bias, running_mean, running_var,
                                                    np.float64(eps), y)


def batchnorm_fold(weight, bias, gamma, beta, running_mean, running_var, eps, folded_weight, folded_bias):
    """The evaluation-mode batch norm after y = weight @ x + bias folded into that layer, as the CPU's
    (bias None: none). One thread per weight entry."""
    blocks, threads = grid_1d(weight.size)
    has_bias = bias is not None
    _batchnorm_fold_kernel[blocks, threads](weight, bias if has_bias else folded_bias, has_bias, gamma, beta,
                                            running_mean, running_var, np.float64(eps), folded_weight, folded_bias)


def batchnorm_backward(x, dy, weight, dx, dweight, dbias, save_mean, save_invstd):
    """Training-mode backward: dx (unless None), dweight = sum(dy * xhat), dbias = sum(dy).
    One block per channel, as the training forward."""
    N, C, L = x.shape
    _batchnorm_backward_kernel[C, reduce_threads(N * L)](x, dy, weight, save_mean, save_invstd, dx,
                                                         dweight, dbias)


# ---- synchronised batch norm (data parallel): the CPU's batchnorm_sync_* -------------------------
# One thread per channel, each looping over its channel's values: plain, and enough for the few
# channels' sums these take (a block reduction per channel, as batchnorm_forward_train's, is the
# faster twin to write when a GPU run shows it matters).

@cuda.jit
def _sync_sums_kernel(x, sums):
    c = cuda.grid(1)
    N, C, L = x.shape
    if c < C:
        s = float64(0.0)
        for n in range(N):
            for l in range(L):
                s += x[n, c, l]
        sums[c] = s


@cuda.jit
def _sync_squares_kernel(x, mean, sums):
    c = cuda.grid(1)
    N, C, L = x.shape
    if c < C:
        ss = float64(0.0)
        for n in range(N):
            for l in range(L):
                d = x[n, c, l] - mean[c]
                ss += d * d
        sums[c] = ss


@cuda.jit
def _sync_forward_kernel(x, weight, bias, eps, momentum, mean, squares, M, y, running_mean, running_var,
                         save_mean, save_invstd):
    c = cuda.grid(1)
    N, C, L = x.shape
    if c < C:
        var = squares[c] / M
        invstd = 1.0 / math.sqrt(var + eps)
        unbiased = squares[c] / (M - 1) if M > 1 else var
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased
        save_mean[c] = mean[c]
        save_invstd[c] = invstd
        a = invstd * weight[c]
        for n in range(N):
            for l in range(L):
                y[n, c, l] = (x[n, c, l] - mean[c]) * a + bias[c]


@cuda.jit
def _sync_backward_sums_kernel(x, dy, save_mean, save_invstd, sums):
    c = cuda.grid(1)
    N, C, L = x.shape
    if c < C:
        sdy = float64(0.0)
        sdyx = float64(0.0)
        for n in range(N):
            for l in range(L):
                g = dy[n, c, l]
                sdy += g
                sdyx += g * ((x[n, c, l] - save_mean[c]) * save_invstd[c])
        sums[0, c] = sdy
        sums[1, c] = sdyx


@cuda.jit
def _sync_backward_kernel(x, dy, weight, save_mean, save_invstd, sums, M, dx):
    c = cuda.grid(1)
    N, C, L = x.shape
    if c < C:
        inv = save_invstd[c]
        k = weight[c] * inv
        mdy = sums[0, c] / M
        mdyx = sums[1, c] / M
        for n in range(N):
            for l in range(L):
                xhat = (x[n, c, l] - save_mean[c]) * inv
                dx[n, c, l] = k * (dy[n, c, l] - mdy - xhat * mdyx)


def batchnorm_sync_sums(x, sums):
    """sums[c] = sum of x[:, c, :] (as the CPU's)."""
    blocks, threads = grid_1d(x.shape[1])
    _sync_sums_kernel[blocks, threads](x, sums)


def batchnorm_sync_squares(x, mean, sums):
    """sums[c] = sum of (x[:, c, :] - mean[c])^2 (as the CPU's)."""
    blocks, threads = grid_1d(x.shape[1])
    _sync_squares_kernel[blocks, threads](x, mean, sums)


def batchnorm_sync_forward(x, weight, bias, eps, momentum, mean, squares, M, y, running_mean, running_var,
                           save_mean, save_invstd):
    """The normalisation and running update from the global statistics (as the CPU's)."""
    blocks, threads = grid_1d(x.shape[1])
    _sync_forward_kernel[blocks, threads](x, weight, bias, np.float64(eps), np.float64(momentum), mean, squares,
                                          np.float64(M), y, running_mean, running_var, save_mean, save_invstd)


def batchnorm_sync_backward_sums(x, dy, save_mean, save_invstd, sums):
    """sums[0, c] = sum(dy), sums[1, c] = sum(dy * xhat) (as the CPU's)."""
    blocks, threads = grid_1d(x.shape[1])
    _sync_backward_sums_kernel[blocks, threads](x, dy, save_mean, save_invstd, sums)


def batchnorm_sync_backward(x, dy, weight, save_mean, save_invstd, sums, M, dx):
    """dx from the global sums (as the CPU's)."""
    blocks, threads = grid_1d(x.shape[1])
    _sync_backward_kernel[blocks, threads](x, dy, weight, save_mean, save_invstd, sums, np.float64(M), dx)
