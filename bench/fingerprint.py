"""A fixed-seed training run's fingerprint: SHA-256 of every parameter, buffer and optimizer state
after a few steps of each of several networks that between them use every layer, both losses,
every optimizer and augmentation. A refactor that must not change the arithmetic gives the same
hashes before and after (`python -m bench.fingerprint`; `--cuda` adds a run on Numba's CUDA
simulator, set NUMBA_ENABLE_CUDASIM=1).

Threads change the order of some sums: compare fingerprints taken with the same NUMBA_NUM_THREADS.
"""

import argparse
import hashlib

import numpy as np

import fastnet as fn


def _all_layers_graph():
    x = fn.Input((4, 8, 8))
    h = fn.Conv2D(8, 3, padding=1, name="c1")(x)
    h = fn.ReLU()(h)                                           # fused into c1
    h = fn.BatchNorm2D(name="bn")(fn.Conv2D(8, 3, stride=1, padding=1, bias=False)(h))
    a, b = fn.Slice([3, 5])(fn.LeakyReLU(0.1)(h))
    h = fn.Concat()(fn.Sigmoid()(a), fn.Tanh()(b))
    h = fn.Add()(h, fn.Conv2D(8, 1)(x))
    h = fn.AvgPool2D(3, stride=2, padding=1)(h)
    g = fn.GlobalAvgPool2D()(h)
    h = fn.MaxPool2D(2, padding=1)(h)
    h = fn.Dropout(0.25)(fn.Flatten()(h))
    h = fn.BatchNorm1D()(fn.Dense(16, bias=False)(h))
    h = fn.Concat(axis=1)(h, g)
    return fn.Graph(inputs=x, outputs=fn.Dense(10)(fn.ReLU()(h)))


def _softmax_mse_net():
    return fn.Sequential([fn.Flatten(), fn.Dense(12), fn.Tanh(), fn.Dense(5), fn.Softmax()])


def _hash(model):
    digest = hashlib.sha256()
    for name, array in model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    for name, array in model.opt_state.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(model.k.to_host(array)).tobytes())
    return digest.hexdigest()


def _images(rng, n, shape):
    return rng.standard_normal((n, *shape)).astype(np.float32)


def runs(cuda=False):
    """(label, model) after training, one per network and setting."""
    rng = np.random.default_rng(1234)
    out = []
    x = _images(rng, 200, (1, 28, 28))
    y = rng.integers(0, 10, 200)
    for label, net, opt in [("cnn adam", fn.models.cnn(), fn.Adam(lr=2e-3)),
                            ("lenet5 sgd nesterov", fn.models.lenet5(),
                             fn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)),
                            ("resnet8 adamw", fn.models.resnet8(), fn.AdamW(lr=1e-3)),
                            ("mlp sgd", fn.models.mlp(), fn.SGD(lr=0.1))]:
        model = net.compile((1, 28, 28), batch_size=32, optimizer=opt, seed=3)
        model.fit(x, y, epochs=2, verbose=0, augment=fn.data.Augment(pad=2, flip=True, seed=5),
                  schedule=fn.schedules.Cosine(lr=opt.lr, total_steps=14))
        out.append((label, model))
    xs = _images(rng, 96, (4, 8, 8))
    ys = rng.integers(0, 10, 96)
    for dtype in ("float32", "float64"):
        model = _all_layers_graph().compile(batch_size=16, optimizer=fn.AdamW(lr=1e-2), seed=7,
                                            dtype=dtype)
        model.fit(xs, ys, epochs=2, verbose=0)
        out.append((f"all layers {dtype}", model))
    targets = rng.random((96, 5)).astype(np.float32)
    model = _softmax_mse_net().compile((4, 8, 8), batch_size=20, loss="mse",
                                       optimizer=fn.SGD(lr=0.5, momentum=0.5), seed=2)
    model.fit(xs, targets, epochs=2, verbose=0)
    out.append(("softmax mse", model))
    if cuda:
        model = _all_layers_graph().compile(batch_size=8, optimizer=fn.Adam(lr=1e-2), seed=7,
                                            device="cuda")
        model.fit(xs[:16], ys[:16], epochs=1, verbose=0, augment=fn.data.Augment(pad=1, seed=2))
        out.append(("all layers cuda (simulator)", model))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="add a run on the CUDA device")
    args = parser.parse_args(argv)
    for label, model in runs(args.cuda):
        print(f"{_hash(model)}  {label}")


if __name__ == "__main__":
    main()
