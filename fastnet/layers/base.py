"""The layer contract (Caffe's, in Python).

A Layer is configuration plus the code that drives its kernels; it holds no arrays.
Compiling a network binds each layer to a `Slot` that owns the layer's parameter
views, gradient views and workspace buffers, so one layer object can be compiled
into several models without them sharing state.

Shapes given to and returned by `output_shape` are per sample (no batch axis).
Arrays given to `forward`/`backward` are batched: `(n, *shape)` with n <= the
compiled batch size (a smaller last batch gets views of the same buffers).

- `output_shape(input_shapes)` checks the inputs (raise ShapeError) and returns the output shape.
  A layer with several outputs (Slice) sets `n_outputs` and returns them all from `output_shapes`;
  each output is its own node, and slot.output_index says which one a call computes.
- `param_shapes(input_shapes)` -> {short name: shape} of trainable parameters, in PyTorch's layout.
- `buffer_shapes(input_shapes)` -> {short name: shape} of non-trainable state saved in state_dict
  (BatchNorm's running statistics).
- `workspace_shapes(input_shapes, k)` -> {name: per-sample shape, or a WorkspaceSpec for another dtype
  or no batch axis} of scratch arrays the kernels of namespace k take: what the ops'
  k.<op>_workspace_shapes(...) declare on that device, under the kernels' parameter names
  (fastnet/kernels/workspace.py). A per-sample one is allocated as (batch, *shape) and handed over
  sliced to the current batch. A layer passes a kernel its workspaces as keyword arguments,
  k.<op>_forward(..., **slot.workspaces_for(k.<op>_forward, n)), since each device's kernels take
  their own; slot.work(name, n) is one of them.
- `algorithms(input_shapes, k)` -> the names of the algorithms (kernel sets for the same math) that
  compute this layer on namespace k, the default first; () for a layer with one way (most). Such a
  layer's `workspace_shapes` takes `algorithm=`, and its forward/backward run slot.algorithm,
  chosen at compile (fastnet/algorithms.py).
- `init_params(params, buffers, input_shapes, rng)` fills parameters and buffers in place.
- `check_input(x, what)`: a layer reading the model's input checks the values the model is given
  (Embedding: integer token ids in range), before anything runs; raise DataError.
- `forward(k, slot, xs, y, train)` writes y from the inputs xs (a list, one array per input).
- `backward(k, slot, xs, y, dy, dxs)` reads dy, writes each dxs[i] that is not None (None means
  that input's gradient is not needed), and writes the parameter gradients slot.grads[...].
  A tensor read by several layers gets the sum of their gradients: the first reader to run
  backward writes its gradient buffer, later readers must add. A layer that can add in place sets
  `accumulates = True` and adds into dxs[i] where slot.accumulate[i] is true; for any other layer
  the plan hands over a scratch buffer and adds it afterwards.
  Parameter gradients are written, not accumulated: a layer is called at one place in a graph
  (sharing one layer between places is refused), so there is nothing to add to, and
  np.dot(a, b, out) has no beta.

`k` is the kernel namespace (fastnet.kernels.cpu or .cuda): layers call kernels only through it.
What is the same on every device they import directly: output sizes (fastnet/kernels/shapes.py)
and the workspace types (fastnet/kernels/workspace.py).
"""

import inspect
from abc import ABC, abstractmethod

import numpy as np

from ..errors import ShapeError
from ..kernels.workspace import WorkspaceSpec as WorkspaceSpec  # re-exported: fastnet.layers.WorkspaceSpec
from ..nodes import call_layer


def int_pair(value, what, layer_name, minimum):
    """An int or a pair of ints -> (h, w), each >= minimum."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ShapeError(f"{layer_name}: {what} must be an int or a pair of ints, got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ShapeError(f"{layer_name}: {what} must be >= {minimum}, got {value!r}")
    return pair


class Slot:
    """One layer's compiled state inside one model."""

    def __init__(self, layer, index, prefix, params, grads, buffers, workspace, seed, output_index=0):
        self.layer = layer
        self.index = index          # position in the compiled plan
        self.prefix = prefix        # parameter name prefix: "0", "conv1", ...
        self.params = params        # short name -> live array (a view into the model's flat parameters)
        self.grads = grads          # short name -> gradient array, same shape
        self.buffers = buffers      # short name -> live array (running statistics)
        self.workspace = workspace  # name -> buffer: fastnet.kernels.workspace.Workspaces
        self.seed = seed            # per-layer seed for stochastic layers (Dropout)
        self.step = 0               # the model's optimizer step, kept up to date by the model
        self.row_offset = 0         # index of the batch's first row within a longer forward(x)
        self.output_index = output_index  # which output of a several-output layer this call computes
        self.accumulate = []        # per input: add into its gradient instead of writing (see Layer)
        self.relu = False           # apply the ReLU that alone reads this output (Plan fuses it)
        self.fused = False          # this ReLU is applied by the layer before it: never called
        self.algorithm = None       # which of the layer's algorithms its kernels are (see Layer)

    def work(self, name, n):
        """Workspace `name` for a batch of n rows: a view of its first n rows (no copy), or the
        whole buffer where it has no batch axis."""
        return self.workspace.batch(name, n)

    def workspaces_for(self, kernel, n):
        """{name: buffer} of the workspaces `kernel` takes (its parameters of those names), for a
        batch of n rows: k.op(..., **slot.workspaces_for(k.op, n))."""
        return self.workspace.for_kernel(kernel, n)


