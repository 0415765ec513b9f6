"""Dense: gradient checks, PyTorch parity (nn.Linear) and CPU-vs-CUDA agreement, with and without
bias, batch 1, one input feature, one output feature, and a layer wide enough that a small batch
is split over the output features on the CPU."""

import pytest
from harness import CUDA_WARNINGS, check_layer, grid

import fastnet as fn

pytestmark = CUDA_WARNINGS

# (batch, in features, out features, bias)
CASES = [(b, i, o, bias) for bias in (True, False) for i, o in [(5, 4), (1, 3), (7, 1), (3, 40)]
         for b in (1, 3)]
CUDA = [CASES.index(c) for c in [(3, 5, 4, True), (1, 7, 1, False)]]


@pytest.mark.parametrize("case, device, dtype", grid(CASES, CUDA, ids=lambda c: "b{}-in{}-out{}-{}".format(
    *c[:3], "bias" if c[3] else "nobias")))
def test_dense(case, device, dtype):
    batch, features, out, bias = case
    report = check_layer(lambda: fn.Dense(out, bias=bias), (features,), batch, device=device, dtype=dtype,
                         torch_net=lambda nn: [nn.Linear(features, out, bias=bias)])
    assert report["checked"] == (None if dtype == "float32" else 2 if bias else 1)
    assert list(report["model"].parameters()) == (["0.weight", "0.bias"] if bias else ["0.weight"])
