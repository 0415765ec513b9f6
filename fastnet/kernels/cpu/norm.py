"""Batch normalisation over axis 1 of an input viewed as (N, C, L), with PyTorch's semantics.

BatchNorm2D passes x.reshape(N, C, H*W), BatchNorm1D passes (N, C, 1) or (N, C, L); the
statistics of channel c are taken over the M = N * L values x[:, c, :].

Training forward (per channel c):
    mean   = sum(x) / M                       (first pass)
    var    = sum((x - mean)^2) / M            (second pass: the BIASED variance normalises)
    invstd = 1 / sqrt(var + eps)
    y      = (x - mean) * invstd * weight + bias
    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (UNBIASED)
mean and invstd are saved (in the data's dtype) for the backward pass, in the workspaces
save_mean and save_invstd (batchnorm_workspace_shapes: (C,) each, no batch axis).

Precision: the sums are accumulated in float64 for float32 data too, as PyTorch's CPU kernel does
(its accumulation type for float is double), with the two-pass mean-then-variance so that no
E[x^2] - E[x]^2 cancellation occurs (x - mean is formed in float64 in that pass). y and dx
are computed in the data's dtype from the saved mean/invstd.

M == 1: PyTorch raises "Expected more than 1 value per channel when training"; the layer raises
ShapeError before calling the kernel. Kernels never raise: given M == 1 anyway, the kernel uses the
biased variance (0) for the running variance instead of dividing by zero.

Backward (training mode, xhat = (x - mean) * invstd):
    dbias   = sum(dy)
    dweight = sum(dy * xhat)
    dx      = (weight * invstd / M) * (M * dy - dbias - xhat * dweight)
Parameter gradients are written (overwritten), not accumulated.

Speed: the sums are reductions, which LLVM vectorises only when it may reassociate them, so the
kernels are compiled with fastmath={"reassoc"} and nothing else: no "nnan"/"ninf", so NaN and inf
still propagate. The float64 sums are then added in a different (blocked) order, a rounding-level
difference; without it both passes are several times slower (bench/NOTES.md, norm).

Every kernel runs `prange` over channels (or over (n, c) rows in the eval forward): each
iteration owns the outputs of its channel, so no two threads write the same element.
"""

import numpy as np
from numba import njit, prange

from ..workspace import WorkspaceSpec

_REASSOC = {"reassoc"}      # see "Speed" above


def batchnorm_workspace_shapes(channels):
    """name -> WorkspaceSpec: the batch mean and inverse std the training forward saves for the
    backward, one per channel (no batch axis)."""
    return {"save_mean": WorkspaceSpec((channels,), per_sample=False),
            "save_invstd": WorkspaceSpec((channels,), per_sample=False)}


# The per-channel pieces the one-process and the synchronised (data-parallel) kernels share,
# inlined into each so that every kernel keeps its own fastmath flags and loop order.

@njit(cache=True, inline="always")
def _channel_sum(x, c):
    s = 0.0
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            s += x[n, c, l]
    return s


@njit(cache=True, inline="always")
def _channel_squares(x, c, mean):
    """The sum of squared deviations of channel c about `mean`."""
    ss = 0.0
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            d = x[n, c, l] - mean
            ss += d * d
    return ss


@njit(cache=True, inline="always")
def _normalise_channel(x, c, mean, ss, M, weight, bias, eps, momentum, y, running_mean, running_var,
                       save_mean, save_invstd):
    """From channel c's mean and sum of squared deviations over M values: y, the saved statistics
    and the running ones (updated with the unbiased variance, as PyTorch)."""
    var = ss / M
    invstd = 1.0 / np.sqrt(var + eps)
    unbiased = ss / (M - 1) if M > 1 else var
    running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
    running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased
    save_mean[c] = mean
    save_invstd[c] = invstd
    m = x.dtype.type(mean)
    a = x.dtype.type(invstd * weight[c])
    b = bias[c]
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            y[n, c, l] = (x[n, c, l] - m) * a + b


@njit(cache=True, inline="always")
def _gradient_sums(x, dy, c, m, inv):
    """(sum(dy), sum(dy * xhat)) over channel c, xhat = (x - m) * inv."""
    sdy = 0.0
    sdyx = 0.0
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            g = dy[n, c, l]
            sdy += g
            sdyx += g * ((x[n, c, l] - m) * inv)
    return sdy, sdyx


