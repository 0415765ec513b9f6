"""Command line: `fastnet train`, `fastnet eval`, `fastnet export`, `fastnet info`."""

import argparse
import json
import math
import os
import platform
import sys

from . import distributed
from .errors import DivergenceError, FastnetError

EXIT_CODES = """exit codes:
  0    done
  1    the run failed after it started: training diverged (the run folder keeps its last
       good checkpoint, named in the message), or the system failed (a disk full, an I/O error)
  2    bad input: a usage error, a data set, spec, checkpoint or file that is missing or
       cannot be used, a network too large for the memory available
  130  interrupted (Ctrl-C)
Errors are printed as one line; --debug (before or after the command) shows the traceback.
A run that cannot start leaves no run folder. Under MPI (mpiexec -n K fastnet train ...), an error
on one rank ends every rank (MPI_Abort, the exit code above) and is printed by that rank."""


def info():
    """Versions, threads, cache, BLAS and CUDA: what decides how fast fastnet runs here."""
    import llvmlite
    import numba
    import numpy as np
    import scipy

    import fastnet
    from fastnet.kernels.cpu import relu_forward

    # a parallel kernel, so that Numba chooses its threading layer
    relu_forward(np.zeros(4, np.float32), np.zeros(4, np.float32))
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
        ("conv algorithms", _algorithm_choices()),
        ("blas", _blas()),
        ("matrix products", _products()),
        ("cuda", _cuda()),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _algorithm_choices():
    """Where compile's measured algorithm choices are cached, and what they chose."""
    from fastnet import algorithms

    chosen = [entry.get("choice") for entry in algorithms.cached_choices().values() if isinstance(entry, dict)]
    counts = ", ".join(f"{name} {chosen.count(name)}" for name in sorted(set(chosen), key=str))
    return f"{algorithms.cache_path()} ({len(chosen)} layer shapes measured{': ' + counts if chosen else ''})"


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


def _products():
    """Which BLAS the CPU kernels' matrix products call (fastnet/kernels/cpu/blas.py)."""
    from fastnet.kernels.cpu import blas
    if blas.AVAILABLE:
        return f"NumPy's OpenBLAS, one thread per call ({os.path.basename(blas.LIBRARY)})"
    return "np.dot in Numba: SciPy's OpenBLAS, one thread (NumPy's own OpenBLAS not found)"


