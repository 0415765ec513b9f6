"""Where a training step's time goes, layer by layer: the profile the speed work is guided by.

    python -m bench.profile_layers cnn --batch 64 --steps 50
    python -m bench.profile_layers resnet8 --batch 32

Each layer call's forward and backward is timed from Python around its kernels (a fused ReLU runs
inside its convolution and has no line of its own); "the rest" is the loss, the optimizer update and
the step's own Python. The lines add up to the step, measured separately over the same steps.
"""

import argparse
import time
from collections import defaultdict

import numpy as np

import fastnet as fn


def profile(name, batch, steps, seed=0):
    """(seconds per step, {(index, label, "forward" | "backward"): seconds per step})."""
    model = getattr(fn.models, name)(input_shape=(1, 28, 28)).compile(
        batch_size=batch, optimizer=fn.SGD(lr=0.01, momentum=0.9), seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    spent = defaultdict(float)
    for index, slot in enumerate(model.plan.slots):
        label = f"{slot.prefix} {slot.layer.type_name}"
        slot.layer.forward = _timed(slot.layer.forward, spent, (index, label, "forward"))
        slot.layer.backward = _timed(slot.layer.backward, spent, (index, label, "backward"))
    for _ in range(3):                     # warm: allocator, caches
        model.train_step(x, y)
    spent.clear()
    start = time.perf_counter()
    for _ in range(steps):
        model.train_step(x, y)
    step = (time.perf_counter() - start) / steps
    return step, {key: seconds / steps for key, seconds in spent.items()}


def _timed(call, spent, key):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        call(*args, **kwargs)
        spent[key] += time.perf_counter() - start
    return timed


def table(name, batch, step, layers):
    lines = [f"{name} at batch {batch}: {step * 1e3:.2f} ms a step, {batch / step:,.0f} images/s",
             f"{'layer':<32}{'forward ms':>12}{'backward ms':>13}{'share':>8}"]
    rows = sorted({(index, label) for index, label, _ in layers})
    for index, label in rows:
        forward = layers.get((index, label, "forward"), 0.0)
        backward = layers.get((index, label, "backward"), 0.0)
        lines.append(f"{label:<32}{forward * 1e3:>12.3f}{backward * 1e3:>13.3f}"
                     f"{(forward + backward) / step:>8.0%}")
    rest = step - sum(layers.values())
    lines.append(f"{'the rest (loss, optimizer, Python)':<57}{rest * 1e3:>.3f}{rest / step:>8.0%}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["mlp", "lenet5", "cnn", "resnet8"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    step, layers = profile(args.model, args.batch, args.steps)
    print(table(args.model, args.batch, step, layers))


if __name__ == "__main__":
    main()
