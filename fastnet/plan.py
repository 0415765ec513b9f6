"""A network compiled into a plan: an order, shapes, and every buffer, allocated once.

Given the input node and the layer nodes in a topological order (fastnet/graph.py), the plan:
  1. names parameters "{prefix}.{short}" (prefix: a Sequential's index, or the layer's name);
  2. allocates all parameters and gradients in two flat arrays (one optimizer kernel call per
     step, one memset to clear), an activation buffer per tensor, workspaces per layer call,
     all for `batch_size` rows; a smaller batch uses views `buf[:n]`;
  3. schedules backward: a tensor read by several layers gets the sum of their gradients. The first
     reader to run backward writes the tensor's gradient; a later reader adds into it (layers that
     can, see Layer.accumulates) or writes a scratch buffer that is then added;
  4. shares gradient buffers between tensors whose gradients are never live at once: a tensor's
     gradient lives from its first reader's backward to its producer's backward;
  5. chooses each layer's algorithm where it has several (a convolution's: fastnet/algorithms.py),
     before its workspaces are allocated, since each algorithm has its own;
  6. fuses a ReLU into the layer before it (Layer.fuses_relu: Conv2D, Add) where the ReLU is that
     output's only reader: the layer's kernels apply it while each image is in cache, the two
     tensors share one activation buffer and one gradient buffer, and the ReLU is never called;
  7. for evaluation only, folds a BatchNorm2D into the convolution it alone reads (Layer.
     folds_batchnorm), and a ReLU that alone reads the batch norm with it: the convolution runs
     with weights and bias scaled by the running statistics (refreshed at each evaluation forward,
     from the live parameters), writes the last folded tensor's buffer, and the others are skipped.
     Training runs every layer as it is.
Model runs every kernel once after this (Numba compiles it), then initialises the parameters.

Before any of it, `estimate_memory` sums from the shapes alone what the plan, the optimizer and the
loss will allocate, and `check_memory` refuses (MemoryBudgetError) a network that does not fit the
memory available (or compile's max_memory): a network too big for the machine fails in a moment
with the figures, not after minutes of swapping or with the kernel's OOM killer.
"""

import math
import os
import re

import numpy as np

from . import algorithms
from .errors import MemoryBudgetError, ShapeError, SpecError
from .kernels.workspace import WorkspaceSpec, allocate
from .layers.base import Slot

WRITE, ACCUMULATE, SCRATCH = "write", "accumulate", "scratch"