@njit(cache=True, inline="always")
def _input_gradient(x, dy, c, m, inv, weight, sdy, sdyx, M, dx):
    """dx = (weight * inv / M) * (M*dy - sdy - xhat*sdyx) = k * (dy - sdy/M - xhat * sdyx/M) over
    channel c, from the sums over M values."""
    k = x.dtype.type(weight[c] * inv)
    mdy = x.dtype.type(sdy / M)
    mdyx = x.dtype.type(sdyx / M)
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            xhat = (x[n, c, l] - m) * inv
            dx[n, c, l] = k * (dy[n, c, l] - mdy - xhat * mdyx)


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def batchnorm_forward_train(x, weight, bias, eps, momentum, y, running_mean, running_var,
                            save_mean, save_invstd):
    """Normalise with batch statistics; write y, save_mean, save_invstd; update running_* in place."""
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        mean = _channel_sum(x, c) / M
        _normalise_channel(x, c, mean, _channel_squares(x, c, mean), M, weight, bias, eps, momentum, y,
                           running_mean, running_var, save_mean, save_invstd)


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, y):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    N, C, L = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        m = running_mean[c]
        a = x.dtype.type(weight[c] / np.sqrt(running_var[c] + eps))
        b = bias[c]
        for l in range(L):
            y[n, c, l] = (x[n, c, l] - m) * a + b


@njit(cache=True)
def batchnorm_fold(weight, bias, gamma, beta, running_mean, running_var, eps, folded_weight, folded_bias):
    """The evaluation-mode batch norm after a layer y = weight @ x + bias, folded into it (bias None:
    none): with a = gamma / sqrt(running_var + eps), as batchnorm_forward_eval,
        folded_weight[o, k] = weight[o, k] * a[o],   folded_bias[o] = (bias[o] - running_mean[o]) * a[o] + beta[o].
    weight and folded_weight (O, K): a convolution's (O, C, KH, KW) viewed flat."""
    O, K = weight.shape
    for o in range(O):
        a = weight.dtype.type(gamma[o] / np.sqrt(running_var[o] + eps))
        for k in range(K):
            folded_weight[o, k] = weight[o, k] * a
        b = weight.dtype.type(0) if bias is None else bias[o]
        folded_bias[o] = (b - running_mean[o]) * a + beta[o]


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def batchnorm_backward(x, dy, weight, dx, dweight, dbias, save_mean, save_invstd):
    """Training-mode backward: write dx (unless None: not wanted), dweight = sum(dy * xhat),
    dbias = sum(dy)."""
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        sdy, sdyx = _gradient_sums(x, dy, c, save_mean[c], save_invstd[c])
        dbias[c] = sdy
        dweight[c] = sdyx
        if dx is not None:
            _input_gradient(x, dy, c, save_mean[c], save_invstd[c], weight, sdy, sdyx, M, dx)


# -- synchronised batch norm (data parallel, fastnet/distributed.py) -----------------------------
# The statistics of the global batch, whose rows are spread over the ranks: each rank's sums over its
# own rows, added up over the ranks by the layer between the kernels below, then the same formulas
# as above with the global M. sums are float64 (C,) or (2, C) arrays the layer owns.

@njit(cache=True, parallel=True, fastmath=_REASSOC)
def batchnorm_sync_sums(x, sums):
    """sums[c] = sum of x[:, c, :] (the first pass)."""
    for c in prange(x.shape[1]):
        sums[c] = _channel_sum(x, c)


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def batchnorm_sync_squares(x, mean, sums):
    """sums[c] = sum of (x[:, c, :] - mean[c])^2 (the second pass, about the global mean)."""
    for c in prange(x.shape[1]):
        sums[c] = _channel_squares(x, c, mean[c])


@njit(cache=True, parallel=True)
def batchnorm_sync_forward(x, weight, bias, eps, momentum, mean, squares, M, y, running_mean, running_var,
                           save_mean, save_invstd):
    """batchnorm_forward_train's normalisation and running update from the global mean and sum of
    squared deviations over M values per channel."""
    for c in prange(x.shape[1]):
        _normalise_channel(x, c, mean[c], squares[c], M, weight, bias, eps, momentum, y,
                           running_mean, running_var, save_mean, save_invstd)


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def batchnorm_sync_backward_sums(x, dy, save_mean, save_invstd, sums):
    """sums[0, c] = sum(dy), sums[1, c] = sum(dy * xhat) over this rank's rows."""
    for c in prange(x.shape[1]):
        sums[0, c], sums[1, c] = _gradient_sums(x, dy, c, save_mean[c], save_invstd[c])


@njit(cache=True, parallel=True)
def batchnorm_sync_backward(x, dy, weight, save_mean, save_invstd, sums, M, dx):
    """batchnorm_backward's dx from the global sums over M values per channel."""
    for c in prange(x.shape[1]):
        _input_gradient(x, dy, c, save_mean[c], save_invstd[c], weight, sums[0, c], sums[1, c], M, dx)
