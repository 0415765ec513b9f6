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

Workspaces (<cell>_workspace_shapes, per sample): gates (T, G*H); hprev (T, H); LSTM: cells (T, H)
the cell states, rec (G*H) one step's recurrent product, dh and dc (H) the gradients carried to
the previous step; GRU: hidden (T, G*H) the recurrent products (their n part is W_hn h + b_hn,
which the backward needs; the backward overwrites them with d(W_hh h + b_hh)), dh and carry (H);
RNN: rec, dh. And whole (no batch axis): partial_ih, partial_hh, the weight-gradient products'
per-thread sums (matmul_tn).
"""

from numba import njit, prange

from .. import recurrence
from ..workspace import WorkspaceSpec
from .dense import bias_backward
from .matmul import BLOCKS, MIN_ROWS, matmul, matmul_rows, matmul_tn, partial_sums_shape

_lstm_cell = njit(cache=True, inline="always")(recurrence.lstm_cell)
_lstm_cell_backward = njit(cache=True, inline="always")(recurrence.lstm_cell_backward)
_gru_cell = njit(cache=True, inline="always")(recurrence.gru_cell)
_gru_cell_backward = njit(cache=True, inline="always")(recurrence.gru_cell_backward)
_rnn_cell = njit(cache=True, inline="always")(recurrence.rnn_cell)
_rnn_cell_backward = njit(cache=True, inline="always")(recurrence.rnn_cell_backward)


def _partials(gates, features, hidden):
    return {"partial_ih": WorkspaceSpec(partial_sums_shape((gates, features)), per_sample=False),
            "partial_hh": WorkspaceSpec(partial_sums_shape((gates, hidden)), per_sample=False)}


def lstm_workspace_shapes(steps, features, hidden):
    """name -> shape of the workspaces the LSTM kernels take (see the module's docstring)."""
    return {"gates": (steps, 4 * hidden), "hprev": (steps, hidden), "cells": (steps, hidden),
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
def _cut(t, T, truncate):
    """Whether no gradient flows from step t into step t-1 (the module's docstring)."""
    return t == 0 or (truncate > 0 and (T - t) % truncate == 0)


@njit(cache=True)
def _weight_gradients(x, w_ih, d_ih, d_hh, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh):
    """After the time loop: d_ih (N, T, G*H) the gradients of the gates' input side, d_hh those of
    their recurrent side (the same array but for the GRU)."""
    N, T, F = x.shape
    gi = _flat(d_ih, 0, N)
    gh = _flat(d_hh, 0, N)
    matmul_tn(gi, _flat(x, 0, N), dw_ih, partial_ih)
    matmul_tn(gh, _flat(hprev, 0, N), dw_hh, partial_hh)
    bias_backward(gi, db_ih)
    bias_backward(gh, db_hh)
    if dx is not None:
        matmul_rows(gi, w_ih, dx.reshape(N * T, F))


# ---- LSTM


@njit(cache=True, parallel=True)
def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, y, gates, hprev, cells, rec):
    """y = the hidden states of the last y.shape[1] steps of torch.nn.LSTM(batch_first=True) from
    zero initial states."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - y.shape[1]
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        _project(x, w_ih, gates, r0, r1)
        for t in range(T):
            if t > 0:
                matmul(hprev[r0:r1, t], w_hh.T, rec[r0:r1])
            for n in range(r0, r1):
                for j in range(H):
                    a_i = gates[n, t, j] + b_ih[j] + b_hh[j]
                    a_f = gates[n, t, H + j] + b_ih[H + j] + b_hh[H + j]
                    a_g = gates[n, t, 2 * H + j] + b_ih[2 * H + j] + b_hh[2 * H + j]
                    a_o = gates[n, t, 3 * H + j] + b_ih[3 * H + j] + b_hh[3 * H + j]
                    c_prev = zero
                    if t > 0:
                        a_i += rec[n, j]
                        a_f += rec[n, H + j]
                        a_g += rec[n, 2 * H + j]
                        a_o += rec[n, 3 * H + j]
                        c_prev = cells[n, t - 1, j]
                    i, f, g, o, c, h = _lstm_cell(a_i, a_f, a_g, a_o, c_prev, one)
                    gates[n, t, j] = i
                    gates[n, t, H + j] = f
                    gates[n, t, 2 * H + j] = g
                    gates[n, t, 3 * H + j] = o
                    cells[n, t, j] = c
                    if t == 0:
                        hprev[n, 0, j] = zero
                    if t + 1 < T:
                        hprev[n, t + 1, j] = h
                    if t >= skip:
                        y[n, t - skip, j] = h


@njit(cache=True, parallel=True)
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
        for t in range(T - 1, -1, -1):
            for n in range(r0, r1):
                for j in range(H):
                    g_h = dy[n, t - skip, j] if t >= skip else zero
                    g_c = zero
                    if t < T - 1:                     # what flows back from step t + 1
                        g_h += dh[n, j]
                        g_c = dc[n, j]
                    c_prev = cells[n, t - 1, j] if t > 0 else zero
                    d_i, d_f, d_g, d_o, dc_prev = _lstm_cell_backward(
                        gates[n, t, j], gates[n, t, H + j], gates[n, t, 2 * H + j], gates[n, t, 3 * H + j],
                        cells[n, t, j], c_prev, g_h, g_c, one)
                    gates[n, t, j] = d_i
                    gates[n, t, H + j] = d_f
                    gates[n, t, 2 * H + j] = d_g
                    gates[n, t, 3 * H + j] = d_o
                    dc[n, j] = zero if _cut(t, T, truncate) else dc_prev
            if not _cut(t, T, truncate):
                matmul(gates[r0:r1, t], w_hh, dh[r0:r1])
            else:
                dh[r0:r1] = zero
    _weight_gradients(x, w_ih, gates, gates, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh)


# ---- GRU


@njit(cache=True, parallel=True)
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, y, gates, hprev, hidden):
    """y = the hidden states of the last y.shape[1] steps of torch.nn.GRU(batch_first=True) from a
    zero initial state."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - y.shape[1]
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        _project(x, w_ih, gates, r0, r1)
        for t in range(T):
            if t > 0:
                matmul(hprev[r0:r1, t], w_hh.T, hidden[r0:r1, t])
            else:
                hidden[r0:r1, 0] = zero
                hprev[r0:r1, 0] = zero
            for n in range(r0, r1):
                for j in range(H):
                    a_r = gates[n, t, j] + b_ih[j] + hidden[n, t, j] + b_hh[j]
                    a_z = gates[n, t, H + j] + b_ih[H + j] + hidden[n, t, H + j] + b_hh[H + j]
                    a_n = gates[n, t, 2 * H + j] + b_ih[2 * H + j]
                    hn = hidden[n, t, 2 * H + j] + b_hh[2 * H + j]
                    r, z, g, h = _gru_cell(a_r, a_z, a_n, hn, hprev[n, t, j], one)
                    gates[n, t, j] = r
                    gates[n, t, H + j] = z
                    gates[n, t, 2 * H + j] = g
                    hidden[n, t, 2 * H + j] = hn
                    if t + 1 < T:
                        hprev[n, t + 1, j] = h
                    if t >= skip:
                        y[n, t - skip, j] = h


@njit(cache=True, parallel=True)
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
        for t in range(T - 1, -1, -1):
            for n in range(r0, r1):
                for j in range(H):
                    g_h = dy[n, t - skip, j] if t >= skip else zero
                    if t < T - 1:
                        g_h += dh[n, j] + carry[n, j]
                    d_r, d_z, d_n, d_hn, direct = _gru_cell_backward(
                        gates[n, t, j], gates[n, t, H + j], gates[n, t, 2 * H + j], hidden[n, t, 2 * H + j],
                        hprev[n, t, j], g_h, one)
                    gates[n, t, j] = d_r
                    gates[n, t, H + j] = d_z
                    gates[n, t, 2 * H + j] = d_n
                    hidden[n, t, j] = d_r
                    hidden[n, t, H + j] = d_z
                    hidden[n, t, 2 * H + j] = d_hn
                    carry[n, j] = zero if _cut(t, T, truncate) else direct
            if not _cut(t, T, truncate):
                matmul(hidden[r0:r1, t], w_hh, dh[r0:r1])
            else:
                dh[r0:r1] = zero
    _weight_gradients(x, w_ih, gates, hidden, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh)


# ---- RNN


@njit(cache=True, parallel=True)
def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, relu, y, gates, hprev, rec):
    """y = the hidden states of the last y.shape[1] steps of torch.nn.RNN(batch_first=True,
    nonlinearity="relu" if relu else "tanh") from a zero initial state."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    skip = T - y.shape[1]
    zero = x.dtype.type(0)
    blocks = _blocks(N)
    for b in prange(blocks):
        r0 = N * b // blocks
        r1 = N * (b + 1) // blocks
        _project(x, w_ih, gates, r0, r1)
        for t in range(T):
            if t > 0:
                matmul(hprev[r0:r1, t], w_hh.T, rec[r0:r1])
            for n in range(r0, r1):
                for j in range(H):
                    a = gates[n, t, j] + b_ih[j] + b_hh[j]
                    if t > 0:
                        a += rec[n, j]
                    h = _rnn_cell(a, relu, zero)
                    gates[n, t, j] = h
                    if t == 0:
                        hprev[n, 0, j] = zero
                    if t + 1 < T:
                        hprev[n, t + 1, j] = h
                    if t >= skip:
                        y[n, t - skip, j] = h


@njit(cache=True, parallel=True)
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
        for t in range(T - 1, -1, -1):
            for n in range(r0, r1):
                for j in range(H):
                    g_h = dy[n, t - skip, j] if t >= skip else zero
                    if t < T - 1:
                        g_h += dh[n, j]
                    gates[n, t, j] = _rnn_cell_backward(gates[n, t, j], g_h, relu, zero, one)
            if not _cut(t, T, truncate):
                matmul(gates[r0:r1, t], w_hh, dh[r0:r1])
            else:
                dh[r0:r1] = zero
    _weight_gradients(x, w_ih, gates, gates, hprev, dx, dw_ih, dw_hh, db_ih, db_hh, partial_ih, partial_hh)
