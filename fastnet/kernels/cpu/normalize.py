"""Input normalisation (the Normalize layer): y = (x - mean[c]) / std[c] over (n, channels, inner)
views, as torchvision's Normalize. mean and std are tuples of one float per channel, or of one for
every channel; they are converted to the data's dtype, so float32 data is normalised in float32.
"""

from numba import njit, prange


@njit(cache=True, parallel=True)
def normalize_forward(x, mean, std, y):
    """y[n, c, i] = (x[n, c, i] - mean[c]) / std[c]; x and y are (n, channels, inner)."""
    channels, inner = x.shape[1], x.shape[2]
    for row in prange(x.shape[0] * channels):
        n, c = row // channels, row % channels
        m = x.dtype.type(mean[c if len(mean) > 1 else 0])
        s = x.dtype.type(std[c if len(std) > 1 else 0])
        for i in range(inner):
            y[n, c, i] = (x[n, c, i] - m) / s


@njit(cache=True, parallel=True)
def normalize_backward(dy, std, dx):
    """dx[n, c, i] = dy[n, c, i] / std[c]; dy and dx are (n, channels, inner)."""
    channels, inner = dy.shape[1], dy.shape[2]
    for row in prange(dy.shape[0] * channels):
        n, c = row // channels, row % channels
        s = dy.dtype.type(std[c if len(std) > 1 else 0])
        for i in range(inner):
            dx[n, c, i] = dy[n, c, i] / s
