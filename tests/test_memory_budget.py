"""Compile's memory budget (issue 16): the estimate from the shapes, checked before anything is
allocated, and refused with the figures."""

import time
import tracemalloc

import numpy as np
import pytest

import fastnet as fn
from fastnet.plan import available_memory, estimate_memory, format_bytes, parse_memory


def test_a_network_that_cannot_fit_is_refused_at_once_without_allocating():
    net = fn.Sequential([fn.Flatten(), fn.Dense(10**9)])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(fn.MemoryBudgetError) as caught:
            net.compile((1, 28, 28), 64)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 5 and peak < 50 * 2**20, (seconds, peak)
    err = caught.value
    assert isinstance(err, MemoryError) and isinstance(err, fn.FastnetError)
    # 784 x 10**9 float32 weights are 2.9 TiB on their own
    assert "parameters 2.9 TiB" in str(err) and " TiB at batch 64, " in str(err) and "available" in str(err)


def test_max_memory_is_the_limit_when_given():
    with pytest.raises(fn.MemoryBudgetError, match=r"needs \d+\.\d MiB at batch 32, max_memory is 100\.0 KiB"):
        fn.models.mlp().compile((1, 28, 28), 32, max_memory="100KiB")
    model = fn.models.mlp().compile((1, 28, 28), 32, max_memory=2**30)
    assert model.memory_limit == (2**30, "max_memory is 1.0 GiB")


@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 * 2**30), ("512 MiB", 512 * 2**20), ("1.5TiB", int(1.5 * 2**40)), ("4GB", 4 * 10**9),
    ("500mb", 500 * 10**6), ("4G", 4 * 2**30), ("512m", 512 * 2**20), ("1000", 1000), (1000, 1000),
    (2.5e9, 2_500_000_000), (None, None)])
def test_max_memory_sizes(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["4 parsecs", "GiB", "-1GiB", "0", 0, -5, True, float("inf"), [4]])
def test_a_bad_max_memory_is_a_spec_error(bad):
    with pytest.raises(fn.SpecError, match="max_memory must be"):
        parse_memory(bad)


def test_format_bytes_uses_binary_units_with_one_decimal():
    assert [format_bytes(n) for n in (0, 512, 1536, 3 * 2**20, int(2.9 * 2**40))] == \
        ["0 B", "512 B", "1.5 KiB", "3.0 MiB", "2.9 TiB"]


def test_the_estimate_bounds_what_compile_allocates_and_summary_shows_it():
    model = fn.models.lenet5().compile((1, 28, 28), 32, optimizer=fn.Adam())
    plan, estimate = model.plan, model.memory_estimate
    assert estimate["parameters"] == estimate["gradients"] == plan.flat_params.nbytes
    assert estimate["optimizer"] == sum(a.nbytes for a in model.opt_state.values()) == 2 * plan.flat_params.nbytes
    assert estimate["activations"] >= plan.memory["activations"]
    assert estimate["activation_gradients"] >= plan.memory["gradients_unshared"] >= plan.memory["gradients"]
    workspaces = {id(a): a.nbytes for slot in plan.slots for a in slot.workspace.values()}
    assert estimate["workspaces"] >= sum(workspaces.values()) > 0
    assert estimate["total"] == sum(value for part, value in estimate.items() if part != "total")
    summary = model.summary()
    assert f"compile's memory estimate: {format_bytes(estimate['total'])} (" in summary
    assert "optimizer state " + format_bytes(estimate["optimizer"]) in summary


def test_optimizer_state_sizes():
    assert fn.SGD(lr=0.1).state_size(10) == 0
    assert fn.SGD(lr=0.1, momentum=0.9).state_size(10) == 10
    assert fn.Adam().state_size(10) == fn.AdamW().state_size(10) == 20


def test_the_estimate_counts_every_tensor_at_the_batch_and_parameters_once():
    import fastnet.kernels as kernels
    net = fn.Sequential([fn.Flatten(), fn.Dense(10**6)])
    input_node, nodes = net.nodes((1, 28, 28))
    small = estimate_memory(input_node, nodes, 8, np.float32, kernels.namespace("cpu"), fn.SGD(lr=0.1))
    large = estimate_memory(input_node, nodes, 16, np.float32, kernels.namespace("cpu"), fn.SGD(lr=0.1))
    assert small["parameters"] == large["parameters"] == (784 * 10**6 + 10**6) * 4
    assert large["activations"] == 2 * small["activations"] == 2 * 8 * (784 + 784 + 10**6) * 4   # input, Flatten, Dense


def test_the_memory_available_is_known_here():
    available, where = available_memory("cpu")
    assert available is not None and available > 2**20 and where == "available"
