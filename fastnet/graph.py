"""Networks as static graphs, compiled once into a plan: an order, shapes, and every buffer.

The internal form is a DAG of nodes (a node = a layer applied to input nodes). `Sequential`
is the chain special case. Compiling:
  1. orders the nodes and infers every shape, with a ShapeError naming the layer on a mismatch;
  2. names parameters as torch.nn.Sequential does ("{index}.weight", or "{name}.weight");
  3. allocates all parameters and gradients in two flat arrays (one optimizer kernel call per
     step, one memset to clear), activations and gradients per node, workspaces per layer,
     all for `batch_size` rows; a smaller batch uses views `buf[:n]`;
  4. runs every kernel once (Numba compiles it), then initialises the parameters.
"""

import math

import numpy as np

from .errors import ShapeError
from .layers.base import Layer, Slot, WorkspaceSpec


class Node:
    """A tensor in the graph: the output of `layer` applied to `inputs` (None for the graph input)."""

    def __init__(self, layer, inputs, shape=None):
        self.layer = layer
        self.inputs = list(inputs)
        self.shape = shape


class Plan:
    """The compiled network: slots in execution order and the arrays they use."""

    def __init__(self, input_node, nodes, batch_size, dtype, seed):
        self.input_node = input_node
        self.nodes = nodes                      # topological order, input node excluded
        self.output_node = nodes[-1]
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self._check_structure()
        self._infer_shapes()
        self._allocate(np.random.default_rng(seed))

    # -- compile steps ------------------------------------------------------------------
    def _check_structure(self):
        seen = set()
        for node in self.nodes:
            if id(node.layer) in seen:
                raise ShapeError(f"layer {node.layer.describe()} appears twice in the network; "
                                 f"sharing a layer between two places is not supported")
            seen.add(id(node.layer))
        consumers = {}
        for node in self.nodes:
            for src in node.inputs:
                consumers[id(src)] = consumers.get(id(src), 0) + 1
        if any(count > 1 for count in consumers.values()):
            raise ShapeError("a tensor read by several layers (fan-out) is not supported yet")

    def _infer_shapes(self):
        for index, node in enumerate(self.nodes):
            in_shapes = [tuple(src.shape) for src in node.inputs]
            try:
                node.shape = tuple(int(d) for d in node.layer.output_shape(in_shapes))
            except ShapeError as err:
                raise ShapeError(f"layer {index} ({node.layer.describe()}): {err}; "
                                 f"input shape {in_shapes[0] if len(in_shapes) == 1 else in_shapes}"
                                 ) from None
            if any(d < 1 for d in node.shape):
                raise ShapeError(f"layer {index} ({node.layer.describe()}): input {in_shapes} gives "
                                 f"an empty output {node.shape}")

    def _allocate(self, rng):
        dtype, batch = self.dtype, self.batch_size
        names = [self._prefix(i, node.layer) for i, node in enumerate(self.nodes)]
        if len(set(names)) != len(names):
            raise ShapeError(f"layer names must be unique, got {names}")
        param_shapes = [node.layer.param_shapes([s.shape for s in node.inputs]) for node in self.nodes]
        total = sum(math.prod(shape) for shapes in param_shapes for shape in shapes.values())
        self.flat_params = np.zeros(total, dtype)
        self.flat_grads = np.zeros(total, dtype)
        self.param_names, self.buffer_names = [], []
        self.slots = []
        offset = 0
        for index, (node, prefix, shapes) in enumerate(zip(self.nodes, names, param_shapes)):
            in_shapes = [s.shape for s in node.inputs]
            params, grads = {}, {}
            for short, shape in shapes.items():
                size = math.prod(shape)
                params[short] = self.flat_params[offset:offset + size].reshape(shape)
                grads[short] = self.flat_grads[offset:offset + size].reshape(shape)
                self.param_names.append((f"{prefix}.{short}", index, short))
                offset += size
            buffers = {short: np.zeros(shape, dtype)
                       for short, shape in node.layer.buffer_shapes(in_shapes).items()}
            self.buffer_names += [(f"{prefix}.{short}", index, short) for short in buffers]
            workspace = {name: _allocate_workspace(spec, batch, dtype)
                         for name, spec in node.layer.workspace_shapes(in_shapes).items()}
            seed = int(rng.integers(2**62))
            self.slots.append(Slot(node.layer, index, prefix, params, grads, buffers, workspace, seed))
        # One activation and one gradient buffer per tensor, the input's included.
        tensors = [self.input_node] + self.nodes
        self.position = {id(t): i for i, t in enumerate(tensors)}
        self.acts = [np.zeros((batch, *t.shape), dtype) for t in tensors]
        self.grads = [np.zeros((batch, *t.shape), dtype) for t in tensors]
        self.inputs_of = [[self.position[id(src)] for src in node.inputs] for node in self.nodes]
        self.init_rng = rng

    @staticmethod
    def _prefix(index, layer):
        return layer.name if layer.name else str(index)

    # -- running ------------------------------------------------------------------------
    def initialise(self):
        """Fill parameters and buffers from the layers' initialisers (seeded at compile)."""
        for slot, node in zip(self.slots, self.nodes):
            slot.layer.init_params(slot.params, slot.buffers, [s.shape for s in node.inputs],
                                   self.init_rng)

    def forward(self, k, n, train):
        acts = self.acts
        for slot, inputs, out in zip(self.slots, self.inputs_of, range(1, len(acts))):
            xs = [acts[i][:n] for i in inputs]
            slot.layer.forward(k, slot, xs, acts[out][:n], train)
        return acts[-1][:n]

    def backward(self, k, n, input_grad):
        """Back-propagate self.grads[-1][:n] (set by the loss) down to every parameter."""
        acts, grads = self.acts, self.grads
        for out in range(len(self.slots), 0, -1):
            slot, inputs = self.slots[out - 1], self.inputs_of[out - 1]
            xs = [acts[i][:n] for i in inputs]
            dxs = [grads[i][:n] if (i != 0 or input_grad) else None for i in inputs]
            slot.layer.backward(k, slot, xs, acts[out][:n], grads[out][:n], dxs)

    def set_step(self, step, row_offset=0):
        for slot in self.slots:
            slot.step = step
            slot.row_offset = row_offset


