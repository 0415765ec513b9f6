"""Training throughput: fastnet against PyTorch CPU, same network, same process, same threads.

    python bench/train.py                      # mlp, lenet5, cnn at batch 64 and 256
    python bench/train.py --models mlp --batches 64,256 --rounds 9 --json out.json

Each round times a burst of training steps (forward, backward, SGD with momentum) of fastnet,
then of PyTorch, alternating which goes first; the figure is the median over rounds of images/s,
and the ratio is fastnet / PyTorch. Both start from the same weights and see the same batch.
Time to the first training step (import, compile, one step) is measured in fresh processes:
with an empty Numba cache (cold) and again with the cache it left (warm).
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

MODELS = ("mlp", "lenet5", "cnn")


def torch_network(name):
    nn = torch.nn
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


def fastnet_stepper(name, batch, x, y):
    model = getattr(fn.models, name)().compile((1, 28, 28), batch, optimizer=fn.SGD(lr=0.01, momentum=0.9), seed=0)
    return model, lambda: model.train_step(x, y)


def torch_stepper(name, state, x, y):
    net = torch_network(name)
    # fastnet's Sequential indices skip no layer, torch's have the same order: names line up.
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def images_per_second(step, batch, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def steps_for(name, batch):
    """About half a second of work per burst on a 2-core machine."""
    per_image = {"mlp": 1 / 20000, "lenet5": 1 / 6000, "cnn": 1 / 2000}[name]
    return max(3, int(0.5 / (per_image * batch)))


def throughput(name, batch, rounds):
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model, fast = fastnet_stepper(name, batch, x, y)
    peers = {"fastnet": fast}
    if torch is not None:
        peers["torch"] = torch_stepper(name, model.state_dict(), x, y)
    for step in peers.values():   # warm up: compiled kernels, allocator caches
        for _ in range(3):
            step()
    steps = steps_for(name, batch)
    samples = {peer: [] for peer in peers}
    order = list(peers)
    for r in range(rounds):
        for peer in (order if r % 2 == 0 else order[::-1]):
            samples[peer].append(images_per_second(peers[peer], batch, steps))
    result = {"model": name, "batch": batch, "steps_per_round": steps, "rounds": rounds}
    for peer, values in samples.items():
        result[f"{peer}_images_per_s"] = statistics.median(values)
    if "torch" in peers:
        result["ratio"] = result["fastnet_images_per_s"] / result["torch_images_per_s"]
    return result


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
    import numba
    info = {"cpus": os.cpu_count(), "numba_threads": numba.get_num_threads(),
            "numba": numba.__version__, "numpy": np.__version__, "fastnet": fn.__version__}
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="Numba and PyTorch threads (BLAS keeps its default, the core count)")
    parser.add_argument("--no-first-step", action="store_true", help="skip the cold/warm start timing")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    import numba
    numba.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    report = {"machine": machine(), "throughput": [], "first_step": []}
    print(f"machine: {report['machine']}")
    print(f"{'model':<8}{'batch':>6}{'fastnet img/s':>15}{'torch img/s':>13}{'ratio':>8}")
    for name in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            r = throughput(name, batch, args.rounds)
            report["throughput"].append(r)
            torch_figure = f"{r['torch_images_per_s']:>13.0f}{r['ratio']:>8.2f}" if "ratio" in r else ""
            print(f"{name:<8}{batch:>6}{r['fastnet_images_per_s']:>15.0f}{torch_figure}", flush=True)
    if not args.no_first_step:
        print(f"{'model':<8}{'first step, cold cache':>24}{'warm cache':>12}")
        for name in args.models.split(","):
            r = time_to_first_step(name)
            report["first_step"].append(r)
            print(f"{name:<8}{r['cold_s']:>23.1f}s{r['warm_s']:>11.1f}s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
