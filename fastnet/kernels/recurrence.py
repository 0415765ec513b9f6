"""The per-element math of one time step of the recurrent cells (RNN, LSTM, GRU), forward and
backward, written once as plain Python for both devices (compiled as elementwise.py's functions
are: `njit(inline="always")` on the CPU, `cuda.jit(device=True)` on CUDA).

Each function takes one hidden unit j of one sample at one step: the gate pre-activations (the
input projection, the recurrent product and both biases already summed by the caller), the
previous state, and `one`, 1 in the data's dtype (a bare 1 would turn float32 arithmetic into
float64). PyTorch's equations (torch.nn.LSTM, torch.nn.GRU):

    LSTM  i = s(a_i)  f = s(a_f)  g = tanh(a_g)  o = s(a_o)  c = f c' + i g   h = o tanh(c)
    GRU   r = s(a_r)  z = s(a_z)  n = tanh(a_n + r (W_hn h' + b_hn))          h = (1 - z) n + z h'

with s the logistic sigmoid, computed as s(a) = (1 + tanh(a / 2)) / 2 (the same function, which
never overflows and has no branch; the functions here call no others, since a device function
compiled from plain Python cannot call a plain Python function), and ' the previous step. The
backward functions return the gradients with respect to the pre-activations (what the
weight-gradient products and the recurrent product take) and the gradient that flows into the
previous step's state directly (not through W_hh).
"""

import math


def lstm_cell(a_i, a_f, a_g, a_o, c_prev, one):
    """-> (i, f, g, o, c, h): the activated gates, the new cell state and the new hidden state."""
    half = one / (one + one)
    i = half + half * math.tanh(half * a_i)
    f = half + half * math.tanh(half * a_f)
    g = math.tanh(a_g)
    o = half + half * math.tanh(half * a_o)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * math.tanh(c)


def lstm_cell_backward(i, f, g, o, c, c_prev, dh, dc, one):
    """dh, dc: the gradients of the loss with respect to this step's h and c (dc: what flows back
    from the next step's cell). -> (da_i, da_f, da_g, da_o, dc_prev)."""
    tc = math.tanh(c)
    dc = dc + dh * o * (one - tc * tc)
    return (dc * g * i * (one - i), dc * c_prev * f * (one - f), dc * i * (one - g * g),
            dh * tc * o * (one - o), dc * f)


def gru_cell(a_r, a_z, a_n, hn, h_prev, one):
    """a_n: the input side of the n gate only (W_in x + b_in); hn = W_hn h' + b_hn, which r scales.
    -> (r, z, n, h)."""
    half = one / (one + one)
    r = half + half * math.tanh(half * a_r)
    z = half + half * math.tanh(half * a_z)
    n = math.tanh(a_n + r * hn)
    return r, z, n, (one - z) * n + z * h_prev


def gru_cell_backward(r, z, n, hn, h_prev, dh, one):
    """-> (da_r, da_z, da_n, dhn, dh_prev): da_n the gradient of the n gate's input side (and of
    b_in), dhn = da_n r that of W_hn h' + b_hn; dh_prev the direct path z dh."""
    da_n = dh * (one - z) * (one - n * n)
    return (da_n * hn * r * (one - r), dh * (h_prev - n) * z * (one - z), da_n, da_n * r, dh * z)


def rnn_cell(a, relu, zero):
    """h = tanh(a), or max(a, 0) where relu (zero: 0 in the data's dtype)."""
    if relu:
        return a if a > zero else zero
    return math.tanh(a)


def rnn_cell_backward(h, dh, relu, zero, one):
    """The gradient of the pre-activation from the output h and its gradient dh (relu: 0 at 0, as
    PyTorch)."""
    if relu:
        return dh if h > zero else zero
    return dh * (one - h * h)
