"""Recurrent layers (RNN, LSTM, GRU) with explicit backpropagation through time, batch-first.

Shapes: x (N, T, F); weights in PyTorch's layout, w_ih (G*H, F), w_hh (G*H, H), b_ih and b_hh
(G*H,), with G gates stacked in PyTorch's order (RNN 1; LSTM 4: i, f, g, o; GRU 3: r, z, n).
y (N, Ty, H) receives the hidden states of the last Ty steps: Ty = T for the whole sequence, 1 for
the last step only (the layer passes its (N, H) output as (N, 1, H)); dy likewise.

Forward, per block of rows (samples are independent, so each thread owns a block of rows for the
whole sequence and the threads never wait for each other):
  1. gates = x @ w_ih.T for all T steps as one BLAS product ((rows*T, F) @ (F, G*H));
  2. step by step, the recurrent product h_{t-1} @ w_hh.T ((rows, H) @ (H, G*H), BLAS reading
     h_{t-1} in place in the `hprev` workspace), then one pass over the hidden units that adds both
     biases and the product, applies the gate nonlinearities and the cell update (recurrence.py),
     and keeps what the backward needs (the activated gates, in place in `gates`; the cell states).
Backward, the same blocks, in reverse time: one pass per step turns the gradients of h (and c)
into the gradients of the gate pre-activations, written in place over the gates (`gates` becomes
d(gates)), then the recurrent product d(gates_t) @ w_hh gives the gradient that flows into step
t-1. The weight gradients are sums over every (sample, step): after the time loop, each is one
product over all N*T rows, dW_ih = d(gates).T @ x and dW_hh = d(gates).T @ h_prev (`hprev`
holds h_{t-1} at step t, 0 at step 0, laid out as x is, so no copies); db the column sums; dx
= d(gates) @ w_ih.

Truncated backpropagation through time (truncate = k > 0): no gradient flows from step s into
step s-1 where (T - s) is a multiple of k, as if the state were detached there (PyTorch's
h.detach()): the sequence is cut into chunks of k steps counted back from the last step, and each
output's gradient reaches back to the start of its chunk at most (the last output exactly k steps).
truncate = 0: the full backpropagation through time.

The gate nonlinearities: sigmoid(a) = (1 + tanh(a / 2)) / 2 (the same function, no overflow, no
branch), and tanh through `_tanh`: in float32 a rational approximation (Eigen's, as PyTorch's CPU
kernels use; within a few units in the last place) whose loop over the hidden units LLVM
vectorises (0.5 ns an element against 14.6 ns for the C library's tanhf called per element:
bench/NOTES.md, lstm); in float64 math.tanh.

Workspaces (<cell>_workspace_shapes, per sample): gates (T, G*H); hprev (T, H); LSTM: cells
(T + 1, H) the cell states, c_{t-1} at t (0 at 0), rec (G*H) one step's recurrent product, dh
and dc (H) the gradients carried to the previous step; GRU: hidden (T, G*H) the recurrent
products (their n part is W_hn h + b_hn, which the backward needs; the backward overwrites them
with d(W_hh h + b_hh)), dh and carry (H);
RNN: rec, dh. And whole (no batch axis): w_hh_t (H, G*H), w_hh.T copied once per forward (the
forward's step products read it); partial_ih, partial_hh, the weight-gradient products'
per-thread sums (matmul_tn).
"""

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .. import recurrence
from ..workspace import WorkspaceSpec
from .matmul import BLOCKS, MIN_ROWS, matmul, matmul_rows, matmul_tn, partial_sums_shape

_lstm_cell_backward = njit(cache=True, inline="always")(recurrence.lstm_cell_backward)
_gru_cell_backward = njit(cache=True, inline="always")(recurrence.gru_cell_backward)
_rnn_cell_backward = njit(cache=True, inline="always")(recurrence.rnn_cell_backward)

# Eigen's generic_fast_tanh_float: tanh(x) = x p(x^2) / q(x^2) on [-CLAMP, CLAMP], where tanh is
# +-1 to float32's precision beyond.
_CLAMP = np.float32(7.90531110763549805)
_ALPHA = tuple(np.float32(a) for a in (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
                                       5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
                                       -2.76076847742355e-16))
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = _ALPHA
_B0, _B2, _B4, _B6 = (np.float32(b) for b in (4.89352518554385e-03, 2.26843463243900e-03,
                                              1.18534705686654e-04, 1.19825839466702e-06))


def _tanh(x):
    """tanh(x) in x's dtype (see the module's docstring)."""
    return math.tanh(x)


