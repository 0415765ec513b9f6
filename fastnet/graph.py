"""Networks as static graphs of layers: Sequential (a chain) and Graph (Keras' functional API).

    x = fn.Input((1, 28, 28))
    h = fn.Conv2D(16, 3, padding=1, name="conv1")(x)
    out = fn.Dense(10)(fn.Flatten()(fn.ReLU()(h)))
    model = fn.Graph(inputs=x, outputs=out).compile(batch_size=64)

Both hand the compiler (fastnet/plan.py) the same thing: an input node and the layer nodes in a
topological order ending with the output. A node is one output of a layer applied to input nodes.
"""

from abc import ABC, abstractmethod

from .errors import ShapeError
from .layers.base import Layer
from .model import Model
from .nodes import Node, as_shape, check_no_shared_layers, infer_shapes

# What a compiled Model does and a network does not (Keras' networks fit; here compile gives a Model).
MODEL_METHODS = frozenset({"fit", "evaluate", "predict", "predict_proba", "train_step", "gradients", "save",
                           "state_dict", "load_state_dict", "summary", "export_onnx", "parameters"})


class Network(ABC):
    """What Sequential and Graph share: compile() into a Model."""

    input_shape = None

    def __getattr__(self, name):
        # only for names normal lookup did not find: net.fit(...) before compile gets the way to do it
        if name in MODEL_METHODS:
            raise AttributeError(f"{type(self).__name__} has no {name}(): compile the network into a model "
                                 f"first, model = net.compile(input_shape=..., batch_size=..., loss=..., "
                                 f"optimizer=...), then model.{name}(...)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @abstractmethod
    def nodes(self, input_shape):
        """(input node, layer nodes in a topological order ending with the output)."""

    @abstractmethod
    def to_spec(self):
        """The network as a spec dict (fastnet/spec.py's format, input_shape included if known):
        what `fastnet.to_spec` returns and every checkpoint carries, as Keras' get_config."""

    def _spec_header(self):
        return {} if self.input_shape is None else {"input_shape": list(self.input_shape)}

    def compile(self, input_shape=None, batch_size=None, loss="cross_entropy", optimizer=None,
                device="cpu", seed=0, dtype="float32", conv_algorithm="auto", max_memory=None):
        """Infer shapes, allocate every buffer, compile every kernel: returns a Model.
        input_shape may be left out when the network knows it (a Graph's Input, a spec).
        conv_algorithm: "auto" times each convolution's algorithms on its real shapes and batch and
        keeps the fastest (measured once per machine, then cached: fastnet/algorithms.py);
        "im2col", "direct" or "winograd" forces one where it applies (im2col elsewhere); {layer: name}
        gives each its own.
        max_memory: the most memory the model may take, in bytes or as "4GiB", "512MiB", "8GB";
        by default the memory available (the GPU's free memory on "cuda"). Compile sums what the
        model needs from the shapes before allocating anything, and a network over the limit is a
        MemoryBudgetError with the figures (Model.summary() shows the estimate)."""
        if input_shape is None:
            input_shape = self.input_shape
        if input_shape is None:
            raise ShapeError("compile() needs the input_shape (per sample, no batch axis)")
        if batch_size is None:
            raise ShapeError("compile() needs the batch_size")
        input_node, nodes = self.nodes(as_shape(input_shape))
        return Model(self, input_node, nodes, batch_size=batch_size, loss=loss, optimizer=optimizer,
                     device=device, seed=seed, dtype=dtype, conv_algorithm=conv_algorithm,
                     max_memory=max_memory)


class Sequential(Network):
    """A chain of layers, as torch.nn.Sequential / keras.Sequential. Parameters are named
    "{index}.weight", or "{name}.weight" for a layer given a name."""

    def __init__(self, layers=None, input_shape=None):
        self.layers = []
        # Known when the network came from a spec: compile() then needs only the batch size.
        self.input_shape = None if input_shape is None else as_shape(input_shape)
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes fastnet layers, got {type(layer).__name__}")
        if layer.n_outputs != 1:
            raise ShapeError(f"{layer.describe()} has {layer.n_outputs} outputs: use it in a fastnet.Graph")
        self.layers.append(layer)
        return self

    def layer_names(self):
        return [layer.name or str(index) for index, layer in enumerate(self.layers)]

    def to_spec(self):
        return {**self._spec_header(),
                "layers": [{"type": layer.spec_type(), **layer.config()} for layer in self.layers]}

    def nodes(self, input_shape):
        if not self.layers:
            raise ShapeError("Sequential has no layers")
        input_node = Node(None, [], tuple(input_shape))
        nodes, prev = [], input_node
        for index, layer in enumerate(self.layers):
            prev = Node(layer, [prev])
            prev.shape = infer_shapes(prev, f"layer {index} ({layer.describe()}): ")[0]
            nodes.append(prev)
        check_no_shared_layers(nodes)
        return input_node, nodes

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"


class Graph(Network):
    """A DAG of layers from the functional API: Graph(inputs=x, outputs=y) with x a fastnet.Input
    and y a node computed from it (one input and one output, as the model's fit/predict take one
    x and one loss). Layers without a name get one per type, in order: conv2d_1, conv2d_2, ...
    so parameters are "conv2d_1.weight" or "{name}.weight"."""

    def __init__(self, inputs, outputs):
        self.input = _single(inputs, "inputs")
        self.output = _single(outputs, "outputs")
        if self.input.layer is not None:
            raise ShapeError(f"Graph inputs must be fastnet.Input nodes, {self.input.name} is a "
                             f"layer's output")
        self._nodes = _topological_order(self.output)
        self._check(self._nodes)
        self.layers = _unique_layers(self._nodes)
        name_layers(self.layers)
        self.input_shape = tuple(self.input.shape)

    def _check(self, nodes):
        if not nodes:
            raise ShapeError(f"Graph output {self.output.name} is its input: the graph has no layers")
        reached = {id(src) for node in nodes for src in node.inputs if src.layer is None}
        if id(self.input) not in reached:
            raise ShapeError(f"Graph input {self.input.name} is unused: the output "
                             f"{self.output.name} does not depend on it")
        for node in nodes:
            for src in node.inputs:
                if src.layer is None and src is not self.input:
                    raise ShapeError(f"{node.name} reads the input {src.name}, which is not the "
                                     f"graph's input {self.input.name}; the output is unreachable "
                                     f"from the given inputs")
        check_no_shared_layers(nodes)

    def layer_names(self):
        return [layer.name for layer in self.layers]

    def to_spec(self):
        """The layers in topological order, each with its name and `inputs`."""
        spec, layers, seen = self._spec_header(), [], set()
        if self.input.name != "input":
            spec["input"] = self.input.name
        spec["output"] = self.output.name
        for node in self.nodes(self.input_shape)[1]:
            if id(node.layer) in seen:     # a Slice's other sections: one entry per layer
                continue
            seen.add(id(node.layer))
            layers.append({"type": node.layer.spec_type(), **node.layer.config(),
                           "inputs": [src.name for src in node.inputs]})
        spec["layers"] = layers
        return spec

    def nodes(self, input_shape):
        if tuple(input_shape) != self.input_shape:
            raise ShapeError(f"this Graph's Input has shape {self.input_shape}; compile() was given "
                             f"input_shape {tuple(input_shape)}")
        for node in self._nodes:     # shapes were inferred at each call; checked again here
            node.shape = infer_shapes(node)[node.output_index]
        return self.input, list(self._nodes)

    def __repr__(self):
        lines = []
        for node in self._nodes:
            sources = ", ".join(src.name for src in node.inputs)
            lines.append(f"{node.name} = {node.layer!r}({sources})")
        return "Graph([\n  " + ",\n  ".join(lines) + "\n])"


def _single(value, what):
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ShapeError(f"Graph takes one input and one output (fit/predict take one x and one "
                             f"loss), got {len(value)} {what}")
        value = value[0]
    if not isinstance(value, Node):
        raise TypeError(f"Graph {what} must be graph nodes (fastnet.Input or a layer's output), "
                        f"got {type(value).__name__}")
    return value


def _topological_order(output):
    """Layer nodes the output depends on, each after its inputs, the output last (depth-first
    post-order, iterative so deep networks do not hit the recursion limit). Nodes made by calling
    layers on existing nodes cannot form a cycle; a spec file's cycles are caught when it is read."""
    order, done, stack = [], set(), [(output, False)]
    while stack:
        node, expanded = stack.pop()
        if node.layer is None or id(node) in done:
            continue
        if expanded:
            done.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        for src in reversed(node.inputs):
            if id(src) not in done:
                stack.append((src, False))
    return order


def _unique_layers(nodes):
    layers, seen = [], set()
    for node in nodes:
        if id(node.layer) not in seen:
            seen.add(id(node.layer))
            layers.append(node.layer)
    return layers


def name_layers(layers):
    """Give every unnamed layer a unique "{type}_{k}" name (as Keras does), k counting from 1."""
    taken = {layer.name for layer in layers if layer.name}  # duplicates are the plan's error
    counters = {}
    for layer in layers:
        if layer.name:
            continue
        base = layer.type_name.lower()
        while True:
            counters[base] = counters.get(base, 0) + 1
            candidate = f"{base}_{counters[base]}"
            if candidate not in taken:
                break
        layer.name = candidate
        taken.add(candidate)
