"""The backward of one time step of the recurrent cells (RNN, LSTM, GRU) for one hidden unit,
written once as plain Python for both devices (compiled as elementwise.py's functions are:
`njit(inline="always")` on the CPU, `cuda.jit(device=True)` on CUDA). The forward equations are
PyTorch's (torch.nn.LSTM, torch.nn.GRU), with s the logistic sigmoid and ' the previous step:

    LSTM  i = s(a_i)  f = s(a_f)  g = tanh(a_g)  o = s(a_o)  c = f c' + i g   h = o tanh(c)
    GRU   r = s(a_r)  z = s(a_z)  n = tanh(a_n + r hn)  with hn = W_hn h' + b_hn
          h = (1 - z) n + z h'
    RNN   h = tanh(a) or max(a, 0)

(a: the pre-activations, the input projection, the recurrent product and both biases summed). The
forward passes compute them in the kernels themselves, each device with its own tanh (the CPU's
float32 one a rational approximation that vectorises, kernels/cpu/recurrent.py); what they keep
(the activated gates, tanh(c) recomputed by the same function) is what these functions take.
Each returns the gradients with respect to the pre-activations (what the weight-gradient products
and the recurrent product take) and the gradient that flows into the previous step's state
directly (not through W_hh). `one` and `zero` are 1 and 0 in the data's dtype (a bare 1 would turn
float32 arithmetic into float64). They call no other function: a device function compiled from
plain Python cannot call a plain Python function.
"""


def lstm_cell_backward(i, f, g, o, tc, c_prev, dh, dc, one):
    """tc = tanh(c); dh, dc: the gradients of the loss with respect to this step's h and c (dc: what
    flows back from the next step's cell). -> (da_i, da_f, da_g, da_o, dc_prev)."""
    dc = dc + dh * o * (one - tc * tc)
    return (dc * g * i * (one - i), dc * c_prev * f * (one - f), dc * i * (one - g * g),
            dh * tc * o * (one - o), dc * f)


def gru_cell_backward(r, z, n, hn, h_prev, dh, one):
    """-> (da_r, da_z, da_n, dhn, dh_prev): da_n the gradient of the n gate's input side (and of
    b_in), dhn = da_n r that of W_hn h' + b_hn; dh_prev the direct path z dh."""
    da_n = dh * (one - z) * (one - n * n)
    return (da_n * hn * r * (one - r), dh * (h_prev - n) * z * (one - z), da_n, da_n * r, dh * z)


def rnn_cell_backward(h, dh, relu, zero, one):
    """The gradient of the pre-activation from the output h and its gradient dh (relu: 0 at 0, as
    PyTorch)."""
    if relu:
        return dh if h > zero else zero
    return dh * (one - h * h)