@overload(_tanh, inline="always")
def _tanh_typed(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def rational(x):
            x = min(max(x, -_CLAMP), _CLAMP)
            x2 = x * x
            p = x2 * _A13 + _A11
            p = x2 * p + _A9
            p = x2 * p + _A7
            p = x2 * p + _A5
            p = x2 * p + _A3
            p = x2 * p + _A1
            q = x2 * _B6 + _B4
            q = x2 * q + _B2
            q = x2 * q + _B0
            return x * p / q
        return rational
    return lambda x: math.tanh(x)


@njit(cache=True, inline="always")
def _sigmoid(a, half):
    return half + half * _tanh(half * a)


def _partials(gates, features, hidden):
    return {"w_hh_t": WorkspaceSpec((hidden, gates), per_sample=False),
            "partial_ih": WorkspaceSpec(partial_sums_shape((gates, features)), per_sample=False),
            "partial_hh": WorkspaceSpec(partial_sums_shape((gates, hidden)), per_sample=False)}


def lstm_workspace_shapes(steps, features, hidden):
    """name -> shape of the workspaces the LSTM kernels take (see the module's docstring)."""
    return {"gates": (steps, 4 * hidden), "hprev": (steps, hidden), "cells": (steps + 1, hidden),
            "rec": (4 * hidden,), "dh": (hidden,), "dc": (hidden,), **_partials(4 * hidden, features, hidden)}


def gru_workspace_shapes(steps, features, hidden):
    """name -> shape of the workspaces the GRU kernels take (see the module's docstring)."""
    return {"gates": (steps, 3 * hidden), "hprev": (steps, hidden), "hidden": (steps, 3 * hidden),
            "dh": (hidden,), "carry": (hidden,), **_partials(3 * hidden, features, hidden)}


def rnn_workspace_shapes(steps, features, hidden):
    """name -> shape of the workspaces the RNN kernels take (see the module's docstring)."""
    return {"gates": (steps, hidden), "hprev": (steps, hidden), "rec": (hidden,), "dh": (hidden,),
            **_partials(hidden, features, hidden)}


@njit(cache=True)
def _blocks(rows):
    """How many blocks of rows the threads take: one per thread, at least MIN_ROWS rows each."""
    return max(1, min(BLOCKS, rows // MIN_ROWS))


@njit(cache=True)
def _flat(a, r0, r1):
    """Rows r0:r1 of a C-contiguous (N, T, W) array as one (rows*T, W) matrix (a view)."""
    T, W = a.shape[1], a.shape[2]
    return a.reshape(-1)[r0 * T * W:r1 * T * W].reshape((r1 - r0) * T, W)


@njit(cache=True)
def _project(x, w_ih, gates, r0, r1):
    """gates[r0:r1] = x[r0:r1] @ w_ih.T for every step at once."""
    matmul(_flat(x, r0, r1), w_ih.T, _flat(gates, r0, r1))


@njit(cache=True)
def _transpose(w, w_t):
    """w_t = w.T as a C-contiguous copy: OpenBLAS ran the step's thin product h @ w_hh.T 1.5x
    faster with the weights so than reading the transposed view (bench/NOTES.md, lstm)."""
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            w_t[j, i] = w[i, j]


@njit(cache=True)
def _cut(t, T, truncate):
    """Whether no gradient flows from step t into step t-1 (the module's docstring)."""
    return t == 0 or (truncate > 0 and (T - t) % truncate == 0)


@njit(cache=True)
def _state_out(hprev, y, n, t, skip):
    """Where step t writes sample n's hidden state: hprev[n, t + 1] (the next step's input), or at
    the last step y's last row. _copy_out then copies it to y where y keeps step t."""
    T = hprev.shape[1]
    return hprev[n, t + 1] if t + 1 < T else y[n, T - 1 - skip]


@njit(cache=True)
def _copy_out(hprev, y, n, t, skip):
    T = hprev.shape[1]
    if skip <= t < T - 1:
        y[n, t - skip] = hprev[n, t + 1]


@njit(cache=True)
def _take_dy(dy, dh, n, t, skip):
    """dh[n] += dy[n] at step t, where dy has that step."""
    if t >= skip:
        for j in range(dh.shape[1]):
            dh[n, j] += dy[n, t - skip, j]


@njit(cache=True)
def _column_sums(g, db):
    """db[j] = sum_r g[r, j], in row order: each row read once, contiguously. A sum per column
    reading down the columns, as dense's bias_backward does over its (batch, features), missed the
    cache on every element of these tall (N*T, G*H) matrices: 5.9 ms against 0.14 ms at N = 64,
    T = 28, G*H = 512 (fastest of 30, one thread). One thread: so little work is not worth a
    parallel region (bench/NOTES.md, lstm)."""
    db[:] = 0
    for r in range(g.shape[0]):
        for j in range(g.shape[1]):
            db[j] += g[r, j]


@njit(cache=True)
def _weight_gradients(x, w_ih, d_ih, d_hh, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh):
    """After the time loop: d_ih (N, T, G*H) the gradients of the gates' input side, d_hh those of
    their recurrent side (the same array but for the GRU)."""
    N, T, F = x.shape
    gi = _flat(d_ih, 0, N)
    gh = _flat(d_hh, 0, N)
    matmul_tn(gi, _flat(x, 0, N), dw_ih, partial_ih)
    matmul_tn(gh, _flat(hprev, 0, N), dw_hh, partial_hh)
    _column_sums(gi, db_ih)
    _column_sums(gh, db_hh)
    if dx is not None:
        matmul_rows(gi, w_ih, dx.reshape(N * T, F))


# ---- LSTM


@njit(cache=True, parallel=True, error_model="numpy")
def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, y, gates, hprev, cells, rec, w_hh_t):
    """y = the hidden states of the last y.shape[1] steps of torch.nn.LSTM(batch_first=True) from
    zero initial states."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - y.shape[1]
    half = x.dtype.type(0.5)
    zero = x.dtype.type(0)
    _transpose(w_hh, w_hh_t)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        _project(x, w_ih, gates, r0, r1)
        hprev[r0:r1, 0] = zero
        cells[r0:r1, 0] = zero
        rec[r0:r1] = zero
        for t in range(T):
            if t > 0:
                matmul(hprev[r0:r1, t], w_hh_t, rec[r0:r1])
            for n in range(r0, r1):
                gate = gates[n, t]
                prod = rec[n]
                c_prev = cells[n, t]
                c_out = cells[n, t + 1]
                h_out = _state_out(hprev, y, n, t, skip)
                # one loop per kind of work, each over contiguous entries (LLVM vectorises these;
                # one loop doing all four gates at offsets j, H + j, ... of one row it did not)
                for j in range(4 * H):
                    gate[j] += b_ih[j] + b_hh[j] + prod[j]
                for j in range(2 * H):
                    gate[j] = _sigmoid(gate[j], half)
                for j in range(2 * H, 3 * H):
                    gate[j] = _tanh(gate[j])
                for j in range(3 * H, 4 * H):
                    gate[j] = _sigmoid(gate[j], half)
                for j in range(H):
                    c_out[j] = gate[H + j] * c_prev[j] + gate[j] * gate[2 * H + j]
                for j in range(H):
                    h_out[j] = gate[3 * H + j] * _tanh(c_out[j])
                _copy_out(hprev, y, n, t, skip)


@njit(cache=True, parallel=True, error_model="numpy")
def lstm_backward(x, w_ih, w_hh, dy, dx, dw_ih, dw_hh, db_ih, db_hh, truncate,
                  gates, hprev, cells, dh, dc, partial_ih, partial_hh):
    """The gradients of lstm_forward's inputs (dx: None where not needed) and weights from dy, the
    gradient of its y; truncate: see the module's docstring. Reads the workspaces lstm_forward
    wrote for the same x and overwrites `gates`."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - dy.shape[1]
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        dh[r0:r1] = zero                   # nothing flows back into the last step
        dc[r0:r1] = zero
        for t in range(T - 1, -1, -1):
            keep = zero if _cut(t, T, truncate) else one     # 0 where the state is cut before step t
            for n in range(r0, r1):
                _take_dy(dy, dh, n, t, skip)
                gate = gates[n, t]
                c_prev = cells[n, t]
                c_now = cells[n, t + 1]
                dhn = dh[n]
                dcn = dc[n]
                for j in range(H):
                    d_i, d_f, d_g, d_o, dc_prev = _lstm_cell_backward(
                        gate[j], gate[H + j], gate[2 * H + j], gate[3 * H + j], _tanh(c_now[j]), c_prev[j],
                        dhn[j], dcn[j], one)
                    gate[j] = d_i
                    gate[H + j] = d_f
                    gate[2 * H + j] = d_g
                    gate[3 * H + j] = d_o
                    dcn[j] = keep * dc_prev
            if not _cut(t, T, truncate):
                matmul(gates[r0:r1, t], w_hh, dh[r0:r1])
            else:
                dh[r0:r1] = zero
    _weight_gradients(x, w_ih, gates, gates, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh)


# ---- GRU


@njit(cache=True, parallel=True, error_model="numpy")
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, y, gates, hprev, hidden, w_hh_t):
    """y = the hidden states of the last y.shape[1] steps of torch.nn.GRU(batch_first=True) from a
    zero initial state."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - y.shape[1]
    one = x.dtype.type(1)
    half = x.dtype.type(0.5)
    zero = x.dtype.type(0)
    _transpose(w_hh, w_hh_t)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        _project(x, w_ih, gates, r0, r1)
        hprev[r0:r1, 0] = zero
        hidden[r0:r1, 0] = zero
        for t in range(T):
            if t > 0:
                matmul(hprev[r0:r1, t], w_hh_t, hidden[r0:r1, t])
            for n in range(r0, r1):
                gate = gates[n, t]
                prod = hidden[n, t]
                h_prev = hprev[n, t]
                h_out = _state_out(hprev, y, n, t, skip)
                for j in range(H):
                    r = _sigmoid(gate[j] + b_ih[j] + prod[j] + b_hh[j], half)
                    z = _sigmoid(gate[H + j] + b_ih[H + j] + prod[H + j] + b_hh[H + j], half)
                    hn = prod[2 * H + j] + b_hh[2 * H + j]
                    g = _tanh(gate[2 * H + j] + b_ih[2 * H + j] + r * hn)
                    gate[j] = r
                    gate[H + j] = z
                    gate[2 * H + j] = g
                    prod[2 * H + j] = hn
                    h_out[j] = (one - z) * g + z * h_prev[j]
                _copy_out(hprev, y, n, t, skip)


@njit(cache=True, parallel=True, error_model="numpy")
def gru_backward(x, w_ih, w_hh, dy, dx, dw_ih, dw_hh, db_ih, db_hh, truncate,
                 gates, hprev, hidden, dh, carry, partial_ih, partial_hh):
    """The gradients of gru_forward's inputs (dx: None where not needed) and weights from dy;
    truncate: see the module's docstring. Overwrites `gates` with the gradients of the gates'
    input side, `hidden` with those of their recurrent side (they differ in the n gate)."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - dy.shape[1]
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        dh[r0:r1] = zero
        carry[r0:r1] = zero
        for t in range(T - 1, -1, -1):
            keep = zero if _cut(t, T, truncate) else one
            for n in range(r0, r1):
                _take_dy(dy, dh, n, t, skip)
                gate = gates[n, t]
                prod = hidden[n, t]
                h_prev = hprev[n, t]
                dhn = dh[n]
                direct = carry[n]
                for j in range(H):
                    d_r, d_z, d_n, d_hn, d_direct = _gru_cell_backward(
                        gate[j], gate[H + j], gate[2 * H + j], prod[2 * H + j], h_prev[j], dhn[j] + direct[j], one)
                    gate[j] = d_r
                    gate[H + j] = d_z
                    gate[2 * H + j] = d_n
                    prod[j] = d_r
                    prod[H + j] = d_z
                    prod[2 * H + j] = d_hn
                    direct[j] = keep * d_direct
            if not _cut(t, T, truncate):
                matmul(hidden[r0:r1, t], w_hh, dh[r0:r1])
            else:
                dh[r0:r1] = zero
    _weight_gradients(x, w_ih, gates, hidden, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh)


# ---- RNN


@njit(cache=True, parallel=True, error_model="numpy")
def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, relu, y, gates, hprev, rec, w_hh_t):
    """y = the hidden states of the last y.shape[1] steps of torch.nn.RNN(batch_first=True,
    nonlinearity="relu" if relu else "tanh") from a zero initial state."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - y.shape[1]
    zero = x.dtype.type(0)
    _transpose(w_hh, w_hh_t)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        _project(x, w_ih, gates, r0, r1)
        hprev[r0:r1, 0] = zero
        rec[r0:r1] = zero
        for t in range(T):
            if t > 0:
                matmul(hprev[r0:r1, t], w_hh_t, rec[r0:r1])
            for n in range(r0, r1):
                gate = gates[n, t]
                prod = rec[n]
                h_out = _state_out(hprev, y, n, t, skip)
                if relu:
                    for j in range(H):
                        a = gate[j] + b_ih[j] + b_hh[j] + prod[j]
                        gate[j] = h_out[j] = max(a, zero)
                else:
                    for j in range(H):
                        gate[j] = h_out[j] = _tanh(gate[j] + b_ih[j] + b_hh[j] + prod[j])
                _copy_out(hprev, y, n, t, skip)


@njit(cache=True, parallel=True, error_model="numpy")
def rnn_backward(x, w_ih, w_hh, relu, dy, dx, dw_ih, dw_hh, db_ih, db_hh, truncate,
                 gates, hprev, dh, partial_ih, partial_hh):
    """The gradients of rnn_forward's inputs (dx: None where not needed) and weights from dy;
    truncate: see the module's docstring. Overwrites `gates`."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - dy.shape[1]
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        dh[r0:r1] = zero
        for t in range(T - 1, -1, -1):
            for n in range(r0, r1):
                _take_dy(dy, dh, n, t, skip)
                gate = gates[n, t]
                dhn = dh[n]
                for j in range(H):
                    gate[j] = _rnn_cell_backward(gate[j], dhn[j], relu, zero, one)
            if not _cut(t, T, truncate):
                matmul(gates[r0:r1, t], w_hh, dh[r0:r1])
            else:
                dh[r0:r1] = zero
    _weight_gradients(x, w_ih, gates, gates, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh)
