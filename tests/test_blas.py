"""The matrix products the CPU kernels make: NumPy's OpenBLAS through CBLAS (blas.matmul) and the
np.dot fallback (matmul.matmul_dot), on every layout the kernels pass, against NumPy."""

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastnet as fn
from fastnet.kernels.cpu import blas, matmul


def layouts(rng, dtype):
    """(name, a, b) pairs: C- and F-ordered operands, row blocks, a block of columns."""
    a, b = rng.normal(size=(7, 5)).astype(dtype), rng.normal(size=(5, 4)).astype(dtype)
    wide = rng.normal(size=(9, 6)).astype(dtype)
    yield "C @ C", a, b
    yield "F @ C", np.asfortranarray(a), b
    yield "C @ F (a transposed view)", a, rng.normal(size=(4, 5)).astype(dtype).T
    yield "F @ F", rng.normal(size=(5, 7)).astype(dtype).T, rng.normal(size=(4, 5)).astype(dtype).T
    yield "row block", wide[2:7, 1:6].copy()[:, :5], b      # contiguous rows of a larger matrix
    yield "rows with a stride", wide[::2, :5], b             # row stride 12, not 5
    yield "columns of a wider matrix", wide[:5, 1:6].T, b[:, :4][:5]
    yield "one column", a, b[:, :1].copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("product", ["blas", "dot"])
def test_products_match_numpy_on_every_layout(product, dtype):
    if product == "blas" and not blas.AVAILABLE:
        pytest.skip("NumPy here has no bundled OpenBLAS: the kernels use np.dot")
    rng = np.random.default_rng(0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name, a, b in layouts(rng, dtype):
        if product == "dot" and not (a.flags.c_contiguous or a.flags.f_contiguous):
            continue                                  # np.dot in Numba would copy such an operand
        c = np.full((a.shape[0], b.shape[1]), np.nan, dtype)
        (blas.matmul if product == "blas" else matmul.matmul_dot)(a, b, c)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.skipif(not blas.AVAILABLE, reason="NumPy here has no bundled OpenBLAS")
def test_blas_products_into_rows_of_a_larger_output_and_of_empty_shapes():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 5))
    out = np.zeros((6, 8))
    blas.matmul(a, b, out[1:4, 2:7])                    # rows of out with stride 8: ldc = 8
    expected = np.zeros((6, 8))
    expected[1:4, 2:7] = a @ b
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    empty = np.zeros((0, 5))
    blas.matmul(np.zeros((0, 4)), b, empty)             # nothing to do, nothing touched
    c = np.full((3, 5), np.nan)
    blas.matmul(np.zeros((3, 0)), np.zeros((0, 5)), c)  # an empty sum is 0
    assert (c == 0).all()
    with pytest.raises(ValueError, match="unit stride"):
        blas.matmul(rng.normal(size=(6, 6))[::2, ::2], rng.normal(size=(3, 2)), np.zeros((3, 2)))


@pytest.mark.skipif(not blas.AVAILABLE, reason="NumPy here has no bundled OpenBLAS")
def test_the_kernels_run_numpys_blas_on_one_thread_and_the_model_gives_its_threads_back():
    def numpys():
        return [d["num_threads"] for d in threadpool_info()
                if d["user_api"] == "blas" and os.path.realpath(d["filepath"]) == blas.LIBRARY]
    original = blas.get_threads()
    assert numpys() == [original]
    blas.set_threads(2)                               # any count but 1, even on a 1-core machine
    try:
        blas.matmul(np.ones((8, 8)), np.ones((8, 8)), np.zeros((8, 8)))
        assert numpys() == [1]                        # a kernel's product: one thread
        blas.set_threads(2)
        model = fn.models.mlp(hidden=(8,), input_shape=(1, 4, 4)).compile(batch_size=4)
        x, y = np.ones((4, 1, 4, 4), np.float32), np.arange(4)
        model.train_step(x, y)
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
        model.predict(x)
        assert numpys() == [2]                        # the program's count, back after each
    finally:
        blas.set_threads(original)
