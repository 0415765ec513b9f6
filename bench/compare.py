"""fastnet against PyTorch CPU and a plain NumPy implementation: same networks, same weights, same
batch, one process, same thread count; training steps and inference; the machine's SGEMM rate on
the networks' own GEMM shapes as the roofline; time to the first step with a cold and a warm cache.

    python -m bench                       # mlp, lenet5, cnn at batch 64 and 256; writes bench/RESULTS.md
    fastnet bench --models cnn --batches 64 --rounds 5 --json out.json

Each round times a burst of steps of every peer in turn, the order alternating between rounds;
a figure is the median over rounds of images/s. Ratios are fastnet / peer.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# torch first, as a user comparing the two would likely write it: fastnet must not depend on the
# import order (its one-pool threading, fastnet/threads.py, does not).
try:
    import torch
except ImportError:  # the fastnet figures are still worth having
    torch = None

import fastnet as fn  # noqa: E402

if __package__:
    from . import numpy_net
    torch_models = None if torch is None else __import__(f"{__package__}.torch_models", fromlist=["*"])
else:  # run as a script: python bench/compare.py
    import numpy_net
    torch_models = None if torch is None else __import__("torch_models")

MODELS = ("mlp", "lenet5", "cnn")      # the default set; resnet8 too with --models
# Seconds of idling before each burst: BLAS and OpenMP worker threads spin for a while after their
# last call (OpenBLAS's up to ~0.1 s) and would otherwise take the cores from the next peer's burst;
# without the pause one peer's figure swung by up to 1.8x between runs on the 2-core machine.
SETTLE = 0.2


def torch_network(name):
    nn = torch.nn
    if name == "resnet8":
        return torch_models.ResNet8()
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    if name == "lenet5":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                             nn.Linear(84, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def torch_peer(name, state, x, y):
    """(train step, inference) closures for the torch network with fastnet's weights."""
    net = torch_network(name)
    # fastnet's Sequential indices match torch.nn.Sequential's, and resnet8's layer names the torch
    # twin's attributes: the names line up (strict=False: torch's num_batches_tracked).
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        with torch.inference_mode():
            return net(xt)
    return step, infer


def peers_for(name, batch, x, y, with_numpy):
    model = getattr(fn.models, name)().compile((1, 28, 28), batch, optimizer=fn.SGD(lr=0.01, momentum=0.9), seed=0)
    peers = {"fastnet": (lambda: model.train_step(x, y), lambda: model.predict(x))}
    if torch is not None:
        peers["torch"] = torch_peer(name, model.state_dict(), x, y)
    if with_numpy and isinstance(model.network, fn.Sequential):   # the NumPy net is a chain
        net = numpy_net.Net(model)
        peers["numpy"] = (lambda: net.train_step(x, y), lambda: net.predict(x))
    return model, peers


def images_per_second(run, batch, steps):
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return batch * steps / (time.perf_counter() - start)


def steps_for(name, batch, mode):
    """About a quarter of a second of fastnet work per burst on a 2-core machine."""
    per_image = {"mlp": 1 / 50000, "lenet5": 1 / 8000, "cnn": 1 / 2000, "resnet8": 1 / 800}[name]
    if mode == "inference":
        per_image /= 3
    return max(2, int(0.25 / (per_image * batch)))