class Plan:
    """The compiled network: slots in execution order and the arrays they use."""

    def __init__(self, input_node, nodes, prefixes, batch_size, dtype, rng, k, device="cpu",
                 conv_algorithm=algorithms.AUTO):
        self.k = k                              # the device's kernels; buffers come from k.zeros
        self.input_node = input_node
        self.nodes = nodes                      # topological order, input node excluded
        self.output_node = nodes[-1]
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        tensors = [input_node] + nodes
        self.position = {id(t): i for i, t in enumerate(tensors)}
        self.inputs_of = [[self.position[id(src)] for src in node.inputs] for node in nodes]
        self.device = device
        self.conv_algorithm = conv_algorithm    # what compile was asked for (fastnet/algorithms.py)
        self._allocate_layers(prefixes, rng)
        self.fused_from = self._fuse_relus()
        self._fold_batchnorms()
        self.acts = [k.zeros((batch_size, *t.shape), self.dtype) for t in tensors]
        for relu, producer in self.fused_from.items():
            self.acts[producer] = self.acts[relu]   # the producer writes the ReLU's output
        self._schedule_backward()
        self.init_rng = rng

    # -- compile steps ------------------------------------------------------------------
    def _allocate_layers(self, prefixes, rng):
        """Parameters (flat), buffers and workspaces; one Slot per node. The nodes of one
        several-output layer (Slice) share its (parameter-free) state."""
        dtype, batch = self.dtype, self.batch_size
        first_node = {}
        for index, node in enumerate(self.nodes):
            first_node.setdefault(id(node.layer), index)
        names = [prefixes[i] for i in first_node.values()]
        if len(set(names)) != len(names):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            raise ShapeError(f"layer names must be unique, got {', '.join(duplicates)} more than once")
        param_shapes = {i: self.nodes[i].layer.param_shapes([s.shape for s in self.nodes[i].inputs])
                        for i in first_node.values()}
        total = sum(math.prod(shape) for shapes in param_shapes.values() for shape in shapes.values())
        self.flat_params = self.k.zeros(total, dtype)
        self.flat_grads = self.k.zeros(total, dtype)
        self.param_names, self.buffer_names, self.slots = [], [], []
        self.param_layout = []                  # (slot index, short name, offset, shape)
        offset, state = 0, {}
        # whether training back-propagates into a tensor: a layer with parameters made it, or
        # anything before it (the rule _schedule_backward applies), so that an algorithm is
        # measured as it will run: without an input gradient for the parameter-free layers first
        trained = {id(self.input_node): False}
        for index, (node, prefix) in enumerate(zip(self.nodes, prefixes)):
            in_shapes = [s.shape for s in node.inputs]
            input_grad = any(trained[id(src)] for src in node.inputs)
            trained[id(node)] = bool(param_shapes[first_node[id(node.layer)]]) or input_grad
            if id(node.layer) not in state:
                params, grads = {}, {}
                for short, shape in param_shapes[index].items():
                    size = math.prod(shape)
                    params[short] = self.flat_params[offset:offset + size].reshape(shape)
                    grads[short] = self.flat_grads[offset:offset + size].reshape(shape)
                    self.param_names.append((f"{prefix}.{short}", index, short))
                    self.param_layout.append((index, short, offset, shape))
                    offset += size
                buffers = {short: self.k.zeros(shape, dtype)
                           for short, shape in node.layer.buffer_shapes(in_shapes).items()}
                self.buffer_names += [(f"{prefix}.{short}", index, short) for short in buffers]
                state[id(node.layer)] = (params, grads, buffers)
            params, grads, buffers = state[id(node.layer)]
            algorithm = algorithms.choose(node.layer, prefix, in_shapes, self.k, self.device, batch, dtype,
                                          self.conv_algorithm, input_grad=input_grad)
            shapes = algorithms.workspace_shapes(node.layer, in_shapes, self.k, algorithm)
            workspace = allocate(self.k.zeros, shapes, batch, dtype)
            # (a layer that draws no seed, Normalize, leaves the other layers' seeds and
            # initialisation as they are without it)
            seed = int(rng.integers(2**62)) if node.layer.draws_seed else 0
            slot = Slot(node.layer, index, prefix, params, grads, buffers, workspace, seed, node.output_index)
            slot.algorithm = algorithm
            self.slots.append(slot)

    def _fuse_relus(self):
        """{ReLU position: its producer's position} for every ReLU fused into the layer before it;
        marks both slots (slot.relu on the producer, slot.fused on the ReLU)."""
        readers = [0] * (len(self.nodes) + 1)
        for inputs in self.inputs_of:
            for src in inputs:
                readers[src] += 1
        fused = {}
        for out, (node, inputs) in enumerate(zip(self.nodes, self.inputs_of), start=1):
            src = inputs[0]
            if (node.layer.is_relu and src > 0 and readers[src] == 1
                    and self.slots[src - 1].layer.fuses_relu):
                self.slots[src - 1].relu = True
                self.slots[out - 1].fused = True
                fused[out] = src
        return fused

    def _fold_batchnorms(self):
        """self.eval_folds: [(batch norm slot, convolution slot, the folded convolution's slot, the
        position it writes)], and self.eval_skipped, the positions evaluation does not run."""
        readers = [[] for _ in range(len(self.nodes) + 1)]
        for out, inputs in enumerate(self.inputs_of, start=1):
            for src in inputs:
                readers[src].append(out)
        self.eval_folds, self.eval_skipped, self._eval_fold_at = [], set(), {}
        for out, inputs in enumerate(self.inputs_of, start=1):
            bn, src = self.slots[out - 1], inputs[0]
            if not bn.layer.is_batchnorm or src == 0 or readers[src] != [out]:
                continue
            conv = self.slots[src - 1]
            if not conv.layer.folds_batchnorm or conv.relu:
                continue
            target, relu = out, False
            if len(readers[out]) == 1 and self.slots[readers[out][0] - 1].layer.is_relu:
                target, relu = readers[out][0], True
                self.eval_skipped.add(target)
            weight = conv.params["weight"]
            params = {"weight": self.k.zeros(weight.shape, self.dtype),
                      "bias": self.k.zeros((weight.shape[0],), self.dtype)}
            folded = Slot(conv.layer, conv.index, conv.prefix, params, {}, {}, conv.workspace, conv.seed)
            folded.algorithm, folded.relu = conv.algorithm, relu
            self.eval_folds.append((bn, conv, folded, target))
            self.eval_skipped.add(out)
            self._eval_fold_at[src] = (folded, target)

    def _schedule_backward(self):
        """For every layer call, in backward order, how each input gradient is produced, and
        gradient buffers shared between tensors whose gradients are not live at the same time."""
        count = len(self.nodes) + 1
        sizes = [self.batch_size * math.prod(t.shape) for t in [self.input_node] + self.nodes]
        written = [False] * count
        written[-1] = True                       # the loss writes the output's gradient
        pool = _BufferPool()
        block_of = [None] * count          # tensor -> index of its gradient's buffer
        block_of[-1] = pool.take(sizes[-1])
        self.backward_edges = [None] * len(self.nodes)
        # A tensor's gradient is wanted (when the input's is not) where a layer with parameters
        # produced it or anything before it: mlp's first Dense need not back-propagate into Flatten.
        self.wants_grad = [False] * count
        for out in range(1, count):
            self.wants_grad[out] = (bool(self.slots[out - 1].params)
                                    or any(self.wants_grad[src] for src in self.inputs_of[out - 1]))
        for out in range(count - 1, 0, -1):
            slot, edges = self.slots[out - 1], []
            for src in self.inputs_of[out - 1]:
                if not written[src]:
                    mode = WRITE
                    written[src] = True
                    # a fused ReLU's input gradient is its output gradient, masked in place
                    block_of[src] = block_of[out] if slot.fused else pool.take(sizes[src])
                else:
                    mode = ACCUMULATE if slot.layer.accumulates else SCRATCH
                edges.append([src, mode, pool.take(sizes[src]) if mode == SCRATCH else None])
            slot.accumulate = [mode == ACCUMULATE for _, mode, _ in edges]
            self.backward_edges[out - 1] = edges
            for _, mode, block in edges:
                if mode == SCRATCH:
                    pool.give_back(block)        # added into the tensor's gradient right after
            if not slot.fused:
                pool.give_back(block_of[out])  # read as dy for the last time
        blocks = [self.k.zeros(size, self.dtype) for size in pool.sizes]
        self.grads = [self._view(blocks[block], position)
                      for position, block in enumerate(block_of)]
        for edges in self.backward_edges:
            for edge in edges:
                if edge[1] == SCRATCH:
                    edge[2] = self._view(blocks[edge[2]], edge[0])
        itemsize = self.dtype.itemsize
        scratch = sum(sizes[e[0]] for edges in self.backward_edges for e in edges if e[1] == SCRATCH)
        distinct = {id(a): a for a in self.acts}.values()
        self.memory = {"activations": sum(a.nbytes for a in distinct),
                       "gradients": sum(pool.sizes) * itemsize,
                       "gradients_unshared": (sum(sizes) + scratch) * itemsize}

    def _view(self, block, position):
        """Tensor `position`'s (batch, *shape) gradient as a view of the front of a shared block."""
        node = self.input_node if position == 0 else self.nodes[position - 1]
        shape = (self.batch_size, *node.shape)
        return block[:math.prod(shape)].reshape(shape)

    # -- running ------------------------------------------------------------------------
    def initialise(self):
        """Fill parameters and buffers from the layers' initialisers (seeded at compile). The
        initialisers run on host arrays laid out as the device's, which are then copied in."""
        flat = np.zeros(self.flat_params.shape, self.dtype)
        params = {}
        for index, short, offset, shape in self.param_layout:
            params.setdefault(index, {})[short] = flat[offset:offset + math.prod(shape)].reshape(shape)
        done = set()
        for slot, node in zip(self.slots, self.nodes):
            if id(slot.layer) in done:
                continue
            done.add(id(slot.layer))
            buffers = {short: np.zeros(b.shape, self.dtype) for short, b in slot.buffers.items()}
            slot.layer.init_params(params.get(slot.index, {}), buffers, [s.shape for s in node.inputs],
                                   self.init_rng)
            for short, host in buffers.items():
                self.k.copy_in(slot.buffers[short], host)
        self.k.copy_in(self.flat_params, flat)

    def forward(self, k, n, train):
        acts = self.acts
        if not train:
            for bn, conv, folded, _ in self.eval_folds:
                bn.layer.fold(k, bn, conv.params["weight"], conv.params.get("bias"), folded.params["weight"],
                              folded.params["bias"])
        for slot, inputs, out in zip(self.slots, self.inputs_of, range(1, len(acts))):
            if slot.fused or (not train and out in self.eval_skipped):
                continue
            xs = [acts[i][:n] for i in inputs]
            if not train and out in self._eval_fold_at:
                folded, target = self._eval_fold_at[out]
                slot.layer.forward(k, folded, xs, acts[target][:n], train)
            else:
                slot.layer.forward(k, slot, xs, acts[out][:n], train)
        return acts[-1][:n]

    def backward(self, k, n, input_grad):
        """Back-propagate self.grads[-1][:n] (set by the loss) down to every parameter
        (and to self.grads[0], the input's gradient, when input_grad). Gradients nothing needs
        are not computed: such a layer gets None for them, and is not called if it has nothing else
        to compute."""
        acts, grads = self.acts, self.grads
        for out in range(len(self.slots), 0, -1):
            slot, edges = self.slots[out - 1], self.backward_edges[out - 1]
            if slot.fused:
                continue
            dxs = []
            for src, mode, scratch in edges:
                if not (input_grad or self.wants_grad[src]):
                    dxs.append(None)
                else:
                    dxs.append(scratch[:n] if mode == SCRATCH else grads[src][:n])
            if not slot.params and all(dx is None for dx in dxs):
                continue
            xs = [acts[src][:n] for src, _, _ in edges]
            slot.layer.backward(k, slot, xs, acts[out][:n], grads[out][:n], dxs)
            for (src, mode, _), dx in zip(edges, dxs):
                if mode == SCRATCH and dx is not None:
                    k.accumulate(grads[src][:n].reshape(-1), dx.reshape(-1))

    def set_step(self, step, row_offset=0):
        for slot in self.slots:
            slot.step = step
            slot.row_offset = row_offset


