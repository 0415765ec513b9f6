"""Add, Concat and Slice, the graph layers, in small fn.Graph networks: gradient checks (a tensor
read by several layers gets the sum of their gradients), PyTorch parity (+, torch.cat,
torch.split) and CPU-vs-CUDA agreement (the Tanh and Sigmoid around them round differently on a
GPU, so within the dtype's tolerance); then the kernels themselves, CUDA against the CPU bit for bit.

Whole graphs with parameters (fan-out into convolutions, residual blocks, resnet8) are in
tests/test_graph.py and tests/test_torch_parity.py."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, dev, empty, randn, same
from harness import check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS


def torch_function(forward):
    """A torch module without parameters computing forward(torch, x)."""
    def make(nn):
        import torch

        class Function(nn.Module):
            def forward(self, x):
                return forward(torch, x)

        return Function()
    return make


def add_net():
    # x is read by three layers and by the Add: its gradient is the sum of four
    x = fn.Input((2, 3, 3))
    t = fn.Tanh()(x)
    out = fn.Add()(x, t, fn.Sigmoid()(x))
    return fn.Graph(x, fn.Add()(out, t))


def concat_net():
    x = fn.Input((3, 2, 2))
    return fn.Graph(x, fn.Concat()(fn.Tanh()(x), x, fn.Sigmoid()(x)))       # 3 + 3 + 3 channels


def concat_rows_net():
    x = fn.Input((2, 3, 2))
    return fn.Graph(x, fn.Concat(axis=2)(x, fn.Tanh()(x)))                  # heights 3 + 3


def slice_net():
    # the second section is never read: its gradient is zero
    x = fn.Input((4, 2, 2))
    a, _, c = fn.Slice([1, 2, 1])(x)
    return fn.Graph(x, fn.Concat()(fn.Tanh()(c), a))


def slice_add_net():
    x = fn.Input((4, 3))
    a, b = fn.Slice([2, 2])(x)
    return fn.Graph(x, fn.Add()(fn.Sigmoid()(a), b, a))


def torch_add(torch, x):
    t = x.tanh()
    return x + t + x.sigmoid() + t


def torch_slice(torch, x):
    a, _, c = x.split([1, 2, 1], dim=1)
    return torch.cat([c.tanh(), a], dim=1)


def torch_slice_add(torch, x):
    a, b = x.split([2, 2], dim=1)
    return a.sigmoid() + b + a


CASES = [
    (add_net, torch_add),
    (concat_net, lambda torch, x: torch.cat([x.tanh(), x, x.sigmoid()], dim=1)),
    (concat_rows_net, lambda torch, x: torch.cat([x, x.tanh()], dim=2)),
    (slice_net, torch_slice),
    (slice_add_net, torch_slice_add),
]
IDS = ["add", "concat", "concat_axis2", "slice", "slice_add"]


@pytest.mark.parametrize("case, device, dtype", grid(CASES, cuda=(0, 1, 3), ids=IDS))
def test_merge(case, device, dtype):
    net, torch_forward = case
    report = check_layer(net, None, 2, device=device, dtype=dtype,
                         torch_net=torch_function(torch_forward))
    assert report["checked"] in (None, 0)                  # no parameters: the input gradient


def test_merge_in_a_smaller_last_batch():
    check_layer(slice_net, None, 3, rows=2, torch_net=torch_function(torch_slice))


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------

def test_merge_kernels():
    # Kernel against kernel, bit for bit (test_merge compares the devices within tolerance: the
    # Tanh and Sigmoid around the layers round differently), and fill, which Slice's backward and
    # the model's gradient buffers use.
    rng = np.random.default_rng(18)
    dtype = np.float32
    a, b = randn(rng, 30, dtype), randn(rng, 30, dtype)
    y = np.empty_like(a)
    yg = empty(a.shape, dtype)
    for relu in (False, True):
        kc.add_forward(a, b, y, relu)
        kg.add_forward(dev(a), dev(b), yg, relu)
        same(yg, y)
        np.testing.assert_array_equal(y, np.maximum(a + b, 0) if relu else a + b)
    kc.accumulate(y, b)
    kg.accumulate(yg, dev(b))
    same(yg, y)
    kc.fill(y, 0.25)
    kg.fill(yg, 0.25)
    same(yg, y)
    src = randn(rng, (2, 3, 4), dtype)
    dst0 = randn(rng, (2, 5, 4), dtype)
    for accumulate in (False, True):
        dst = dst0.copy()
        kc.copy_channels(src, 1, dst, 2, 2, accumulate)
        dstg = dev(dst0)
        kg.copy_channels(dev(src), 1, dstg, 2, 2, accumulate)
        same(dstg, dst)
