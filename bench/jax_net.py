"""The benchmark's chain networks in JAX (jit-compiled, CPU), an optional peer: built from a fastnet
model's layer list and state_dict as bench/numpy_net.py is (the same networks as the torch twins,
the same weights); softmax cross-entropy; SGD with momentum as torch.optim.SGD does it
(v = momentum * v + g; p -= lr * v). Needs `pip install jax` (jax[cpu]); nothing else imports it.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _conv(pad):
    def forward(params, x):
        w, b = params
        y = jax.lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]
    return forward


def _dense(params, x):
    w, b = params
    return x.reshape(len(x), -1) @ w.T + b


def _relu(params, x):
    return jnp.maximum(x, 0)


def _maxpool2(params, x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def _layers(fastnet_model):
    """[(forward(params, x), params)] of the model's chain, params a tuple of jnp arrays."""
    state = fastnet_model.state_dict()
    layers = []
    for i, layer in enumerate(fastnet_model.network.layers):
        kind = type(layer).__name__
        weights = (jnp.asarray(state[f"{i}.weight"]), jnp.asarray(state[f"{i}.bias"])) \
            if kind in ("Conv2D", "Dense") else ()
        if kind == "Conv2D":
            if layer.stride != (1, 1) or layer.padding[0] != layer.padding[1]:
                raise ValueError("jax_net's Conv2D has stride 1 and equal padding")
            layers.append((_conv(layer.padding[0]), weights))
        elif kind == "Dense":
            layers.append((_dense, weights))
        elif kind == "ReLU":
            layers.append((_relu, weights))
        elif kind == "MaxPool2D":
            layers.append((_maxpool2, weights))
        elif kind != "Flatten":                  # Dense flattens its input itself
            raise ValueError(f"jax_net has no {kind}")
    return layers


class Net:
    """predict(x) and train_step(x, y) (returns the loss before the update) on NumPy batches."""

    def __init__(self, fastnet_model, lr=0.01, momentum=0.9):
        layers = _layers(fastnet_model)
        forwards = [forward for forward, _ in layers]
        self.params = [params for _, params in layers]
        self.velocity = jax.tree_util.tree_map(jnp.zeros_like, self.params)

        def predict(params, x):
            for forward, p in zip(forwards, params):
                x = forward(p, x)
            return x

        def loss(params, x, y):
            logits = predict(params, x)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1).mean()

        def step(params, velocity, x, y):
            value, grads = jax.value_and_grad(loss)(params, x, y)
            velocity = jax.tree_util.tree_map(lambda v, g: momentum * v + g, velocity, grads)
            params = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity)
            return params, velocity, value

        self._predict = jax.jit(predict)
        self._step = jax.jit(step, donate_argnums=(0, 1))

    def predict(self, x):
        return np.asarray(self._predict(self.params, x))

    def train_step(self, x, y):
        self.params, self.velocity, loss = self._step(self.params, self.velocity, x, y)
        return float(loss)