def _cuda():
    try:
        from numba import cuda
        if not cuda.is_available():
            return "not available (no CUDA driver or GPU found)"
        from numba import config
        if config.ENABLE_CUDASIM:
            return "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct results, no speed"
        context = cuda.current_context()
        device = context.device
        name = device.name.decode() if isinstance(device.name, bytes) else device.name
        major, minor = device.compute_capability
        free, total = context.get_memory_info()
        return (f"available: {name}, compute capability {major}.{minor}, "
                f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
    except Exception as err:  # any failure to probe means CUDA is not usable here
        return f"not available ({type(err).__name__}: {err})"


def main(argv=None):
    from .run import DEFAULTS, ZOO

    parser = argparse.ArgumentParser(prog="fastnet", description="JIT-compiled CNN/MLP training engine",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # --debug after the command too (SUPPRESS: the command's parser leaves the flag before it alone)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, threads, cache dir, BLAS, CUDA", parents=[debug])
    t = commands.add_parser("train", help="train a network on an MNIST-like data set", parents=[debug],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--model", default=DEFAULTS["model"],
                   help=f"{' | '.join(sorted(ZOO))} | PATH.toml (a network spec file)")
    t.add_argument("--dataset", default=DEFAULTS["dataset"],
                   help="fashion-mnist, mnist, kmnist, a folder holding the four IDX files, an .npz file "
                        "(x_train, y_train, x_test, y_test) or a folder of images, one subfolder per class")
    t.add_argument("--resize", type=_size, default=None, metavar="HxW",
                   help="resize every image of an image folder to H x W (e.g. 28x28 or 32)")
    t.add_argument("--epochs", type=int, default=None, help=f"(default {DEFAULTS['epochs']})")
    t.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=DEFAULTS["optimizer"])
    t.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    t.add_argument("--momentum", type=float, default=DEFAULTS["momentum"], help="SGD only")
    t.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    t.add_argument("--clip-norm", type=_positive, default=DEFAULTS["clip_norm"], metavar="X",
                   help="clip the gradient to a global norm of at most X before each step "
                        "(torch.nn.utils.clip_grad_norm_; default: no clipping)")
    t.add_argument("--schedule", choices=["none", "step", "cosine"], default=DEFAULTS["schedule"],
                   help="step: halve the lr every epoch; cosine: anneal it to 0 over the run")
    t.add_argument("--warmup-steps", type=int, default=DEFAULTS["warmup_steps"])
    t.add_argument("--val-split", type=float, default=DEFAULTS["val_split"],
                   help="fraction of the training set held out for validation")
    t.add_argument("--augment", action="store_true", help="random shifts of up to 2 pixels")
    t.add_argument("--flip", action="store_true",
                   help="random left-right flips (for images where a mirror image is the same class: "
                        "not digits or letters)")
    t.add_argument("--device", choices=["cpu", "cuda"], default=DEFAULTS["device"],
                   help="cuda: train on the GPU (pip install 'fastnet[cuda]')")
    t.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    t.add_argument("--conv-algorithm", choices=["auto", "im2col", "direct", "winograd"],
                   default=DEFAULTS["conv_algorithm"],
                   help="each convolution's algorithm: auto (the fastest, measured once per machine and "
                        "cached) or one forced where it applies (default auto)")
    t.add_argument("--download", action="store_true",
                   help="fetch a named data set that is not found (SHA-256 checked)")
    t.add_argument("--early-stopping", type=int, metavar="PATIENCE", default=DEFAULTS["early_stopping"],
                   help="stop when val_loss has not improved for PATIENCE epochs (needs --val-split)")
    t.add_argument("--tensorboard", metavar="DIR", default=DEFAULTS["tensorboard"],
                   help="write TensorBoard event files to DIR (pip install 'fastnet[tensorboard]')")
    t.add_argument("--checkpoint-every", type=int, metavar="STEPS", default=DEFAULTS["checkpoint_every"],
                   help="also save the checkpoint every STEPS optimizer steps (a resume continues mid-epoch "
                        "exactly); by default it is saved after every epoch")
    t.add_argument("--max-memory", metavar="SIZE", default=DEFAULTS["max_memory"],
                   help="the most memory compile may plan for, e.g. 4GiB (default: what is available)")
    t.add_argument("--workers", type=_positive, default=DEFAULTS["workers"], metavar="K",
                   help="train on K processes of this machine (data parallel over MPI: starts mpiexec -n K; "
                        "pip install 'fastnet[mpich]'); --batch-size stays the global batch. Under mpiexec "
                        "the ranks are those mpiexec started")
    t.add_argument("--sync-bn", action="store_true",
                   help="under MPI: BatchNorm's statistics over the global batch (as one process), not each rank's")
    t.add_argument("--out", help="run folder (default runs/<timestamp>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its saved settings, "
                   "from its last checkpoint (mid-epoch with --checkpoint-every); only --epochs, --lr (the "
                   "schedule is made again for them), --device, --download, --checkpoint-every and "
                   "--max-memory may change")
    commands.add_parser("bench", help="fastnet vs PyTorch vs NumPy (a source checkout's bench/; "
                        "`fastnet bench --help` for its options)", add_help=False)
    e = commands.add_parser("eval", help="evaluate a checkpoint on a test set", parents=[debug])
    e.add_argument("checkpoint")
    e.add_argument("--dataset", help="default: the one the checkpoint was trained on")
    e.add_argument("--device", choices=["cpu", "cuda"],
                   help="default: the one it was saved from if usable here, else the CPU")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    x = commands.add_parser("export", help="write a checkpoint's network as an ONNX model "
                            "(pip install 'fastnet[onnx]')", parents=[debug])
    x.add_argument("checkpoint")
    x.add_argument("out", metavar="OUT.onnx")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return bench(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "train" and args.workers > 1 and not distributed.launched():
        return _launch(args.workers, argv)
    given = _given(commands.choices["train"], parser, argv) if args.command == "train" and args.resume else None
    if distributed.launched():
        return _as_rank(args, argv, given)
    return _command(args, argv, given)


def _command(args, argv, given=None):
    try:
        if args.command == "info":
            info()
        elif args.command == "train":
            train(args, given)
        elif args.command == "eval":
            evaluate(args)
        elif args.command == "export":
            export(args)
    except (FastnetError, OSError, KeyboardInterrupt) as err:
        if args.debug:
            raise
        code, message = _failure(err)
        everywhere = getattr(err, "everywhere", False)
        if distributed.launched() and not everywhere:
            _let_rank_zero_report_first()
        if not everywhere or distributed.world().is_main:
            print(f"fastnet: {_rank_prefix()}{message}", file=sys.stderr, flush=True)
        return -code if distributed.launched() and not everywhere else code
    return 0


def _launch(workers, argv):
    """`fastnet train --workers K`: the same command on K ranks started by mpiexec; its exit code."""
    import subprocess
    try:
        command = distributed.launch_command(workers, argv)
    except FastnetError as err:
        print(f"fastnet: error: {err}", file=sys.stderr)
        return 2
    try:
        return subprocess.run(command).returncode
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"fastnet: error: cannot start {command[0]}: {err.strerror or err}", file=sys.stderr)
        return 2


def _as_rank(args, argv, given):
    """One rank of an MPI job: an error raised on this rank alone (any exception) ends every rank
    with MPI_Abort, so no peer waits forever in a collective; one raised alike on every rank (a
    DistributedError for mismatched settings, say: err.everywhere) is printed by rank 0 and each
    rank exits with the code."""
    import traceback
    try:
        code = _command(args, argv, given)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:         # noqa: B036 -- a bug on one rank: the traceback, then the job ends
        _let_rank_zero_report_first()
        traceback.print_exc()
        sys.stderr.flush()
        code = -1
    if code < 0 and distributed._world:      # this rank alone failed: every rank ends now
        distributed.world().abort(-code)
    return abs(code)


REPORT_DELAY = 1.0   # seconds a failing rank other than 0 waits before it reports and aborts


def _let_rank_zero_report_first():
    """An error every rank meets alike (a data set missing everywhere) is shown once: rank 0 reports
    and aborts at once, ending the others in this pause; a rank failing alone reports after it."""
    import time
    if distributed._world and not distributed.world().is_main:
        time.sleep(REPORT_DELAY)


def _rank_prefix():
    world = distributed.world() if distributed._world else None    # not made yet: no MPI, or none usable
    return f"rank {world.rank}/{world.size}: " if world is not None and world.size > 1 else ""


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _failure(err):
    """(exit code, one line) for an error the command line reports without a traceback (EXIT_CODES)."""
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(err, DivergenceError):
        return 1, f"error: {err}"
    if isinstance(err, FastnetError):
        return 2, f"error: {err}"
    # OSError: str() has the errno's text and the file name ("[Errno 2] No such file or directory: 'x'")
    text = f"{err.strerror}: {err.filename!r}" if err.strerror and err.filename else str(err) or type(err).__name__
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return 2, f"error: {text}"
    return 1, f"error: {type(err).__name__}: {text}"


def _size(text):
    """--resize HxW (or N for N x N) -> [H, W]."""
    try:
        size = [int(v) for v in text.lower().split("x")]
    except ValueError:
        size = []
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW (two positive integers, e.g. 28x28) or N, got {text!r}")
    return size


def _positive(text):
    """--clip-norm X -> a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def bench(argv):
    """Run bench/compare.py from the source checkout this fastnet was installed from."""
    import fastnet

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnet.__file__)))
    if not os.path.isfile(os.path.join(root, "bench", "compare.py")):
        print("fastnet: error: `fastnet bench` runs the benchmarks of a source checkout "
              "(pip install -e .); none found beside this installation", file=sys.stderr)
        return 2
    sys.path.insert(0, root)
    from bench.compare import main as run_benchmarks
    run_benchmarks(argv)
    return 0


def _given(subparser, parser, argv):
    """{dest: value} of the options written on the command line (not left at their defaults):
    argv parsed again with every default of `subparser` set to None."""
    defaults = {action.dest: action.default for action in subparser._actions if action.dest != "help"}
    subparser.set_defaults(**dict.fromkeys(defaults))
    try:
        args = parser.parse_args(argv)
    finally:
        subparser.set_defaults(**defaults)
    return {key: value for key, value in vars(args).items() if key in defaults and value is not None}


def train(args, given=None):
    from .run import DEFAULTS
    from .run import train as run_training

    settings = {key: getattr(args, key) for key in DEFAULTS}
    if args.resume:
        given = dict(given or {"epochs": args.epochs})
        given.pop("resume", None)
        given.pop("debug", None)
        if given.get("out") is not None:
            raise FastnetError(f"--out cannot be given with --resume: the resumed run writes to {args.resume}")
        return run_training(given, resume=args.resume)
    if settings["epochs"] is None:
        settings["epochs"] = DEFAULTS["epochs"]
    return run_training(settings, out=args.out)


def evaluate(args):
    from .run import evaluate as run_evaluation

    result = run_evaluation(args.checkpoint, dataset=args.dataset, device=args.device)
    if args.json:
        print(json.dumps(result))
        return result
    print(f"{result['dataset']}: {result['images']} test images, accuracy {result['accuracy']:.4f}, "
          f"loss {result['loss']:.4f} (on {result['device']})")
    print("per-class accuracy: " + "  ".join(f"{c}: {a:.3f}" for c, a in enumerate(result["per_class_accuracy"])
                                             if a is not None))
    print("confusion matrix (rows: true class, columns: predicted):")
    for row in result["confusion_matrix"]:
        print("  " + " ".join(f"{v:5d}" for v in row))
    return result


def export(args):
    """Load a checkpoint on the CPU (any device it was trained on) and write it as ONNX."""
    from .restore import load

    model = load(args.checkpoint, batch_size=1, device="cpu")
    model.export_onnx(args.out, opset=args.opset)
    print(f"wrote {args.out} (ONNX opset {args.opset}, input {('batch', *model.input_shape)}, "
          f"output {('batch', *model.output_shape)})")


if __name__ == "__main__":
    sys.exit(main())
