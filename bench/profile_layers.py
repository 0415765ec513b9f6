"""Where a training step's time goes, layer by layer: the profile the speed work is guided by.

    python -m bench.profile_layers cnn --batch 64 --steps 50
    python -m bench.profile_layers resnet8 --batch 32 --algorithm winograd

Each layer call's forward and backward is timed from Python around its kernels (a fused ReLU runs
inside its convolution and has no line of its own); "the rest" is the loss, the optimizer update and
the step's own Python. The lines add up to the step, measured separately over the same steps.
A Conv2D or Dense call also shows the algorithm it runs, its GFLOP/s forward and backward (the GEMM
work of bench/compare.py's layer_flops: a convolution's as a direct one does it, whatever algorithm
runs it) and the fraction of the machine's SGEMM rate on the model's GEMM shapes (compare.py's
roofline, sgemm_rate) the layer's forward and backward together reach.
"""

import argparse
import importlib
import inspect
import time
from collections import defaultdict

import numpy as np

import fastnet as fn

compare = importlib.import_module(f"{__package__}.compare" if __package__ else "compare")

ALGORITHMS = ("auto", "im2col", "winograd", "direct")


def compile_options(network, algorithm):
    """{"conv_algorithm": algorithm} where this fastnet's compile takes one, else {} (every
    convolution then runs the one algorithm there is)."""
    if "conv_algorithm" in inspect.signature(network.compile).parameters:
        return {"conv_algorithm": algorithm}
    return {}


def profile(name, batch, steps, seed=0, algorithm="auto"):
    """(model, seconds per step, {(index, label, "forward" | "backward"): seconds per step})."""
    network = getattr(fn.models, name)(input_shape=(1, 28, 28))
    model = network.compile(batch_size=batch, optimizer=fn.SGD(lr=0.01, momentum=0.9), seed=seed,
                            **compile_options(network, algorithm))
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    spent = defaultdict(float)
    for index, slot in enumerate(model.plan.slots):
        slot.layer.forward = _timed(slot.layer.forward, spent, (index, label(slot), "forward"))
        slot.layer.backward = _timed(slot.layer.backward, spent, (index, label(slot), "backward"))
    for _ in range(3):                     # warm: allocator, caches
        model.train_step(x, y)
    spent.clear()
    start = time.perf_counter()
    for _ in range(steps):
        model.train_step(x, y)
    step = (time.perf_counter() - start) / steps
    return model, step, {key: seconds / steps for key, seconds in spent.items()}


def label(slot):
    return f"{slot.prefix} {slot.layer.type_name}"


def _timed(call, spent, key):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        call(*args, **kwargs)
        spent[key] += time.perf_counter() - start
    return timed


def algorithm(slot):
    """What a GEMM layer's call runs: a convolution's compiled algorithm, a dense layer's GEMM."""
    if type(slot.layer).__name__ == "Dense":
        return "gemm"
    return getattr(slot, "algorithm", None) or "im2col"


def gemm_figures(model, batch, layers, peak):
    """{plan index: (algorithm, forward GFLOP/s, backward GFLOP/s or None, fraction of peak)} of
    every Conv2D and Dense call; peak in GFLOP/s; None where its backward does not run."""
    figures = {}
    for index, (forward_flops, backward_flops) in compare.layer_flops(model, batch).items():
        slot = model.plan.slots[index]
        forward = layers.get((index, label(slot), "forward"), 0.0)
        backward = layers.get((index, label(slot), "backward"), 0.0)
        rate = (forward_flops + (backward_flops if backward else 0)) / (forward + backward) / 1e9
        figures[index] = (algorithm(slot), forward_flops / forward / 1e9,
                          backward_flops / backward / 1e9 if backward else None, rate / peak)
    return figures


def table(name, batch, step, layers, figures=None, peak=None):
    figures = figures or {}
    lines = [f"{name} at batch {batch}: {step * 1e3:.2f} ms a step, {batch / step:,.0f} images/s"
             + (f"; SGEMM roofline {peak:.0f} GFLOP/s" if peak else ""),
             f"{'layer':<32}{'forward ms':>12}{'backward ms':>13}{'share':>8}"
             f"  {'algorithm':<10}{'fwd GFLOP/s':>12}{'bwd GFLOP/s':>12}{'of peak':>9}"]
    rows = sorted({(index, label) for index, label, _ in layers})
    for index, label_ in rows:
        forward = layers.get((index, label_, "forward"), 0.0)
        backward = layers.get((index, label_, "backward"), 0.0)
        lines.append(f"{label_:<32}{forward * 1e3:>12.3f}{backward * 1e3:>13.3f}"
                     f"{(forward + backward) / step:>8.0%}" + _figure_cells(figures.get(index)))
    rest = step - sum(layers.values())
    lines.append(f"{'the rest (loss, optimizer, Python)':<57}{rest * 1e3:>.3f}{rest / step:>8.0%}")
    return "\n".join(lines)


def _figure_cells(figure):
    if figure is None:
        return ""
    name, forward, backward, of_peak = figure
    backward = "" if backward is None else f"{backward:.1f}"
    return f"  {name:<10}{forward:>12.1f}{backward:>12}{of_peak:>9.0%}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["mlp", "lenet5", "cnn", "resnet8"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="auto",
                        help="the convolutions' algorithm (compile's conv_algorithm, where this fastnet has it)")
    args = parser.parse_args(argv)
    model, step, layers = profile(args.model, args.batch, args.steps, algorithm=args.algorithm)
    if args.algorithm != "auto" and not compile_options(model.network, args.algorithm):
        print(f"note: this fastnet's compile has no conv_algorithm; --algorithm {args.algorithm} is not applied")
    peak = compare.sgemm_rate(model, args.batch)
    print(table(args.model, args.batch, step, layers, gemm_figures(model, args.batch, layers, peak), peak))


if __name__ == "__main__":
    main()
