"""Graph nodes: a tensor of a network (an Input, or one output of a layer applied to nodes) and
calling a layer on nodes, as Keras' functional API does. Below the layers (Layer.__call__ is
call_layer) and above nothing but the errors: layers are handled through their attributes
(n_outputs, output_shapes, describe), never imported here.
"""

import numpy as np

from .errors import ShapeError


class Node:
    """A tensor in the graph: output `output_index` of `layer` applied to `inputs`
    (layer None: a graph input, named `name`)."""

    def __init__(self, layer, inputs, shape=None, output_index=0, name=None):
        self.layer = layer
        self.inputs = list(inputs)
        self.shape = shape
        self.output_index = output_index
        self._name = name

    @property
    def name(self):
        if self.layer is None:
            return self._name or "input"
        label = self.layer.describe()
        return f"{label}:{self.output_index}" if self.layer.n_outputs > 1 else label

    def __repr__(self):
        return f"<fastnet node {self.name} {self.shape}>"


def Input(shape, name=None):
    """A graph input: the per-sample shape (no batch axis), e.g. Input((1, 28, 28))."""
    if name is not None and (not isinstance(name, str) or not name or ":" in name):
        raise ShapeError(f"an Input name must be a non-empty string without ':', got {name!r}")
    return Node(None, [], as_shape(shape), name=name)


def infer_shapes(node, where=""):
    """Every output shape of node's layer from its inputs' shapes; a ShapeError names the inputs."""
    layer, in_shapes = node.layer, [tuple(src.shape) for src in node.inputs]
    try:
        shapes = [tuple(int(d) for d in s) for s in layer.output_shapes(in_shapes)]
    except ShapeError as err:
        sources = ", ".join(f"{src.name} {tuple(src.shape)}" for src in node.inputs)
        raise ShapeError(f"{where}{err} (inputs: {sources})") from None
    for shape in shapes:
        if any(d < 1 for d in shape):
            raise ShapeError(f"{where}{layer.describe()}: input {in_shapes} gives an empty output {shape}")
    return shapes


def check_no_shared_layers(nodes):
    """A layer may appear in several nodes only as the outputs of one call (Slice's sections)."""
    calls = {}
    for node in nodes:
        calls.setdefault(id(node.layer), []).append(node)
    for same in calls.values():
        first = same[0]
        if any(n.inputs != first.inputs for n in same[1:]) or len(same) > first.layer.n_outputs:
            raise ShapeError(f"layer {first.layer.describe()} appears twice in the network; sharing a "
                             f"layer (and its weights) between two places is not supported: create "
                             f"one layer per call")


def call_layer(layer, inputs):
    """layer(*inputs) in the functional API: new node(s), shapes inferred now so a mismatch shows
    where the layer is called."""
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])      # Add()([a, b]) as in Keras, or Add()(a, b)
    for src in inputs:
        if not isinstance(src, Node):
            raise TypeError(f"{layer.describe()}: call a layer on graph nodes (fastnet.Input or a "
                            f"layer's output), got {type(src).__name__}")
    if not inputs:
        raise ShapeError(f"{layer.describe()}: called on no inputs")
    if layer.n_inputs is not None and len(inputs) != layer.n_inputs:
        raise ShapeError(f"{layer.describe()}: takes {layer.n_inputs} input(s), got {len(inputs)}")
    nodes = [Node(layer, inputs, output_index=i) for i in range(layer.n_outputs)]
    for node, shape in zip(nodes, infer_shapes(nodes[0])):
        node.shape = shape
    return nodes if layer.n_outputs > 1 else nodes[0]


def as_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"input_shape must be a tuple of positive ints (no batch axis), got {shape!r}") from None
    if not shape or any(d < 1 for d in shape):
        raise ShapeError(f"input_shape must be a tuple of positive ints (no batch axis), got {shape!r}")
    return shape
