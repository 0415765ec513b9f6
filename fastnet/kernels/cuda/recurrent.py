"""Recurrent layers (RNN, LSTM, GRU) on the GPU: the CPU kernels' names, arguments and algorithm
(kernels/cpu/recurrent.py's docstring: shapes, gate orders, what the workspaces keep, truncation).

    input projection   gates (N*T, G*H) = x (N*T, F) @ w_ih.T          one tiled GEMM (gemm.py)
    per step           rec (N, G*H) = h_{t-1} @ w_hh.T                 _step_product, one thread per entry
                       the gate pass                                    one thread per (sample, hidden unit)
    backward, per step the gate pass in reverse, then d(gates_t) @ w_hh (_step_product)
    after the loop     dW_ih = d(gates).T @ x, dW_hh = d(gates).T @ h_prev, dx = d(gates) @ w_ih: GEMMs;
                       db: dense's column sums
The step's product reads h_{t-1} (or d(gates_t)) in place inside the (N, T, ...) workspaces, which
no 3-D view of gemm's can (a strided device view cannot be reshaped), so it is its own small
kernel: a plain dot product per entry of (N, G*H) (or (N, H)), the reduction in order, as thin as
the product is. The gate math is recurrence.py's, compiled as device functions; tanh is math.tanh
(the GPU's), the sigmoid (1 + tanh(a / 2)) / 2 as on the CPU. No workspace beyond the CPU's but the
CPU's products' scratch (w_hh_t, partial_ih, partial_hh).
"""

import math

from numba import cuda

from .. import recurrence
from .dense import bias_backward
from .gemm import gemm
from .launch import grid_1d

_lstm_cell_backward = cuda.jit(device=True, cache=True)(recurrence.lstm_cell_backward)
_gru_cell_backward = cuda.jit(device=True, cache=True)(recurrence.gru_cell_backward)
_rnn_cell_backward = cuda.jit(device=True, cache=True)(recurrence.rnn_cell_backward)


@cuda.jit(device=True, cache=True)
def _sigmoid(a, half):
    return half + half * math.tanh(half * a)


@cuda.jit(cache=True)
def _step_product_kernel(a, t, w, out, transpose, keep):
    """out[n, c] = sum_k a[n, t, k] w[c, k] (transpose: the forward's h @ w.T), or
    sum_k a[n, t, k] w[k, c]; 0 where not keep (the state cut before step t)."""
    i = cuda.grid(1)
    if i < out.size:
        n = i // out.shape[1]
        c = i % out.shape[1]
        acc = out.dtype.type(0)
        if keep:
            for k in range(a.shape[2]):
                acc += a[n, t, k] * (w[c, k] if transpose else w[k, c])
        out[n, c] = acc


@cuda.jit(cache=True)
def _step_into_kernel(a, t, w, out):
    """out[n, t, c] = sum_k a[n, t, k] w[c, k]."""
    i = cuda.grid(1)
    if i < out.shape[0] * out.shape[2]:
        n = i // out.shape[2]
        c = i % out.shape[2]
        acc = out.dtype.type(0)
        for k in range(a.shape[2]):
            acc += a[n, t, k] * w[c, k]
        out[n, t, c] = acc


