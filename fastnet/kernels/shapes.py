"""Output sizes of the windowed ops, written once for the layers and both kernel sets.

A window of `kernel` cells moved by `stride` over a `size`-cell axis padded by `padding` on each
side (PyTorch's conv2d and pooling with ceil_mode=False and dilation 1) has
    (size + 2 * padding - kernel) // stride + 1
positions: a non-positive number where the window does not fit the padded axis.
"""


def window_count(size, kernel, stride, padding):
    """Positions of the window along one axis (< 1: it does not fit)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw):
    """(OH, OW) of a convolution or a pooling over an H x W image: a non-positive size where the
    window does not fit the padded image."""
    return window_count(H, KH, sh, ph), window_count(W, KW, sw, pw)


pool2d_output_hw = conv2d_output_hw     # the same windows (ceil_mode=False)
