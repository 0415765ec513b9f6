"""Losses with PyTorch's reductions: cross-entropy (softmax fused, mean over the batch,
integer labels) and MSE (mean over every element). Forward kernels return the summed loss;
the caller divides, so the mean is over the rows actually present in a smaller last batch.

Workspace (cross_entropy_workspace_shapes): `probs`, the softmax the forward writes and the
backward reads. MSE needs none.
"""

from numba import njit, prange

from .activation import softmax_row


def cross_entropy_workspace_shapes(classes):
    """name -> per-sample shape: `probs`, one softmax row per sample."""
    return {"probs": (classes,)}


@njit(cache=True)
def cross_entropy_forward(logits, labels, probs):
    """probs = softmax(logits) row-wise; returns sum_n -log softmax(logits[n])[labels[n]].

    log-sum-exp with the row maximum subtracted, so large logits neither overflow nor
    lose the loss to log(0).
    """
    total = 0.0
    for n in range(logits.shape[0]):
        total += softmax_row(logits, n, probs) - logits[n, labels[n]]
    return total


@njit(cache=True, parallel=True)
def cross_entropy_backward(labels, scale, dlogits, probs):
    """dlogits = scale * (probs - onehot(labels)); scale is 1 / batch rows for the mean."""
    s = probs.dtype.type(scale)
    for n in prange(probs.shape[0]):
        for j in range(probs.shape[1]):
            dlogits[n, j] = probs[n, j] * s
        dlogits[n, labels[n]] -= s


@njit(cache=True)
def mse_forward(pred, target):
    """Returns sum (pred - target)^2 over flat views."""
    total = 0.0
    for i in range(pred.size):
        d = pred[i] - target[i]
        total += d * d
    return total


@njit(cache=True, parallel=True)
def mse_backward(pred, target, scale, dpred):
    """dpred = scale * 2 (pred - target); scale is 1 / element count for the mean."""
    s = pred.dtype.type(2.0 * scale)
    for i in prange(pred.size):
        dpred[i] = s * (pred[i] - target[i])


@njit(cache=True)
def count_correct(scores, labels):
    """How many rows have their largest score at the label (first maximum wins, as argmax)."""
    correct = 0
    for n in range(scores.shape[0]):
        best = 0
        for j in range(1, scores.shape[1]):
            if scores[n, j] > scores[n, best]:
                best = j
        if best == labels[n]:
            correct += 1
    return correct