@cuda.jit(cache=True)
def _fill_step_kernel(a, t, value):
    """a[:, t, :] = value."""
    i = cuda.grid(1)
    if i < a.shape[0] * a.shape[2]:
        a[i // a.shape[2], t, i % a.shape[2]] = value


@cuda.jit(cache=True)
def _lstm_step_kernel(gates, rec, b_ih, b_hh, cells, hprev, y, t, skip):
    i = cuda.grid(1)
    N, T, G = gates.shape
    H = G // 4
    if i < N * H:
        n = i // H
        j = i % H
        half = gates.dtype.type(0.5)
        first = t == 0
        zero = gates.dtype.type(0)
        gi = _sigmoid(gates[n, t, j] + b_ih[j] + b_hh[j] + (zero if first else rec[n, j]), half)
        gf = _sigmoid(gates[n, t, H + j] + b_ih[H + j] + b_hh[H + j] + (zero if first else rec[n, H + j]), half)
        gg = math.tanh(gates[n, t, 2 * H + j] + b_ih[2 * H + j] + b_hh[2 * H + j]
                       + (zero if first else rec[n, 2 * H + j]))
        go = _sigmoid(gates[n, t, 3 * H + j] + b_ih[3 * H + j] + b_hh[3 * H + j]
                      + (zero if first else rec[n, 3 * H + j]), half)
        c = gf * cells[n, t, j] + gi * gg
        gates[n, t, j] = gi
        gates[n, t, H + j] = gf
        gates[n, t, 2 * H + j] = gg
        gates[n, t, 3 * H + j] = go
        cells[n, t + 1, j] = c
        h = go * math.tanh(c)
        if first:
            hprev[n, 0, j] = zero
        if t + 1 < T:
            hprev[n, t + 1, j] = h
        if t >= skip:
            y[n, t - skip, j] = h


@cuda.jit(cache=True)
def _lstm_step_backward_kernel(gates, cells, dy, dh, dc, t, skip, keep):
    i = cuda.grid(1)
    N, T, G = gates.shape
    H = G // 4
    if i < N * H:
        n = i // H
        j = i % H
        one = gates.dtype.type(1)
        zero = gates.dtype.type(0)
        g_h = dy[n, t - skip, j] if t >= skip else zero
        g_c = zero
        if t < T - 1:
            g_h += dh[n, j]
            g_c = dc[n, j]
        d_i, d_f, d_g, d_o, dc_prev = _lstm_cell_backward(
            gates[n, t, j], gates[n, t, H + j], gates[n, t, 2 * H + j], gates[n, t, 3 * H + j],
            math.tanh(cells[n, t + 1, j]), cells[n, t, j], g_h, g_c, one)
        gates[n, t, j] = d_i
        gates[n, t, H + j] = d_f
        gates[n, t, 2 * H + j] = d_g
        gates[n, t, 3 * H + j] = d_o
        dc[n, j] = dc_prev if keep else zero


@cuda.jit(cache=True)
def _gru_step_kernel(gates, hidden, b_ih, b_hh, hprev, y, t, skip):
    i = cuda.grid(1)
    N, T, G = gates.shape
    H = G // 3
    if i < N * H:
        n = i // H
        j = i % H
        one = gates.dtype.type(1)
        half = gates.dtype.type(0.5)
        zero = gates.dtype.type(0)
        first = t == 0
        h_prev = zero if first else hprev[n, t, j]
        r = _sigmoid(gates[n, t, j] + b_ih[j] + (zero if first else hidden[n, t, j]) + b_hh[j], half)
        z = _sigmoid(gates[n, t, H + j] + b_ih[H + j] + (zero if first else hidden[n, t, H + j]) + b_hh[H + j],
                     half)
        hn = (zero if first else hidden[n, t, 2 * H + j]) + b_hh[2 * H + j]
        g = math.tanh(gates[n, t, 2 * H + j] + b_ih[2 * H + j] + r * hn)
        gates[n, t, j] = r
        gates[n, t, H + j] = z
        gates[n, t, 2 * H + j] = g
        hidden[n, t, 2 * H + j] = hn
        h = (one - z) * g + z * h_prev
        if first:
            hprev[n, 0, j] = zero
        if t + 1 < T:
            hprev[n, t + 1, j] = h
        if t >= skip:
            y[n, t - skip, j] = h


@cuda.jit(cache=True)
def _gru_step_backward_kernel(gates, hidden, hprev, dy, dh, carry, t, skip, keep):
    i = cuda.grid(1)
    N, T, G = gates.shape
    H = G // 3
    if i < N * H:
        n = i // H
        j = i % H
        one = gates.dtype.type(1)
        zero = gates.dtype.type(0)
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
        carry[n, j] = direct if keep else zero


@cuda.jit(cache=True)
def _rnn_step_kernel(gates, rec, b_ih, b_hh, relu, hprev, y, t, skip):
    i = cuda.grid(1)
    N, T, H = gates.shape
    if i < N * H:
        n = i // H
        j = i % H
        zero = gates.dtype.type(0)
        a = gates[n, t, j] + b_ih[j] + b_hh[j] + (zero if t == 0 else rec[n, j])
        h = (a if a > zero else zero) if relu else math.tanh(a)
        gates[n, t, j] = h
        if t == 0:
            hprev[n, 0, j] = zero
        if t + 1 < T:
            hprev[n, t + 1, j] = h
        if t >= skip:
            y[n, t - skip, j] = h


@cuda.jit(cache=True)
def _rnn_step_backward_kernel(gates, dy, dh, relu, t, skip):
    i = cuda.grid(1)
    N, T, H = gates.shape
    if i < N * H:
        n = i // H
        j = i % H
        one = gates.dtype.type(1)
        zero = gates.dtype.type(0)
        g_h = dy[n, t - skip, j] if t >= skip else zero
        if t < T - 1:
            g_h += dh[n, j]
        gates[n, t, j] = _rnn_cell_backward(gates[n, t, j], g_h, relu, zero, one)


# ---- host side ----


def lstm_workspace_shapes(steps, features, hidden):
    """name -> per-sample shape of the workspaces the LSTM kernels take (the CPU's, less its
    products' scratch)."""
    return {"gates": (steps, 4 * hidden), "hprev": (steps, hidden), "cells": (steps + 1, hidden),
            "rec": (4 * hidden,), "dh": (hidden,), "dc": (hidden,)}


def gru_workspace_shapes(steps, features, hidden):
    """name -> per-sample shape of the workspaces the GRU kernels take."""
    return {"gates": (steps, 3 * hidden), "hprev": (steps, hidden), "hidden": (steps, 3 * hidden),
            "dh": (hidden,), "carry": (hidden,)}


def rnn_workspace_shapes(steps, features, hidden):
    """name -> per-sample shape of the workspaces the RNN kernels take."""
    return {"gates": (steps, hidden), "hprev": (steps, hidden), "rec": (hidden,), "dh": (hidden,)}


def _flat3(a):
    """A C-contiguous (N, T, W) device array as (1, N*T, W): a view."""
    return a.reshape(1, a.shape[0] * a.shape[1], a.shape[2])


def _as3(a):
    return a.reshape(1, a.shape[0], a.shape[1])


def _step_product(a, t, w, out, transpose, keep=True):
    blocks, threads = grid_1d(out.size)
    _step_product_kernel[blocks, threads](a, t, w, out, transpose, keep)


def _project(x, w_ih, gates):
    gemm(_flat3(x), _as3(w_ih), _flat3(gates), trans_b=True)


def _cut(t, T, truncate):
    return t == 0 or (truncate > 0 and (T - t) % truncate == 0)


def _weight_gradients(x, w_ih, d_ih, d_hh, hprev, dx, dw_ih, dw_hh, db_ih, db_hh):
    N, T, F = x.shape
    gemm(_flat3(d_ih), _flat3(x), _as3(dw_ih), trans_a=True)
    gemm(_flat3(d_hh), _flat3(hprev), _as3(dw_hh), trans_a=True)
    bias_backward(d_ih.reshape(N * T, d_ih.shape[2]), db_ih)
    bias_backward(d_hh.reshape(N * T, d_hh.shape[2]), db_hh)
    if dx is not None:
        gemm(_flat3(d_ih), _as3(w_ih), _flat3(dx))


def _zero_cells(cells):
    blocks, threads = grid_1d(cells.shape[0] * cells.shape[2])
    _fill_step_kernel[blocks, threads](cells, 0, cells.dtype.type(0))


def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, y, gates, hprev, cells, rec):
    """As the CPU's lstm_forward."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    _project(x, w_ih, gates)
    _zero_cells(cells)
    blocks, threads = grid_1d(N * H)
    for t in range(T):
        if t > 0:
            _step_product(hprev, t, w_hh, rec, True)
        _lstm_step_kernel[blocks, threads](gates, rec, b_ih, b_hh, cells, hprev, y, t, T - y.shape[1])


def lstm_backward(x, w_ih, w_hh, dy, dx, dw_ih, dw_hh, db_ih, db_hh, truncate, gates, hprev, cells, dh, dc):
    """As the CPU's lstm_backward."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    blocks, threads = grid_1d(N * H)
    for t in range(T - 1, -1, -1):
        keep = not _cut(t, T, truncate)
        _lstm_step_backward_kernel[blocks, threads](gates, cells, dy, dh, dc, t, T - dy.shape[1], keep)
        _step_product(gates, t, w_hh, dh, False, keep)
    _weight_gradients(x, w_ih, gates, gates, hprev, dx, dw_ih, dw_hh, db_ih, db_hh)


