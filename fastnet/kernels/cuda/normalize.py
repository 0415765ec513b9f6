"""Input normalisation on the GPU: the CPU kernels' math (kernels/cpu/normalize.py), one thread per
element of the (n, channels, inner) views. mean and std are converted to the data's dtype on the
host and passed as tuples, one value per channel (or one for every channel)."""

from numba import cuda

from .launch import grid_1d


@cuda.jit(cache=True)
def _normalize_forward_kernel(x, mean, std, y):
    i = cuda.grid(1)
    channels, inner = x.shape[1], x.shape[2]
    if i < x.shape[0] * channels * inner:
        n, rest = i // (channels * inner), i % (channels * inner)
        c, p = rest // inner, rest % inner
        m = mean[c if len(mean) > 1 else 0]
        y[n, c, p] = (x[n, c, p] - m) / std[c if len(std) > 1 else 0]


@cuda.jit(cache=True)
def _normalize_backward_kernel(dy, std, dx):
    i = cuda.grid(1)
    channels, inner = dy.shape[1], dy.shape[2]
    if i < dy.shape[0] * channels * inner:
        n, rest = i // (channels * inner), i % (channels * inner)
        c, p = rest // inner, rest % inner
        dx[n, c, p] = dy[n, c, p] / std[c if len(std) > 1 else 0]


# ---- host side ----


def _typed(values, dtype):
    return tuple(dtype.type(v) for v in values)


def normalize_forward(x, mean, std, y):
    """y[n, c, i] = (x[n, c, i] - mean[c]) / std[c]; x and y are (n, channels, inner)."""
    blocks, threads = grid_1d(x.size)
    _normalize_forward_kernel[blocks, threads](x, _typed(mean, x.dtype), _typed(std, x.dtype), y)


def normalize_backward(dy, std, dx):
    """dx[n, c, i] = dy[n, c, i] / std[c]; dy and dx are (n, channels, inner)."""
    blocks, threads = grid_1d(dy.size)
    _normalize_backward_kernel[blocks, threads](dy, _typed(std, dy.dtype), dx)
