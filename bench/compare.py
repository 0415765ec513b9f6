"""fastnet against PyTorch, NumPy and JAX (when installed) on the CPU, or against PyTorch on a GPU.

Same networks, same weights, same batch, one process, same thread count; training steps and
inference; the machine's SGEMM rate on the networks' own GEMM shapes as the roofline; time to the
first step with a cold and a warm cache. With --device cuda: fastnet CUDA against PyTorch CUDA, and
the GEMM work's TFLOP/s against the GPU's peak.

    python -m bench                       # mlp, lenet5, cnn at batch 64 and 256; writes bench/RESULTS.md
    fastnet bench --models cnn --batches 64 --rounds 5 --json out.json
    python -m bench --device cuda         # on a GPU: batch 256 and 1024; writes bench/RESULTS-cuda.md

Each round times a burst of steps of every peer in turn, the order alternating between rounds;
a figure is the median over rounds of images/s. Ratios are fastnet / peer. On the GPU both peers
take the batch from host memory every step and inference brings the logits back, as
Model.train_step and Model.predict do.
"""

import argparse
import importlib
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

_HERE = f"{__package__}." if __package__ else ""     # "" when run as a script: python bench/compare.py
numpy_net = importlib.import_module(_HERE + "numpy_net")
torch_models = None if torch is None else importlib.import_module(_HERE + "torch_models")
try:
    jax_net = importlib.import_module(_HERE + "jax_net")
except ImportError:  # JAX is an optional peer: left out of the table, with a notice
    jax_net = None

MODELS = ("mlp", "lenet5", "cnn", "lstm_rows")   # the default set; resnet8 and tiny too with --models
SEQUENCE_MODELS = ("lstm_rows",)       # no NumPy or JAX twin (their nets are convolution/dense chains)
BATCHES = {"cpu": "64,256", "cuda": "256,1024"}   # the default batch sizes per device
# Seconds of idling before each burst: BLAS and OpenMP worker threads spin for a while after their
# last call (OpenBLAS's up to ~0.1 s) and would otherwise take the cores from the next peer's burst;
# without the pause one peer's figure swung by up to 1.8x between runs on the 2-core machine.
SETTLE = 0.2


def torch_network(name):
    nn = torch.nn
    if name == "resnet8":
        return torch_models.ResNet8()
    if name == "lstm_rows":
        return torch_models.lstm_rows()
    if name == "tiny":
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 10))
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


def fastnet_network(name):
    """fastnet.models' network of that name; "tiny" (a conv and a dense layer on 1x6x6 images) is the
    benchmark's own, small enough for the CUDA simulator."""
    if name == "tiny":
        return fn.Sequential([fn.Conv2D(2, 3), fn.ReLU(), fn.Flatten(), fn.Dense(10)])
    return getattr(fn.models, name)()


def input_shape(name):
    return (1, 6, 6) if name == "tiny" else (1, 28, 28)


def torch_device(device):
    """The torch device that peers fastnet on `device`, or None where torch cannot run there."""
    if torch is None or (device == "cuda" and not torch.cuda.is_available()):
        return None
    return torch.device(device)


def torch_peer(name, state, x, y, device=None):
    """(train step, inference) closures for the torch network with fastnet's weights. On a GPU each
    step uploads the batch and inference brings the logits back, as fastnet's Model does."""
    device = device or torch.device("cpu")
    net = torch_network(name).to(device)
    # fastnet's Sequential indices match torch.nn.Sequential's, and resnet8's layer names the torch
    # twin's attributes: the names line up (strict=False: torch's num_batches_tracked).
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt.to(device)), yt.to(device))
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        with torch.inference_mode():
            return net(xt.to(device)).cpu()
    return step, infer


def peers_for(name, batch, x, y, with_numpy, device="cpu"):
    model = fastnet_network(name).compile(input_shape(name), batch, optimizer=fn.SGD(lr=0.01, momentum=0.9),
                                          seed=0, device=device)
    peers = {"fastnet": (lambda: model.train_step(x, y), lambda: model.predict(x))}
    if torch_device(device) is not None:
        peers["torch"] = torch_peer(name, model.state_dict(), x, y, torch_device(device))
    if device == "cpu" and isinstance(model.network, fn.Sequential) and name not in SEQUENCE_MODELS:
        # the NumPy and JAX nets are chains of convolution and dense layers
        if with_numpy:
            net = numpy_net.Net(model)
            peers["numpy"] = (lambda: net.train_step(x, y), lambda: net.predict(x))
        if jax_net is not None:
            jnet = jax_net.Net(model)
            peers["jax"] = (lambda: jnet.train_step(x, y), lambda: jnet.predict(x))
    return model, peers