class Layer(ABC):
    """Base class: a layer with no parameters, no buffers and no workspace unless it declares them.

    Every public subclass registers itself in `Layer.types` under its lowercased class name, the
    `type` a spec file gives ("conv2d", "maxpool2d"): defining a layer is all it takes for spec
    files and checkpoints to know it (a later class of the same name replaces an earlier one)."""

    types = {}          # spec type name -> layer class

    n_inputs = 1        # None: any number (Add, Concat)
    n_outputs = 1
    accumulates = False  # backward can add into dxs[i] where slot.accumulate[i]
    fuses_relu = False   # forward applies a ReLU to y where slot.relu, and backward masks dy by
                         # y > 0 first (in place): the plan then skips the ReLU layer
    is_relu = False      # y = max(x, 0): what a layer that fuses_relu can apply itself
    folds_batchnorm = False  # in evaluation, a batch norm after it folds into its parameters
                             # (Conv2D: weight and bias; see _BatchNorm.fold, and the plan)
    is_batchnorm = False
    draws_seed = True    # the plan draws the layer a seed (Dropout's masks); False: the seeds and
                         # initialisation of the other layers are those of the network without it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            Layer.types[cls.spec_type()] = cls

    @classmethod
    def spec_type(cls):
        """The `type` that names this class in a spec file."""
        return cls.__name__.lower()

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name or ":" in name):
            raise ShapeError(f"a layer name must be a non-empty string without ':', got {name!r}")
        self.name = name

    def __call__(self, *inputs):
        """Functional API: the layer applied to graph nodes (fastnet.Input or other layers'
        outputs) gives a node, or a list of nodes for a layer with several outputs."""
        return call_layer(self, inputs)

    @property
    def type_name(self):
        return type(self).__name__

    def describe(self):
        return self.name or self.type_name

    def config(self):
        """The constructor's arguments as plain values ({"kernel_size": [3, 3], ...}): a spec file's
        entry for this layer. Each argument is kept under its own name as an attribute."""
        args = {}
        for param in inspect.signature(type(self).__init__).parameters.values():
            if param.name == "self" or (param.name == "name" and self.name is None):
                continue
            value = getattr(self, param.name)
            args[param.name] = list(value) if isinstance(value, tuple) else value
        return args

    @abstractmethod
    def output_shape(self, input_shapes):
        """Check the per-sample input shapes and return the output shape."""

    def output_shapes(self, input_shapes):
        """Every output's shape: one unless the layer has several outputs."""
        return [self.output_shape(input_shapes)]

    def image_input(self, input_shapes, hint=""):
        """The one (channels, height, width) input shape, or a ShapeError naming this layer."""
        if len(input_shapes) != 1:
            raise ShapeError(f"{self.describe()}: expected 1 input, got {len(input_shapes)}")
        shape = tuple(input_shapes[0])
        if len(shape) != 3:
            raise ShapeError(f"{self.describe()}: expected a (channels, height, width) input per "
                             f"sample, got shape {shape}{hint}")
        return shape

    def param_shapes(self, input_shapes):
        return {}

    def buffer_shapes(self, input_shapes):
        return {}

    def workspace_shapes(self, input_shapes, k):
        return {}

    def algorithms(self, input_shapes, k):
        return ()

    def init_params(self, params, buffers, input_shapes, rng):
        pass

    def check_input(self, x, what):
        """Refuse (DataError) values this layer cannot take in `x`, the data given to the model
        (the whole array, before anything runs), where the layer reads the model's input: token ids
        out of range for an Embedding. Most layers take any number."""

    @abstractmethod
    def forward(self, k, slot, xs, y, train):
        """Write y from the inputs xs."""

    @abstractmethod
    def backward(self, k, slot, xs, y, dy, dxs):
        """Write the input gradients dxs (where not None) and the parameter gradients."""

    def __repr__(self):
        return f"{self.type_name}({self.name!r})" if self.name else f"{self.type_name}()"
