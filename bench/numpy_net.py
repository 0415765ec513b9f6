"""The benchmark networks in plain NumPy, the way a from-scratch tutorial (cs231n) writes them:
vectorised im2col convolution, reshape max pooling, dense layers, softmax cross-entropy, SGD with
momentum. A peer for the benchmark, not part of fastnet; it starts from the same weights.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Conv:
    def __init__(self, w, b, pad):
        self.w, self.b, self.pad = w, b, pad

    def forward(self, x):
        p = self.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        O, C, KH, KW = self.w.shape
        windows = sliding_window_view(xp, (KH, KW), axis=(2, 3))      # N, C, OH, OW, KH, KW
        N, _, OH, OW = windows.shape[:4]
        self.cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * KH * KW)
        self.x_shape = x.shape
        out = self.cols @ self.w.reshape(O, -1).T + self.b
        return out.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)

    def backward(self, dy):
        O, C, KH, KW = self.w.shape
        N, _, OH, OW = dy.shape
        d = dy.transpose(0, 2, 3, 1).reshape(-1, O)
        self.dw = (d.T @ self.cols).reshape(self.w.shape)
        self.db = d.sum(axis=0)
        dcols = (d @ self.w.reshape(O, -1)).reshape(N, OH, OW, C, KH, KW)
        p = self.pad
        H, W = self.x_shape[2] + 2 * p, self.x_shape[3] + 2 * p
        dxp = np.zeros((N, C, H, W), dy.dtype)
        for kh in range(KH):                                            # col2im, one offset at a time
            for kw in range(KW):
                dxp[:, :, kh:kh + OH, kw:kw + OW] += dcols[:, :, :, :, kh, kw].transpose(0, 3, 1, 2)
        return dxp[:, :, p:H - p, p:W - p]

    def params(self):
        return [(self.w, "dw"), (self.b, "db")]


class Dense:
    def __init__(self, w, b):
        self.w, self.b = w, b

    def forward(self, x):
        self.x_shape = x.shape
        self.x = x.reshape(len(x), -1)
        return self.x @ self.w.T + self.b

    def backward(self, dy):
        self.dw = dy.T @ self.x
        self.db = dy.sum(axis=0)
        return (dy @ self.w).reshape(self.x_shape)

    def params(self):
        return [(self.w, "dw"), (self.b, "db")]


class ReLU:
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask

    def params(self):
        return []


class MaxPool2:
    def forward(self, x):
        N, C, H, W = x.shape
        windows = x[:, :, :H // 2 * 2, :W // 2 * 2].reshape(N, C, H // 2, 2, W // 2, 2)
        out = windows.max(axis=(3, 5))
        self.mask = windows == out[:, :, :, None, :, None]
        self.x_shape = x.shape
        return out

    def backward(self, dy):
        N, C, H, W = self.x_shape
        d = self.mask * dy[:, :, :, None, :, None]
        dx = np.zeros(self.x_shape, dy.dtype)
        dx[:, :, :H // 2 * 2, :W // 2 * 2] = d.reshape(N, C, H // 2 * 2, W // 2 * 2)
        return dx

    def params(self):
        return []


class Net:
    """Built from a fastnet model's layer list and state_dict (same architecture, same weights)."""

    def __init__(self, fastnet_model, lr=0.01, momentum=0.9):
        state = fastnet_model.state_dict()
        self.layers = []
        for i, layer in enumerate(fastnet_model.network.layers):
            kind = type(layer).__name__
            if kind == "Conv2D":
                self.layers.append(Conv(state[f"{i}.weight"], state[f"{i}.bias"], layer.padding[0]))
            elif kind == "Dense":
                self.layers.append(Dense(state[f"{i}.weight"], state[f"{i}.bias"]))
            elif kind == "ReLU":
                self.layers.append(ReLU())
            elif kind == "MaxPool2D":
                self.layers.append(MaxPool2())
            elif kind != "Flatten":                  # Dense flattens its input itself
                raise ValueError(f"numpy_net has no {kind}")
        self.lr, self.momentum = lr, momentum
        self.velocity = {id(p): np.zeros_like(p) for layer in self.layers for p, _ in layer.params()}

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def train_step(self, x, y):
        logits = self.predict(x)
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        loss = -np.log(probs[np.arange(len(y)), y]).mean()
        d = probs
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        for layer in reversed(self.layers):
            d = layer.backward(d)
        for layer in self.layers:
            for p, grad_name in layer.params():
                v = self.velocity[id(p)]
                v *= self.momentum
                v += getattr(layer, grad_name)
                p -= self.lr * v
        return float(loss)