def notices(device):
    """One line per peer the table leaves out or cannot fill here, and why."""
    lines = []
    if torch is None:
        lines.append("torch: not installed, so no torch figures (pip install torch)")
    elif torch_device(device) is None:
        lines.append("torch: this torch has no CUDA (torch.cuda.is_available() is False), so no torch "
                     "CUDA figures")
    if device == "cpu" and jax_net is None:
        lines.append("jax: not installed, left out of the table (pip install jax)")
    return lines


def images_per_second(run, batch, steps):
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return batch * steps / (time.perf_counter() - start)


def steps_for(name, batch, mode, device="cpu"):
    """About a quarter of a second of fastnet work per burst on a 2-core machine (a guess for a GPU)."""
    per_image = {"tiny": 1 / 50000, "mlp": 1 / 50000, "lenet5": 1 / 8000, "cnn": 1 / 2000,
                 "resnet8": 1 / 800, "lstm_rows": 1 / 4000}[name]
    if mode == "inference":
        per_image /= 3
    if device == "cuda":
        per_image /= 20
    return max(2, int(0.25 / (per_image * batch)))


def measure(name, batch, rounds, with_numpy, device="cpu", steps=None):
    """(the fastnet model, [one row per mode]); steps per burst as steps_for has it unless given."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, *input_shape(name)), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model, peers = peers_for(name, batch, x, y, with_numpy, device)
    results = []
    for mode, which in (("train", 0), ("inference", 1)):
        runs = {peer: fns[which] for peer, fns in peers.items()}
        for run in runs.values():      # warm up: compiled kernels, allocator caches
            run()
            run()
        burst = steps or steps_for(name, batch, mode, device)
        samples = {peer: [] for peer in runs}
        order = list(runs)
        for r in range(rounds):
            for peer in (order if r % 2 == 0 else order[::-1]):
                # NumPy is ~10x slower: fewer steps keep its bursts comparable in length.
                n = max(1, burst // 8) if peer == "numpy" else burst
                time.sleep(SETTLE)
                samples[peer].append(images_per_second(runs[peer], batch, n))
        row = {"model": name, "batch": batch, "mode": mode, "device": device, "rounds": rounds}
        for peer, values in samples.items():
            row[peer] = statistics.median(values)
        for peer in runs:
            if peer != "fastnet":
                row[f"vs_{peer}"] = row["fastnet"] / row[peer]
        row["gflop_per_image"] = flops_per_image(model, train=mode == "train") / 1e9
        row["algorithms"] = getattr(model, "algorithms", {})    # what compile chose for each conv
        results.append(row)
    return model, results


def gemm_shapes(model, batch):
    """{plan index: (m, k, n, input_grad)} of every Conv2D and Dense call: its forward GEMM's shape
    at this batch size (a convolution's as im2col has it, whatever algorithm runs it) and whether
    its backward computes its input's gradient (a GEMM as large again)."""
    shapes = {}
    plan = model.plan
    for index, (slot, node, inputs) in enumerate(zip(plan.slots, plan.nodes, plan.inputs_of)):
        kind = type(slot.layer).__name__
        if kind == "Conv2D":
            O, C, KH, KW = slot.params["weight"].shape
            shape = (O, C * KH * KW, batch * node.shape[1] * node.shape[2])
        elif kind == "Dense":
            out, features = slot.params["weight"].shape
            shape = (batch, features, out)
        elif kind in ("LSTM", "GRU", "RNN"):
            # the input projection (N*T, F) x (F, G*H) and the T step products (N, H) x (H, G*H)
            # counted as one (N*T, F + H) x (F + H, G*H) product: the same FLOPs, though the steps'
            # thin products run slower than one product of that shape (its rate is the roofline)
            gates, features = slot.params["weight_ih_l0"].shape
            shape = (batch * inputs_shape(plan, inputs)[0], features + slot.layer.hidden_size, gates)
        else:
            continue
        shapes[index] = (*shape, plan.wants_grad[inputs[0]])
    return shapes


def inputs_shape(plan, inputs):
    """The per-sample shape of a layer call's first input."""
    return ([plan.input_node] + plan.nodes)[inputs[0]].shape


def layer_flops(model, batch):
    """{plan index: (forward FLOPs, backward FLOPs)} of every Conv2D and Dense call at this batch:
    multiply-adds x 2 of its GEMMs (the rest is memory traffic); a convolution's as a direct one
    does them, 2*N*O*C*KH*KW*OH*OW, whatever algorithm runs it. The backward's are the weight
    gradient's and, where the backward computes it, the input gradient's (not the first parameter
    layer's: nothing needs it)."""
    return {index: (2 * m * k * n, 2 * m * k * n * (2 if input_grad else 1))
            for index, (m, k, n, input_grad) in gemm_shapes(model, batch).items()}


def flops_per_image(model, train=False):
    """One image's GEMM FLOPs: the forward's, and for training the backward's too (layer_flops)."""
    return sum(forward + (backward if train else 0) for forward, backward in layer_flops(model, 1).values())


def gemm_rate(shapes, product, repeats, bursts):
    """GFLOP/s of product(m, k, n) (which returns a callable that runs one m x k x n product and
    waits for it) over these shapes. Each shape's time is its fastest burst: a roofline is what the
    machine can do, and one slow burst on a shared machine would lower it below what fastnet reaches."""
    total_flops, total_time = 0.0, 0.0
    for m, k, n in shapes:
        run = product(m, k, n)
        run()
        fastest = float("inf")
        for _ in range(bursts):
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            fastest = min(fastest, time.perf_counter() - start)
        total_time += fastest
        total_flops += 2.0 * m * k * n * repeats
    return total_flops / total_time / 1e9


def sgemm_rate(model, batch, repeats=20, bursts=5):
    """GFLOP/s of the machine's SGEMM (NumPy's BLAS, all its threads) on the model's GEMM shapes:
    the roofline for a network that is all GEMM."""
    rng = np.random.default_rng(0)

    def product(m, k, n):
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        return lambda: np.matmul(a, b, out=out)
    return gemm_rate([shape[:3] for shape in gemm_shapes(model, batch).values()], product, repeats, bursts)


def cuda_gemm_rate(model, batch, repeats=20, bursts=5):
    """GFLOP/s of fastnet's CUDA GEMM (kernels/cuda/gemm.py, which its dense and convolution
    layers run) on the model's GEMM shapes."""
    from numba import cuda

    from fastnet.kernels.cuda.gemm import gemm
    rng = np.random.default_rng(0)

    def product(m, k, n):
        a = cuda.to_device(rng.random((1, m, k), dtype=np.float32))
        b = cuda.to_device(rng.random((1, k, n), dtype=np.float32))
        c = cuda.device_array((1, m, n), np.float32)

        def run():
            gemm(a, b, c)
            cuda.synchronize()
        return run
    return gemm_rate([shape[:3] for shape in gemm_shapes(model, batch).values()], product, repeats, bursts)


# FP32 lanes (FMA units) per SM by compute capability: the "32-bit floating-point add, multiply,
# multiply-add" row of the throughput table in NVIDIA's CUDA C++ Programming Guide (Arithmetic
# Instructions). A capability not listed has no peak here rather than a guessed one.
FP32_LANES = {(3, 0): 192, (3, 2): 192, (3, 5): 192, (3, 7): 192, (5, 0): 128, (5, 2): 128, (5, 3): 128,
              (6, 0): 64, (6, 1): 128, (6, 2): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64,
              (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}


def gpu_peak(device):
    """{name, compute capability, SMs, clock, FP32 lanes per SM, peak TFLOP/s} of a numba.cuda
    device: SMs x lanes x 2 (a multiply-add) x the boost clock the device reports; computed from
    its properties, not measured. The simulator's device has no such properties: peak None."""
    cc = tuple(device.compute_capability)
    info = {"compute_capability": f"{cc[0]}.{cc[1]}", "peak_tflops": None, "peak_from": "device properties"}
    if not hasattr(device, "MULTIPROCESSOR_COUNT"):
        return {**info, "name": "the CUDA simulator", "peak_from": "none: the simulator has no clock"}
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    sms, clock_khz, lanes = device.MULTIPROCESSOR_COUNT, device.CLOCK_RATE, FP32_LANES.get(cc)
    info.update(name=name, sms=sms, clock_mhz=clock_khz / 1e3, fp32_lanes_per_sm=lanes)
    if lanes is not None:
        info["peak_tflops"] = sms * lanes * 2 * clock_khz * 1e3 / 1e12
    return info


def simulated():
    from numba import config
    return bool(config.ENABLE_CUDASIM)


FIRST_STEP = """
import time
start = time.perf_counter()
import numpy as np, fastnet as fn
model = fn.models.{name}().compile((1, 28, 28), 64, optimizer=fn.SGD(lr=0.01, momentum=0.9), device="{device}")
model.train_step(np.zeros((64, 1, 28, 28), np.float32), np.zeros(64, np.int64))
print(time.perf_counter() - start)
"""


def time_to_first_step(name, device="cpu"):
    """Seconds from `import fastnet` to the end of the first step: cold (no Numba cache, no measured
    algorithm choices: a new machine), then warm (both on disk)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTNET_CACHE_DIR=cache)
        times = []
        for _ in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", FIRST_STEP.format(name=name, device=device)], env=env,
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout.split()[-1]))
    return {"model": name, "cold_s": times[0], "warm_s": times[1]}


def machine(device="cpu"):
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
    if jax_net is not None:
        info["jax"] = jax_net.jax.__version__
    if device == "cuda":
        from numba import cuda
        info["gpu"] = gpu_peak(cuda.get_current_device())
    return info


def peer_cells(r, peer):
    if peer in r:
        return [f"{r[peer]:,.0f}", f"{r['vs_' + peer]:.2f}x"]
    return ["absent", "no ratio"] if peer == "torch" else ["", ""]


def roofline_cells(r):
    """CPU: GFLOP/s, the SGEMM roofline, the fraction; GPU: TFLOP/s, fastnet's CUDA GEMM on the same
    shapes, the GPU's peak, and both as fractions of it."""
    achieved = r["fastnet"] * r["gflop_per_image"]
    if r["device"] == "cpu":
        return [f"{achieved:.0f}", f"{r['sgemm_gflops']:.0f}", f"{achieved / r['sgemm_gflops']:.0%}"]
    tflops, gemm, peak = achieved / 1e3, r["gemm_tflops"], r["peak_tflops"]
    if peak is None:
        return [f"{tflops:.3g}", f"{gemm:.3g}", "unknown", "", ""]
    return [f"{tflops:.2f}", f"{gemm:.2f}", f"{peak:.1f}", f"{tflops / peak:.1%}", f"{gemm / peak:.1%}"]


ROOFLINE_HEADS = {"cpu": "GFLOP/s | SGEMM GFLOP/s | of roofline",
                  "cuda": "TFLOP/s | GEMM TFLOP/s | peak TFLOP/s | of peak | GEMM of peak"}


def table(report):
    device = report.get("device", "cpu")
    rows = report["throughput"]
    # torch always has its columns: the comparison is about it, and where it cannot run they say so
    peers = [p for p in ("torch", "numpy", "jax") if p == "torch" or any(p in r for r in rows)]
    head = ("| model | batch | mode | fastnet img/s | " + " | ".join(f"{p} img/s | vs {p}" for p in peers)
            + f" | {ROOFLINE_HEADS[device]} |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["model"], str(r["batch"]), r["mode"], f"{r['fastnet']:,.0f}"]
        for p in peers:
            cells += peer_cells(r, p)
        lines.append("| " + " | ".join(cells + roofline_cells(r)) + " |")
    notes = [f"Note: {line}." for line in report.get("notices", [])]
    lines += [""] + notes + ([""] if notes else [])
    chosen = {(r["model"], r["batch"]): r["algorithms"] for r in rows if r.get("algorithms")}
    if chosen:
        lines.append("Convolution algorithms compile chose (layer: algorithm):")
        lines += [f"- {name} at batch {batch}: " + ", ".join(f"{layer} {a}" for layer, a in algorithms.items())
                  for (name, batch), algorithms in chosen.items()]
        lines.append("")
    lines.append("| model | first step, cold cache | warm cache |")
    lines.append("|---|---|---|")
    for r in report["first_step"]:
        lines.append(f"| {r['model']} | {r['cold_s']:.1f} s | {r['warm_s']:.1f} s |")
    return "\n".join(lines)


def gpu_line(gpu):
    if gpu["peak_tflops"] is None:
        return f"GPU: {gpu['name']}, compute capability {gpu['compute_capability']}, no peak known.\n\n"
    return (f"GPU: {gpu['name']}, compute capability {gpu['compute_capability']}, {gpu['sms']} SMs x "
            f"{gpu['fp32_lanes_per_sm']} FP32 lanes x 2 x {gpu['clock_mhz']:.0f} MHz = "
            f"{gpu['peak_tflops']:.1f} TFLOP/s FP32 peak (from the device's properties, not measured).\n\n")


def write_results(report, path):
    m = report["machine"]
    roofline = ("SGEMM GFLOP/s is NumPy's BLAS on the same GEMM shapes (fastest of 5 bursts), the roofline."
                if report.get("device", "cpu") == "cpu" else
                "GEMM TFLOP/s is fastnet's CUDA GEMM alone on the same GEMM shapes (fastest of 5 bursts); "
                "both against the GPU's FP32 peak.")
    text = (f"# Benchmark results\n\nWritten by `python -m bench` (bench/compare.py) on "
            f"{time.strftime('%Y-%m-%d')}.\n\nMachine: {m['cpu']}, {m['cpus']} cores; Python {m['python']}, "
            f"numpy {m['numpy']}, numba {m['numba']} ({m['numba_threads']} threads), fastnet {m['fastnet']}"
            + (f", torch {m['torch']} ({m['torch_threads']} threads)" if "torch" in m else "")
            + (f", jax {m['jax']}" if "jax" in m else "") + ".\n\n"
            + (gpu_line(m["gpu"]) if "gpu" in m else "") +
            "Training: forward, backward, SGD with momentum 0.9. Inference: forward only. Images/s are "
            "medians over alternating rounds in one process; `vs` is fastnet / peer. GFLOP/s counts the "
            "GEMM work (training: forward, weight gradient, and the input gradient where one is computed, "
            "i.e. not the first layer's), a convolution's as a direct convolution's whatever algorithm "
            "runs it (Winograd does fewer multiplications, so a model can pass 100% of the roofline); "
            f"{roofline} The NumPy peer is bench/numpy_net.py (vectorised "
            "im2col, cs231n-style); the JAX peer bench/jax_net.py (jit-compiled).\n\n"
            + table(report) + "\n")
    with open(path, "w") as f:
        f.write(text)


def roofline(model, batch, device):
    """{"sgemm_gflops": ...} on the CPU, {"gemm_tflops", "peak_tflops"} on a GPU (one timed product
    per shape on the simulator, which has no speed to measure)."""
    if device == "cpu":
        return {"sgemm_gflops": sgemm_rate(model, batch)}
    from numba import cuda
    bursts = {"repeats": 1, "bursts": 1} if simulated() else {}
    return {"gemm_tflops": cuda_gemm_rate(model, batch, **bursts) / 1e3,
            "peak_tflops": gpu_peak(cuda.get_current_device())["peak_tflops"]}


def default_results(device):
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "RESULTS.md" if device == "cpu" else f"RESULTS-{device}.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: fastnet CUDA vs PyTorch CUDA, against the GPU's peak")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}, resnet8, tiny (for the CUDA simulator)")
    parser.add_argument("--batches", help=f"comma-separated (default {BATCHES['cpu']}; {BATCHES['cuda']} on cuda)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, help="steps per burst (default: about 0.25 s of work)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="Numba and PyTorch threads (NumPy's BLAS keeps its default)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy peer")
    parser.add_argument("--no-first-step", action="store_true", help="skip the cold/warm start timing")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--results", help="the Markdown table goes here ('' to skip; default "
                        "bench/RESULTS.md, bench/RESULTS-cuda.md on cuda)")
    args = parser.parse_args(argv)
    import numba
    numba.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    report = {"device": args.device, "machine": machine(args.device), "throughput": [], "first_step": [],
              "notices": notices(args.device)}
    print(f"machine: {report['machine']}", flush=True)
    for line in report["notices"]:
        print(f"note: {line}", flush=True)
    for name in args.models.split(","):
        for batch in map(int, (args.batches or BATCHES[args.device]).split(",")):
            model, rows = measure(name, batch, args.rounds, not args.no_numpy, args.device, args.steps)
            rates = roofline(model, batch, args.device)
            for row in rows:
                row.update(rates)
                report["throughput"].append(row)
                print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    if not args.no_first_step:
        for name in args.models.split(","):
            report["first_step"].append(time_to_first_step(name, args.device))
    print()
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    results = default_results(args.device) if args.results is None else args.results
    if results:
        write_results(report, results)


if __name__ == "__main__":
    main()