# -- the memory budget ----------------------------------------------------------------------
# What estimate_memory's parts mean (summary() prints them in this order).
MEMORY_PARTS = {
    "parameters": "parameters",
    "gradients": "parameter gradients",
    "optimizer": "optimizer state",
    "buffers": "layer buffers",
    "activations": "activations",
    "activation_gradients": "activation gradients (at most)",
    "workspaces": "workspaces",
    "loss": "loss buffers",
    "measurement": "algorithm measurement (at most)",
}


def estimate_memory(input_node, nodes, batch_size, dtype, k, optimizer, conv_algorithm=algorithms.AUTO):
    """{part: bytes} (the MEMORY_PARTS and "total") of what compiling the network at `batch_size`
    allocates, computed from the shapes alone: nothing is allocated. An upper bound in two parts:
    activation gradients are counted as if no two tensors shared a buffer and every extra reader of
    a tensor needed a scratch buffer (the plan shares them, see _schedule_backward), and activations
    as if no fused ReLU shared its producer's buffer. Workspaces: for a layer with several
    algorithms, the largest of theirs; "measurement": the largest layer's trial buffers when
    compile times its algorithms (all its algorithms' workspaces at once, fastnet/algorithms.py).
    Not counted: evaluation's folded copies of a convolution's weights (one per folded batch norm,
    the size of the weights)."""
    itemsize = np.dtype(dtype).itemsize
    tensors = [input_node] + list(nodes)
    sizes = {id(t): batch_size * math.prod(t.shape) for t in tensors}
    readers = {}
    for node in nodes:
        for src in node.inputs:
            readers[id(src)] = readers.get(id(src), 0) + 1
    measures = isinstance(conv_algorithm, dict) or conv_algorithm == algorithms.AUTO
    n_params = n_buffers = 0
    workspaces = measurement = 0
    seen = set()
    for node in nodes:
        layer, in_shapes = node.layer, [src.shape for src in node.inputs]
        layer_params = sum(math.prod(shape) for shape in layer.param_shapes(in_shapes).values())
        if id(layer) not in seen:
            seen.add(id(layer))
            n_params += layer_params
            n_buffers += sum(math.prod(shape) for shape in layer.buffer_shapes(in_shapes).values())
        choices = tuple(layer.algorithms(in_shapes, k)) or (None,)
        each = [_workspace_bytes(algorithms.workspace_shapes(layer, in_shapes, k, name), batch_size, itemsize)
                for name in choices]
        workspaces += max(each)
        if len(choices) > 1 and measures:     # x, dx, y, dy, parameters and their gradients
            trial = sum(each) + 2 * (layer_params + sizes[id(node.inputs[0])] + sizes[id(node)]) * itemsize
            measurement = max(measurement, trial)
    out = tensors[-1]
    parts = {
        "parameters": n_params * itemsize,
        "gradients": n_params * itemsize,
        "optimizer": optimizer.state_size(n_params) * itemsize,
        "buffers": n_buffers * itemsize,
        "activations": sum(sizes.values()) * itemsize,
        "activation_gradients": sum(size * max(1, readers.get(key, 0)) for key, size in sizes.items()) * itemsize,
        "workspaces": workspaces,
        # the targets (int64 labels at most) and the loss's workspace (at most one output's size)
        "loss": batch_size * 8 + sizes[id(out)] * itemsize,
        "measurement": measurement,
    }
    parts["total"] = sum(parts.values())
    return parts


