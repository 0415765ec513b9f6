"""Data-parallel throughput: images/s of a zoo model on P processes x T threads, and the allreduce's
share of a step (fastnet/distributed.py).

    python -m bench.mpi --sweep                   # 1x2, 2x1, 2x2 for cnn and resnet8, alternating
    mpiexec -n 2 python -m bench.mpi --model cnn  # one configuration: a JSON line from rank 0

Each launch compiles the model at the global batch, then times `rounds` rounds of `steps` optimizer
steps on random 1x28x28 images (fit, one epoch per round); the allreduce is timed inside the step
(Model._reduce_gradients: the wait for the slowest rank included). --sweep runs the configurations
in turn, `repeats` times over, and reports medians (a shared machine: the figures of one launch are
disturbed by neighbours, alternating spreads that over all configurations).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

CONFIGS = [(1, 2), (2, 1), (2, 2)]    # (processes, threads each)


def measure(model_name, batch, steps, rounds):
    import fastnet as fn
    from fastnet import distributed

    comm = distributed.world()
    network = getattr(fn.models, model_name)(input_shape=(1, 28, 28))
    model = network.compile((1, 28, 28), batch, optimizer=fn.SGD(lr=0.01, momentum=0.9), seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    spent = [0.0]
    reduce = model._reduce_gradients

    def timed():
        start = time.perf_counter()
        reduce()
        spent[0] += time.perf_counter() - start

    model._reduce_gradients = timed
    model.fit(x[:batch * 2], y[:batch * 2], epochs=1, verbose=0)       # warm: first steps, the collectives
    speeds, shares = [], []
    for _ in range(rounds):
        spent[0] = 0.0
        start = time.perf_counter()
        model.fit(x, y, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        speeds.append(len(x) / seconds)
        shares.append(spent[0] / seconds)
    import numba
    return {"model": model_name, "processes": comm.size, "threads": numba.get_num_threads(), "batch": batch,
            "images_per_sec": statistics.median(speeds), "allreduce_share": statistics.median(shares),
            "gradient_bytes": int(model.plan.flat_grads.nbytes),
            "step_ms": 1e3 * batch / statistics.median(speeds)}


def sweep(models, batch, steps, rounds, repeats):
    from fastnet import distributed

    mpiexec = distributed.find_mpiexec()
    results = {}
    for _ in range(repeats):
        for model_name in models:
            for processes, threads in CONFIGS:
                command = [sys.executable, "-m", "bench.mpi", "--model", model_name, "--batch", str(batch),
                           "--steps", str(steps), "--rounds", str(rounds)]
                if processes > 1:
                    command = [mpiexec, "-n", str(processes), *command]
                env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                results.setdefault((model_name, processes, threads), []).append(row)
    lines = [f"| model | processes x threads | images/s (batch {batch}) | allreduce share of a step | step ms |",
             "|---|---|---|---|---|"]
    for (model_name, processes, threads), rows in results.items():
        speed = statistics.median(r["images_per_sec"] for r in rows)
        share = statistics.median(r["allreduce_share"] for r in rows)
        step = statistics.median(r["step_ms"] for r in rows)
        lines.append(f"| {model_name} | {processes} x {threads} | {speed:.0f} | "
                     f"{'-' if processes == 1 else f'{100 * share:.1f}%'} | {step:.1f} |")
    grads = {r[0]["model"]: r[0]["gradient_bytes"] for r in results.values()}
    return "\n".join(lines), grads


KS = (2, 4, 8, 16, 32, 64)
LATENCY = 25e-6     # seconds per message of the ring (TCP over Ethernet: 10-50 us)


def paper(steps):
    """The scaling model on paper: {model: (step seconds on one machine, gradient bytes)} -> a table
    of K machines each running that step on its own batch (the global batch K times larger), a ring
    allreduce of 2 (K - 1) / K x the gradient bytes over the link plus 2 (K - 1) message latencies,
    not overlapped with the compute: allreduce time, efficiency, speedup over one machine."""
    lines = ["| model | step compute | link | " + " | ".join(f"K={k}" for k in KS) + " |",
             "|---|---|---|" + "---|" * len(KS)]
    for name, (compute, size) in steps.items():
        for gbps in (10, 100):
            cells = []
            for k in KS:
                comm = 2 * (k - 1) / k * size / (gbps * 1e9 / 8) + 2 * (k - 1) * LATENCY
                efficiency = compute / (compute + comm)
                cells.append(f"{1e3 * comm:.2f} ms, {100 * efficiency:.0f}% ({k * efficiency:.1f}x)")
            lines.append(f"| {name} | {1e3 * compute:.1f} ms | {gbps} Gb/s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.mpi", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--models", default="cnn,resnet8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paper", metavar="MODEL=MS:BYTES", nargs="*",
                        help="print the scaling model for these step times and gradient sizes")
    args = parser.parse_args(argv)
    if args.paper is not None:
        steps = {}
        for item in args.paper:
            name, figures = item.split("=")
            ms, size = figures.split(":")
            steps[name] = (float(ms) / 1e3, int(size))
        print(paper(steps))
        return
    if args.sweep:
        table, grads = sweep(args.models.split(","), args.batch, args.steps, args.rounds, args.repeats)
        print(table)
        print("gradient bytes: " + ", ".join(f"{m} {b}" for m, b in grads.items()))
        return
    row = measure(args.model, args.batch, args.steps, args.rounds)
    from fastnet import distributed
    if distributed.world().is_main:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
