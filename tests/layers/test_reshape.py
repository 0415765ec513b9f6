"""Flatten and Reshape: gradient checks, PyTorch parity (nn.Flatten) and CPU-vs-CUDA agreement (a copy:
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



# (per-sample input shape, Reshape's shape, the output shape it must give)
RESHAPES = [((1, 4, 3), (4, 3), (4, 3)), ((6,), (2, -1), (2, 3)), ((2, 3, 2), (-1,), (12,))]


@pytest.mark.parametrize("case, device, dtype", grid(RESHAPES, cuda=(0,), ids=lambda c: f"{c[0]}-{c[1]}"))
def test_reshape(case, device, dtype):
    # A copy in torch's x.reshape(N, *shape) order: bit for bit on both devices.
    shape, to, out = case

    def torch_reshape(nn):
        class Reshape(nn.Module):
            def forward(self, x):
                return x.reshape(x.shape[0], *to)
        return [Reshape()]

    report = check_layer(lambda: fn.Reshape(to), shape, 2, device=device, dtype=dtype, exact=True,
                         torch_net=torch_reshape)
    assert report["model"].output_shape == out


@pytest.mark.parametrize("shape, message", [((3, 0), "positive ints"), ((-1, -1), "at most one -1"),
                                            ("28", "tuple of positive ints")])
def test_reshape_bad_shape(shape, message):
    with pytest.raises(fn.errors.ShapeError, match=message):
        fn.Reshape(shape)


def test_reshape_of_the_wrong_size_is_refused_at_compile():
    with pytest.raises(fn.errors.ShapeError, match=r"cannot reshape a per-sample shape \(1, 28, 28\)"):
        fn.Sequential([fn.Reshape((28, 27))]).compile((1, 28, 28), 2)
