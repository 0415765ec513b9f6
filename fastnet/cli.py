"""Command line: `fastnet train` (train a network on an MNIST-like data set) and `fastnet info`."""

import argparse
import os
import platform
import sys
import time

from .errors import FastnetError


def info():
    """Versions, threads, cache, BLAS and CUDA: what decides how fast fastnet runs here."""
    import llvmlite
    import numba
    import numpy as np
    import scipy

    import fastnet
    from fastnet.kernels.cpu import relu_forward

    relu_forward(np.zeros(4, np.float32), np.zeros(4, np.float32))  # a parallel kernel, so the threading layer is chosen
    rows = [
        ("fastnet", fastnet.__version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("scipy", scipy.__version__),
        ("numba", numba.__version__),
        ("llvmlite", llvmlite.__version__),
        ("cpu cores", str(os.cpu_count())),
        ("numba threads", f"{numba.get_num_threads()} (NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})"),
        ("threading layer", numba.threading_layer()),
        ("blas threads", fastnet.threads.describe()),
        ("numba cache dir", numba.config.CACHE_DIR or "__pycache__ beside each kernel module"),
        ("blas", _blas()),
        ("cuda", _cuda()),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _blas():
    """The BLAS Numba calls is SciPy's (scipy.linalg.cython_blas)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        found = [f"{d['internal_api']} {d.get('version') or ''} ({d['num_threads']} threads, "
                 f"{os.path.basename(d['filepath'])})" for d in threadpool_info() if d["user_api"] == "blas"]
        if found:
            return "; ".join(found)
    import scipy
    config = scipy.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', 'unknown')} {blas.get('version', '')} (scipy)".strip()


def _cuda():
    try:
        from numba import cuda
        if not cuda.is_available():
            return "not available (no CUDA driver or GPU found)"
        device = cuda.get_current_device()
        return f"available: {device.name.decode() if isinstance(device.name, bytes) else device.name}"
    except Exception as err:  # any failure to probe means CUDA is not usable here
        return f"not available ({type(err).__name__}: {err})"


MODELS = {"mlp": "mlp", "lenet": "lenet5", "lenet5": "lenet5", "cnn": "cnn"}


def train(args):
    """Train a zoo model on an MNIST-like data set and report the test accuracy."""
    import fastnet as fn

    (x_train, y_train), (x_test, y_test) = fn.datasets.load(args.dataset)
    # Standardise with the training set's statistics, as torchvision's Normalize is used.
    mean, std = float(x_train.mean()), float(x_train.std())
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    network = getattr(fn.models, MODELS[args.model])(classes=classes)
    if args.optimizer == "sgd":
        optimizer = fn.SGD(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    elif args.optimizer == "adam":
        optimizer = fn.Adam(lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = fn.AdamW(lr=args.lr, weight_decay=args.weight_decay)
    start = time.perf_counter()
    model = network.compile(x_train.shape[1:], args.batch_size, optimizer=optimizer, seed=args.seed)
    print(f"{args.model} on {args.dataset}: {len(x_train)} training and {len(x_test)} test images, "
          f"{sum(p.size for p in model.parameters().values())} parameters, "
          f"compiled in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    model.fit(x_train, y_train, epochs=args.epochs, validation_data=(x_test, y_test), verbose=1)
    result = model.evaluate(x_test, y_test)
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"({time.perf_counter() - start:.1f} s in all)")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnet", description="JIT-compiled CNN/MLP training engine")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, threads, cache dir, BLAS, CUDA")
    t = commands.add_parser("train", help="train a network on an MNIST-like data set",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--model", choices=sorted(MODELS), default="cnn")
    t.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, mnist, kmnist, or a folder holding the four IDX files")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--momentum", type=float, default=0.9, help="SGD only")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            info()
        elif args.command == "train":
            train(args)
    except FastnetError as err:
        print(f"fastnet: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