def _allocate_workspace(spec, batch, dtype):
    if not isinstance(spec, WorkspaceSpec):
        spec = WorkspaceSpec(spec)
    shape = (batch, *spec.shape) if spec.per_sample else spec.shape
    return np.zeros(shape, spec.dtype or dtype)


class Sequential:
    """A chain of layers, as torch.nn.Sequential / keras.Sequential."""

    def __init__(self, layers=None, input_shape=None):
        self.layers = []
        # Known when the network came from a spec: compile() then needs only the batch size.
        self.input_shape = None if input_shape is None else _as_shape(input_shape)
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes fastnet layers, got {type(layer).__name__}")
        self.layers.append(layer)
        return self

    def nodes(self, input_shape):
        """The chain as graph nodes: (input node, nodes in order)."""
        input_node = Node(None, [], tuple(input_shape))
        nodes, prev = [], input_node
        for layer in self.layers:
            prev = Node(layer, [prev])
            nodes.append(prev)
        return input_node, nodes

    def compile(self, input_shape=None, batch_size=None, loss="cross_entropy", optimizer=None,
                device="cpu", seed=0, dtype="float32"):
        """Infer shapes, allocate every buffer, compile every kernel: returns a Model.
        input_shape may be left out when the network knows it (from a spec)."""
        from .model import Model
        if not self.layers:
            raise ShapeError("Sequential has no layers")
        if input_shape is None:
            input_shape = self.input_shape
        if input_shape is None:
            raise ShapeError("compile() needs the input_shape (per sample, no batch axis)")
        if batch_size is None:
            raise ShapeError("compile() needs the batch_size")
        input_shape = _as_shape(input_shape)
        input_node, nodes = self.nodes(input_shape)
        return Model(self, input_node, nodes, batch_size=batch_size, loss=loss, optimizer=optimizer,
                     device=device, seed=seed, dtype=dtype)

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"


def _as_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"input_shape must be a tuple of positive ints (no batch axis), got {shape!r}") from None
    if not shape or any(d < 1 for d in shape):
        raise ShapeError(f"input_shape must be a tuple of positive ints (no batch axis), got {shape!r}")
    return shape