def measure(name, batch, rounds, with_numpy):
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model, peers = peers_for(name, batch, x, y, with_numpy)
    results = []
    for mode, which in (("train", 0), ("inference", 1)):
        runs = {peer: fns[which] for peer, fns in peers.items()}
        for run in runs.values():      # warm up: compiled kernels, allocator caches
            run()
            run()
        steps = steps_for(name, batch, mode)
        samples = {peer: [] for peer in runs}
        order = list(runs)
        for r in range(rounds):
            for peer in (order if r % 2 == 0 else order[::-1]):
                # NumPy is ~10x slower: fewer steps keep its bursts comparable in length.
                n = max(1, steps // 8) if peer == "numpy" else steps
                time.sleep(SETTLE)
                samples[peer].append(images_per_second(runs[peer], batch, n))
        row = {"model": name, "batch": batch, "mode": mode, "rounds": rounds}
        for peer, values in samples.items():
            row[peer] = statistics.median(values)
        for peer in runs:
            if peer != "fastnet":
                row[f"vs_{peer}"] = row["fastnet"] / row[peer]
        row["gflop_per_image"] = flops_per_image(model, train=mode == "train") / 1e9
        results.append(row)
    return model, results


def gemm_shapes(model, batch, with_input_grad=False):
    """(m, k, n) of every forward GEMM of the model at this batch size (with with_input_grad, also
    whether the layer's backward computes its input's gradient: a GEMM as large again)."""
    shapes = []
    plan = model.plan
    for slot, node, inputs in zip(plan.slots, plan.nodes, plan.inputs_of):
        kind = type(slot.layer).__name__
        if kind == "Conv2D":
            O, C, KH, KW = slot.params["weight"].shape
            shape = (O, C * KH * KW, batch * node.shape[1] * node.shape[2])
        elif kind == "Dense":
            out, features = slot.params["weight"].shape
            shape = (batch, features, out)
        else:
            continue
        shapes.append((*shape, plan.wants_grad[inputs[0]]) if with_input_grad else shape)
    return shapes


def flops_per_image(model, train=False):
    """Multiply-adds x 2 of one image's GEMMs (the rest is memory traffic): the forward's, and for
    training also the weight gradient's and, where the backward computes it, the input gradient's
    (not the first parameter layer's: nothing needs it)."""
    total = 0
    for m, k, n, input_grad in gemm_shapes(model, 1, with_input_grad=True):
        total += 2 * m * k * n * ((3 if input_grad else 2) if train else 1)
    return total


def sgemm_rate(model, batch, repeats=20, bursts=5):
    """GFLOP/s of the machine's SGEMM (NumPy's BLAS, all its threads) on the model's GEMM shapes:
    the roofline for a network that is all GEMM. Each shape's time is its fastest burst: a roofline
    is what the machine can do, and one slow burst on a shared machine would lower it below what
    fastnet reaches."""
    total_flops, total_time = 0.0, 0.0
    rng = np.random.default_rng(0)
    for m, k, n in gemm_shapes(model, batch):
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        np.matmul(a, b, out=out)
        fastest = float("inf")
        for _ in range(bursts):
            start = time.perf_counter()
            for _ in range(repeats):
                np.matmul(a, b, out=out)
            fastest = min(fastest, time.perf_counter() - start)
        total_time += fastest
        total_flops += 2.0 * m * k * n * repeats
    return total_flops / total_time / 1e9


FIRST_STEP = """
import time
start = time.perf_counter()
import numpy as np, fastnet as fn
model = fn.models.{name}().compile((1, 28, 28), 64, optimizer=fn.SGD(lr=0.01, momentum=0.9))
model.train_step(np.zeros((64, 1, 28, 28), np.float32), np.zeros(64, np.int64))
print(time.perf_counter() - start)
"""


def time_to_first_step(name):
    """Seconds from `import fastnet` to the end of the first step: cold, then warm Numba cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = []
        for _ in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", FIRST_STEP.format(name=name)], env=env,
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout.split()[-1]))
    return {"model": name, "cold_s": times[0], "warm_s": times[1]}


def machine():
    import platform

    import numba
    info = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "numba_threads": numba.get_num_threads(), "numba": numba.__version__,
            "numpy": np.__version__, "fastnet": fn.__version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def table(report):
    peers = [p for p in ("torch", "numpy") if any(p in r for r in report["throughput"])]
    head = ("| model | batch | mode | fastnet img/s | " + " | ".join(f"{p} img/s | vs {p}" for p in peers)
            + " | GFLOP/s | SGEMM GFLOP/s | of roofline |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["throughput"]:
        achieved = r["fastnet"] * r["gflop_per_image"]
        cells = [r["model"], str(r["batch"]), r["mode"], f"{r['fastnet']:,.0f}"]
        for p in peers:
            cells += [f"{r[p]:,.0f}", f"{r['vs_' + p]:.2f}x"] if p in r else ["", ""]
        cells += [f"{achieved:.0f}", f"{r['sgemm_gflops']:.0f}", f"{achieved / r['sgemm_gflops']:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| model | first step, cold cache | warm cache |")
    lines.append("|---|---|---|")
    for r in report["first_step"]:
        lines.append(f"| {r['model']} | {r['cold_s']:.1f} s | {r['warm_s']:.1f} s |")
    return "\n".join(lines)


def write_results(report, path):
    m = report["machine"]
    text = (f"# Benchmark results\n\nWritten by `python -m bench` (bench/compare.py) on "
            f"{time.strftime('%Y-%m-%d')}.\n\nMachine: {m['cpu']}, {m['cpus']} cores; Python {m['python']}, "
            f"numpy {m['numpy']}, numba {m['numba']} ({m['numba_threads']} threads), fastnet {m['fastnet']}"
            + (f", torch {m['torch']} ({m['torch_threads']} threads)" if "torch" in m else "") + ".\n\n"
            "Training: forward, backward, SGD with momentum 0.9. Inference: forward only. Images/s are "
            "medians over alternating rounds in one process; `vs` is fastnet / peer. GFLOP/s counts the "
            "GEMM work (training: forward, weight gradient, and the input gradient where one is computed, "
            "i.e. not the first layer's); SGEMM GFLOP/s is NumPy's BLAS on the same GEMM shapes (fastest "
            "of 5 bursts), the roofline. The NumPy peer is bench/numpy_net.py (vectorised im2col, cs231n-style).\n\n"
            + table(report) + "\n")
    with open(path, "w") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="Numba and PyTorch threads (NumPy's BLAS keeps its default)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy peer")
    parser.add_argument("--no-first-step", action="store_true", help="skip the cold/warm start timing")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"),
                        help="the Markdown table goes here ('' to skip)")
    args = parser.parse_args(argv)
    import numba
    numba.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    report = {"machine": machine(), "throughput": [], "first_step": []}
    print(f"machine: {report['machine']}", flush=True)
    for name in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            model, rows = measure(name, batch, args.rounds, not args.no_numpy)
            rate = sgemm_rate(model, batch)
            for row in rows:
                row["sgemm_gflops"] = rate
                report["throughput"].append(row)
                print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    if not args.no_first_step:
        for name in args.models.split(","):
            report["first_step"].append(time_to_first_step(name))
    print()
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.results:
        write_results(report, args.results)


if __name__ == "__main__":
    main()