def _workspace_bytes(specs, batch_size, itemsize):
    total = 0
    for spec in specs.values():
        spec = WorkspaceSpec.of(spec)
        count = math.prod(spec.shape) * (batch_size if spec.per_sample else 1)
        total += count * (spec.dtype.itemsize if spec.dtype is not None else itemsize)
    return total


def format_bytes(count):
    """Binary units, one decimal: 512 B, 1.5 KiB, 2.9 TiB."""
    count = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}


def parse_memory(value):
    """compile's max_memory as bytes: a number of bytes, or a string "4GiB", "512 MiB", "1.5 TiB"
    (binary), "4GB", "500MB" (decimal, as SI writes them) or "4G", "512m" (binary, as `docker -m`
    takes them); None: no limit given (the memory available is the limit)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = value, ""
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        number, unit = None, None
    if unit not in _UNITS or number is None or not math.isfinite(number) or number <= 0:
        raise SpecError(f"max_memory must be a positive number of bytes or a size such as '4GiB', "
                        f"'512MiB', '8GB', '4G', got {value!r}")
    return int(number * _UNITS[unit])


def available_memory(device):
    """(bytes, where) of the memory a compile on `device` may use, or (None, why) where it cannot
    be told: a GPU's free memory (CUDA), else the host's available memory (Linux: MemAvailable in
    /proc/meminfo; elsewhere os.sysconf's available pages, or psutil where installed)."""
    if device == "cuda":
        try:
            from numba import config, cuda
            if not config.ENABLE_CUDASIM:
                free, _ = cuda.current_context().get_memory_info()
                return int(free), "free on the GPU"
        except Exception:       # no usable driver here: the host's memory is what can be told
            pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available"
    except (AttributeError, OSError, ValueError):
        pass
    try:
        import psutil
        return int(psutil.virtual_memory().available), "available"
    except Exception:           # psutil absent (it is not a dependency), or it failed
        return None, "the memory available cannot be told here"


def check_memory(estimate, batch_size, device, max_memory=None):
    """Refuse (MemoryBudgetError) an estimate over max_memory (bytes, parse_memory's), or, where
    none is given, over the memory available. Returns (limit in bytes or None, its description)."""
    if max_memory is not None:
        limit, what = max_memory, f"max_memory is {format_bytes(max_memory)}"
    else:
        limit, where = available_memory(device)
        what = where if limit is None else f"{format_bytes(limit)} {where}"
    if limit is not None and estimate["total"] > limit:
        largest = sorted((part for part in MEMORY_PARTS if estimate[part]), key=estimate.get, reverse=True)[:3]
        detail = ", ".join(f"{MEMORY_PARTS[part]} {format_bytes(estimate[part])}" for part in largest)
        raise MemoryBudgetError(f"the network needs {format_bytes(estimate['total'])} at batch {batch_size}, "
                                f"{what} (largest: {detail}); use a smaller network or batch size"
                                + ("" if max_memory is not None else ", or compile(max_memory=...) to set "
                                   "the limit yourself"))
    return limit, what


class _BufferPool:
    """Hands out buffer indices; a returned buffer is reused by the next request, growing to the
    largest size it is asked for. Prefers the smallest free buffer that fits."""

    def __init__(self):
        self.sizes, self.free = [], []

    def take(self, size):
        fitting = [b for b in self.free if self.sizes[b] >= size]
        if fitting:
            block = min(fitting, key=lambda b: self.sizes[b])
        elif self.free:
            block = max(self.free, key=lambda b: self.sizes[b])
            self.sizes[block] = size
        else:
            self.sizes.append(size)
            return len(self.sizes) - 1
        self.free.remove(block)
        return block

    def give_back(self, block):
        self.free.append(block)
