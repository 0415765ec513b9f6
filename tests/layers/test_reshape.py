"""Flatten: gradient checks, PyTorch parity (nn.Flatten) and CPU-vs-CUDA agreement (a copy:
bit for bit)."""

import pytest
from cuda_helpers import CUDA_WARNINGS
from harness import check_layer, grid

import fastnet as fn

pytestmark = CUDA_WARNINGS


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 5), (6,)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flatten(shape, dtype):
    features = 1
    for size in shape:
        features *= size
    report = check_layer(lambda: [fn.Flatten(), fn.Dense(3)], shape, 2, dtype=dtype,
                         torch_net=lambda nn: [nn.Flatten(), nn.Linear(features, 3)])
    assert report["model"].plan.nodes[0].shape == (features,)


@pytest.mark.parametrize("shape, device, dtype", grid([(2, 2, 3), (3, 2)], cuda=(0,), ids=str))
def test_flatten_alone(shape, device, dtype):
    report = check_layer(fn.Flatten, shape, 2, device=device, dtype=dtype, exact=True,
                         torch_net=lambda nn: [nn.Flatten()])
    assert report["model"].output_shape == (shape[0] * shape[1] * (shape[2] if len(shape) == 3 else 1),)