def gru_forward(x, w_ih, w_hh, b_ih, b_hh, y, gates, hprev, hidden):
    """As the CPU's gru_forward."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    _project(x, w_ih, gates)
    blocks, threads = grid_1d(N * H)
    for t in range(T):
        if t > 0:
            _step_into(hprev, t, w_hh, hidden)
        _gru_step_kernel[blocks, threads](gates, hidden, b_ih, b_hh, hprev, y, t, T - y.shape[1])


def _step_into(a, t, w, out):
    blocks, threads = grid_1d(out.shape[0] * out.shape[2])
    _step_into_kernel[blocks, threads](a, t, w, out)


def gru_backward(x, w_ih, w_hh, dy, dx, dw_ih, dw_hh, db_ih, db_hh, truncate, gates, hprev, hidden, dh, carry):
    """As the CPU's gru_backward."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    blocks, threads = grid_1d(N * H)
    for t in range(T - 1, -1, -1):
        keep = not _cut(t, T, truncate)
        _gru_step_backward_kernel[blocks, threads](gates, hidden, hprev, dy, dh, carry, t, T - dy.shape[1], keep)
        _step_product(hidden, t, w_hh, dh, False, keep)
    _weight_gradients(x, w_ih, gates, hidden, hprev, dx, dw_ih, dw_hh, db_ih, db_hh)


def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, relu, y, gates, hprev, rec):
    """As the CPU's rnn_forward."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    _project(x, w_ih, gates)
    blocks, threads = grid_1d(N * H)
    for t in range(T):
        if t > 0:
            _step_product(hprev, t, w_hh, rec, True)
        _rnn_step_kernel[blocks, threads](gates, rec, b_ih, b_hh, bool(relu), hprev, y, t, T - y.shape[1])


def rnn_backward(x, w_ih, w_hh, relu, dy, dx, dw_ih, dw_hh, db_ih, db_hh, truncate, gates, hprev, dh):
    """As the CPU's rnn_backward."""
    N, T, _ = x.shape
    H = w_hh.shape[1]
    blocks, threads = grid_1d(N * H)
    for t in range(T - 1, -1, -1):
        _rnn_step_backward_kernel[blocks, threads](gates, dy, dh, bool(relu), t, T - dy.shape[1])
        _step_product(gates, t, w_hh, dh, False, not _cut(t, T, truncate))
    _weight_gradients(x, w_ih, gates, gates, hprev, dx, dw_ih, dw_hh, db_ih, db_hh)
