"""ONNX import: an ONNX model file as an uncompiled fastnet network that carries the file's weights.

    net = fastnet.from_onnx("model.onnx")          # pip install 'fastnet[onnx]'
    model = net.compile(batch_size=64)              # the file's weights, ready to predict or fine-tune

`from_onnx` returns a `fastnet.Sequential` when the graph is a chain and a `fastnet.Graph`
otherwise, as a model loaded in Keras or converted by onnx2torch comes with its weights: the
network holds them in `net.initial_weights` (a state dict) and every `compile` loads them, whatever
the seed, dtype or device. Layers are named after their weights where the file names them as
PyTorch does ("conv1.weight", "conv1.bias": a layer "conv1"), so a torch export imports with
torch's state-dict names; other layers get fastnet's usual names.

What each ONNX op becomes (the inverse of fastnet/onnx.py's export):
  Conv (group 1, dilation 1) -> Conv2D; Gemm, and MatMul with a constant matrix (its bias from an
  Add of a constant that alone reads it) -> Dense; Relu / LeakyRelu / Sigmoid / Tanh -> ReLU /
  LeakyReLU / Sigmoid / Tanh; Softmax over the features of a flat tensor -> Softmax; MaxPool /
  AveragePool (count_include_pad=1, or no padding) -> MaxPool2D / AvgPool2D; GlobalAveragePool ->
  GlobalAvgPool2D when a flatten alone reads it, else AvgPool2D over the whole image;
  BatchNormalization (inference mode: running statistics) -> BatchNorm1D / 2D with its epsilon and
  momentum 1 - ONNX's momentum (ONNX weighs the old statistics, PyTorch and fastnet the new);
  Flatten (axis 1), and Reshape to (batch, -1) -> Flatten; Add of two tensors -> Add; Concat ->
  Concat; Split -> Slice; Dropout and Identity -> nothing; Reshape keeping the batch axis -> Reshape;
  Gather (axis 0) from a constant table by
  a tensor of indices -> Embedding, and a Cast to an integer type that only Gathers read -> nothing
  (fastnet's export casts its float token ids so; an int64 or int32 graph input, as torch exports
  nn.Embedding, is taken as the model's float input: token ids are exact in it).
  RNN / LSTM / GRU, forward, one direction, no clip, from zero initial states (none given, or
  zeros: torch writes a ConstantOfShape of the batch's shape, Sliced per layer), reading a
  Transpose(perm [1, 0, 2]) of a batch-first (N, T, F) tensor (as torch writes a batch_first module
  and fastnet exports), or the Squeeze(axis 1) of the Y of the op before (torch's num_layers > 1) ->
  RNN (Tanh or Relu) / LSTM (default activations) / GRU (linear_before_reset=1, PyTorch's form),
  the gate blocks reordered to PyTorch's; the output read through Squeeze(axis 1) and
  Transpose(perm [1, 0, 2]) is return_sequences=True, and that followed by a Gather of the last
  step alone (torch's y[:, -1]), or Y_h through Squeeze(axis 0) or Gather(0 or -1) (torch's
  h.squeeze(0), h[-1]), return_sequences=False.
  Asymmetric pads are taken where the extra padding at the end is never reached by a window (the
  outputs equal those of fastnet's symmetric padding).
The shape arithmetic PyTorch writes for x.view(x.size(0), -1) (Shape, Gather, Unsqueeze, Concat,
Constant, Cast, Squeeze, Identity on constants) is evaluated here, with the batch as a symbol, and
constants torch folded into initializers are read as such.

Anything else (an op fastnet has no layer for, an attribute value or a shape it cannot represent,
a file that is not ONNX) is a SpecError naming the op type and the node: the file is read as a
description of a network, as a spec file is (fastnet/spec.py), so one exception type covers it.

Above the networks in the import layers (it builds Sequential and Graph), beside spec.
"""

import math
import os
from collections import OrderedDict
from decimal import Decimal

import numpy as np

from .errors import FastnetError, SpecError
from .graph import Graph, Sequential
from .layers import (
    GRU,
    LSTM,
    RNN,
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concat,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Slice,
    Softmax,
    Tanh,
)
from .nodes import Input

BATCH = -(2**40) + 17       # the batch size in evaluated shapes: no real size or Reshape code (-1, 0)
FLATTENS = ("Flatten", "Reshape")


def from_onnx(path):
    """The network in the ONNX file at `path`, uncompiled, carrying the file's weights:
    a Sequential for a chain of ops, else a Graph; `compile(batch_size=...)` loads the weights.
    A file fastnet cannot represent is a SpecError naming the op type and node."""
    onnx = _import_onnx()
    proto = _read(onnx, os.fspath(path))
    return _Importer(proto.graph, onnx).network()


class _CarriesWeights:
    """A network imported with weights: compile() loads them into the model it makes."""

    initial_weights = None     # state-dict names -> numpy arrays

    def compile(self, *args, **kwargs):
        model = super().compile(*args, **kwargs)
        model.load_state_dict(self.initial_weights)
        return model


class ImportedSequential(_CarriesWeights, Sequential):
    """A Sequential from an ONNX file (fastnet.from_onnx): compile() loads `initial_weights`."""


class ImportedGraph(_CarriesWeights, Graph):
    """A Graph from an ONNX file (fastnet.from_onnx): compile() loads `initial_weights`."""


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError:
        raise FastnetError("ONNX import needs the onnx package: pip install 'fastnet[onnx]'") from None
    return onnx


def _read(onnx, path):
    try:
        proto = onnx.load(path)
        onnx.checker.check_model(proto)
    except OSError as err:
        raise SpecError(f"cannot read the ONNX file {path}: {err.strerror or err}") from None
    except Exception as err:   # protobuf's DecodeError, onnx's ValidationError: not an ONNX model
        raise SpecError(f"{path} is not a valid ONNX model: {type(err).__name__}: {err}") from None
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < 11:
            raise SpecError(f"{path}: ONNX opset {opset.version} is older than fastnet reads (11 and up)")
    return proto


def _where(node):
    return f"ONNX {node.op_type} node {node.name or '(unnamed, output ' + repr(node.output[0]) + ')'}"


def _unsupported(node, why):
    return SpecError(f"{_where(node)}: {why}")


def _shortest_float(value):
    """An attribute's float32 value as the decimal it was written as (1e-05, not 9.99999974e-06)."""
    return Decimal(np.format_float_positional(np.float32(value), unique=True, trim="-"))


class _Importer:
    """One walk over the nodes (ONNX keeps them in topological order), building fastnet nodes."""

    def __init__(self, graph, onnx):
        self.graph, self.onnx = graph, onnx
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.consts = {t.name: self.numpy_helper.to_array(t) for t in graph.initializer}
        self.tensors = {}                 # ONNX tensor name -> fastnet node
        self.weights = {}                 # id(layer) -> {short: (array, ONNX tensor name)}
        self.readers = {}                 # ONNX tensor name -> the nodes reading it
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        for out in graph.output:
            self.readers.setdefault(out.name, []).append(None)   # the graph's output reads it too
        self.bias_pending = set()         # ids of Dense layers from a MatMul, an Add may give a bias
        self.absorbed = set()             # ids of nodes a recurrent op's mapping has read already
        self.producers = {name: node for node in graph.node for name in node.output if name}

    # -- the walk -----------------------------------------------------------------------
    def network(self):
        self.input = self._input()
        for node in self.graph.node:
            if id(node) in self.absorbed:
                continue
            if node.domain not in ("", "ai.onnx"):
                raise _unsupported(node, f"ops of domain {node.domain!r} have no fastnet layer")
            if self._fold(node):
                continue
            handler = _OPS.get(node.op_type)
            if handler is None:
                raise _unsupported(node, f"op type {node.op_type} has no fastnet layer; fastnet reads "
                                         f"{', '.join(sorted(_OPS))}")
            outputs = handler(self, node)
            for name, value in zip(node.output, outputs if isinstance(outputs, list) else [outputs]):
                self.tensors[name] = value
        return self._assemble()

    def _input(self):
        real = [v for v in self.graph.input if v.name not in self.consts]
        if len(real) != 1 or len(self.graph.output) != 1:
            raise SpecError(f"an ONNX model for fastnet has one input and one output, this one has "
                            f"{len(real)} inputs ({', '.join(v.name for v in real)}) and "
                            f"{len(self.graph.output)} outputs")
        value = real[0]
        tensor = value.type.tensor_type
        types = self.onnx.TensorProto
        if tensor.elem_type not in (types.FLOAT, types.DOUBLE, types.INT64, types.INT32):
            raise SpecError(f"ONNX input {value.name}: fastnet takes float or double tensors (or int64 "
                            f"or int32 token ids), got element type {tensor.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
            raise SpecError(f"ONNX input {value.name}: fastnet needs a batch axis and fixed sizes for "
                            f"the others, got shape {[d or '?' for d in dims]}")
        node = Input(tuple(dims[1:]), name="input")
        self.tensors[value.name] = node
        return node

    def _assemble(self):
        output_name = self.graph.output[0].name
        output = self.tensors.get(output_name)
        if output is None or output is self.input:
            raise SpecError(f"ONNX output {output_name} is {'the input' if output is self.input else 'a constant'}: "
                            f"the model has no layers fastnet can train")
        chain = _chain(output)
        if chain is not None:
            _name_layers(chain, self._proposed_names(chain), sequential=True)
            net = ImportedSequential(chain, input_shape=self.input.shape)
        else:
            reached = _layers_reached(output)
            _name_layers(reached, self._proposed_names(reached), sequential=False)
            net = ImportedGraph(inputs=self.input, outputs=output)
        net.initial_weights = self._state_dict(net)
        return net

    # -- constants and shape arithmetic --------------------------------------------------
    def _fold(self, node):
        """Evaluate a node on constants (or on a tensor's shape) now; False when it is a layer."""
        fold = _FOLDS.get(node.op_type)
        inputs = [name for name in node.input if name]
        shape_of_tensor = node.op_type == "Shape" and inputs[0] in self.tensors
        if fold is None or not (shape_of_tensor or all(name in self.consts for name in inputs)):
            return False
        try:
            self.consts[node.output[0]] = np.asarray(fold(self, node))
        except SpecError:
            raise
        except Exception as err:    # numpy's own complaint about bad indices or axes
            raise _unsupported(node, f"cannot evaluate it on constants: {err}") from None
        return True

    def attr(self, node, name, default=None):
        for attribute in node.attribute:
            if attribute.name == name:
                return self.helper.get_attribute_value(attribute)
        return default

    def const(self, node, index, what):
        """Input `index` of node, which must be a constant (an initializer or a folded value)."""
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.consts:
            raise _unsupported(node, f"its {what} must be a constant (an initializer), "
                                     f"{name or 'none'} is computed")
        return self.consts[name]

    def optional_const(self, node, index):
        return self.consts.get(node.input[index]) if index < len(node.input) and node.input[index] else None

    def node_input(self, node, index=0):
        name = node.input[index]
        if name not in self.tensors:
            raise _unsupported(node, f"input {name} must be a tensor computed from the model's input, "
                                     f"not a constant")
        return self.tensors[name]

    # -- layers ---------------------------------------------------------------------------
    def call(self, node, layer, inputs, weights=None):
        """layer applied to fastnet nodes, a ShapeError turned into a SpecError naming the ONNX node."""
        try:
            out = layer(*inputs)
        except FastnetError as err:
            raise _unsupported(node, str(err)) from None
        if weights:
            self.weights[id(layer)] = weights
        return out

    def make(self, node, cls, *args, **kwargs):
        try:
            return cls(*args, **kwargs)
        except FastnetError as err:
            raise _unsupported(node, str(err)) from None

    def weight(self, node, index, what):
        return (self.const(node, index, what), node.input[index])

    def _proposed_names(self, layers):
        """{id(layer): P} for each layer whose weights are all named "P.<short>" in the file."""
        proposed = {}
        for layer in layers:
            weights = self.weights.get(id(layer), {})
            prefixes = {name[:-len(short) - 1] if name.endswith("." + short) else None
                        for short, (_, name) in weights.items()}
            prefix = prefixes.pop() if len(prefixes) == 1 else None
            if prefix and ":" not in prefix and prefix != "input":    # a valid layer name, not the Input's
                proposed[id(layer)] = prefix
        return proposed

    def _state_dict(self, net):
        """The weights by the network's parameter names, their shapes checked against the layers'."""
        state = OrderedDict()
        shapes = _layer_input_shapes(net)
        for layer, prefix in zip(net.layers, net.layer_names()):
            expected = {**layer.param_shapes(shapes[id(layer)]), **layer.buffer_shapes(shapes[id(layer)])}
            weights = self.weights.get(id(layer), {})
            for short, shape in expected.items():
                array, source = weights[short]
                if tuple(array.shape) != tuple(shape):
                    raise SpecError(f"ONNX tensor {source} ({layer.type_name} {short}) has shape "
                                    f"{tuple(array.shape)}, the layer needs {tuple(shape)}")
                if array.dtype.kind != "f" or not np.all(np.isfinite(array)):
                    raise SpecError(f"ONNX tensor {source} ({layer.type_name} {short}) is not finite "
                                    f"floating-point numbers")
                state[f"{prefix}.{short}"] = np.ascontiguousarray(array)
        return state


# -- what makes a chain, and names ------------------------------------------------------------
def _chain(output):
    """The layers from input to output when each reads the one before it (a Sequential), else None."""
    layers, node = [], output
    while node.layer is not None:
        if len(node.inputs) != 1 or node.layer.n_outputs != 1:
            return None
        layers.append(node.layer)
        node = node.inputs[0]
    return layers[::-1]


def _layers_reached(output):
    seen, stack, layers = set(), [output], []
    while stack:
        node = stack.pop()
        if node.layer is None or id(node) in seen:
            continue
        seen.add(id(node))
        if all(layer is not node.layer for layer in layers):
            layers.append(node.layer)
        stack.extend(node.inputs)
    return layers


def _name_layers(layers, proposed, sequential):
    """Give layers their weights' names where those are unique. In a Sequential an unnamed layer
    is called by its index, so one whose index is another's name gets a name of its own."""
    names = [proposed.get(id(layer)) for layer in layers]
    names = [name if name and names.count(name) == 1 else None for name in names]
    if sequential:
        names = [None if name == str(i) else name for i, name in enumerate(names)]  # torch's "0.weight" at 0
        taken = {name for name in names if name}
        for i, layer in enumerate(layers):
            if names[i] is None and str(i) in taken:
                names[i] = _fresh_name(f"{layer.type_name.lower()}_{i}", taken)
    for layer, name in zip(layers, names):
        layer.name = name


def _fresh_name(base, taken):
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _layer_input_shapes(net):
    """id(layer) -> its input shapes, from the nodes the network compiles."""
    _, nodes = net.nodes(net.input_shape)
    return {id(node.layer): [tuple(src.shape) for src in node.inputs] for node in nodes}


# -- shape arithmetic on constants --------------------------------------------------------------
def _axes(imp, node, index=1):
    """Unsqueeze / Squeeze axes: an input from opset 13, an attribute before."""
    given = imp.optional_const(node, index)
    return [int(a) for a in (given if given is not None else imp.attr(node, "axes", []))]


def _fold_constant(imp, node):
    for attribute in node.attribute:
        value = imp.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return imp.numpy_helper.to_array(value)
        if attribute.name in ("value_int", "value_ints"):
            return np.array(value, np.int64)
        if attribute.name in ("value_float", "value_floats"):
            return np.array(value, np.float32)
    raise _unsupported(node, "only tensor, int and float constants are read")


def _fold_shape(imp, node):
    source = node.input[0]
    full = np.array([BATCH, *imp.tensors[source].shape], np.int64) if source in imp.tensors \
        else np.array(imp.consts[source].shape, np.int64)
    start, end = imp.attr(node, "start", 0), imp.attr(node, "end", None)
    return full[start:end]


def _fold_gather(imp, node):
    data, indices = imp.consts[node.input[0]], imp.consts[node.input[1]]
    return np.take(data, indices, axis=imp.attr(node, "axis", 0))


def _fold_unsqueeze(imp, node):
    data = imp.consts[node.input[0]]
    return np.expand_dims(data, tuple(a % (data.ndim + len(_axes(imp, node))) for a in _axes(imp, node)))


def _fold_squeeze(imp, node):
    data, axes = imp.consts[node.input[0]], _axes(imp, node)
    return np.squeeze(data, tuple(axes) if axes else None)


def _fold_concat(imp, node):
    return np.concatenate([np.atleast_1d(imp.consts[name]) for name in node.input], axis=imp.attr(node, "axis"))


def _fold_cast(imp, node):
    return imp.consts[node.input[0]].astype(imp.helper.tensor_dtype_to_np_dtype(imp.attr(node, "to")))


_FOLDS = {
    "Constant": _fold_constant,
    "Identity": lambda imp, node: imp.consts[node.input[0]],
    "Shape": _fold_shape,
    "Gather": _fold_gather,
    "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze,
    "Concat": _fold_concat,
    "Cast": _fold_cast,
}


# -- one function per ONNX op that becomes a layer ------------------------------------------------
def _dense_from_gemm(imp, node):
    alpha, beta = imp.attr(node, "alpha", 1.0), imp.attr(node, "beta", 1.0)
    if imp.attr(node, "transA", 0):
        raise _unsupported(node, "transA=1 (a transposed input) has no fastnet layer")
    matrix, source = imp.weight(node, 1, "B (the weight matrix)")
    if matrix.ndim != 2:
        raise _unsupported(node, f"the weight must be a matrix, got shape {matrix.shape}")
    weight = matrix if imp.attr(node, "transB", 0) else matrix.T       # fastnet's is (out, in)
    weights = {"weight": (weight * alpha if alpha != 1 else weight, source)}
    bias = imp.optional_const(node, 2)
    if len(node.input) > 2 and node.input[2] and bias is None:
        raise _unsupported(node, f"its bias C must be a constant, {node.input[2]} is computed")
    if bias is not None:
        if bias.size not in (1, weight.shape[0]):
            raise _unsupported(node, f"bias C of shape {bias.shape} does not broadcast as one value per output")
        bias = np.broadcast_to(bias.reshape(-1), (weight.shape[0],)) * beta
        weights["bias"] = (bias, node.input[2])
    layer = imp.make(node, Dense, weight.shape[0], bias=bias is not None)
    return imp.call(node, layer, [imp.node_input(node)], weights)


def _dense_from_matmul(imp, node):
    matrix, source = imp.weight(node, 1, "second input (the weight matrix)")
    if matrix.ndim != 2:
        raise _unsupported(node, f"the weight must be a matrix, got shape {matrix.shape}")
    layer = imp.make(node, Dense, matrix.shape[1], bias=False)
    out = imp.call(node, layer, [imp.node_input(node)], {"weight": (matrix.T, source)})
    if len(imp.readers.get(node.output[0], [])) == 1:
        imp.bias_pending.add(id(layer))      # an Add of a constant that alone reads it is its bias
    return out


def _add(imp, node):
    constants = [name for name in node.input if name in imp.consts]
    if not constants:
        return imp.call(node, Add(), [imp.node_input(node, i) for i in range(len(node.input))])
    tensor_name = next((name for name in node.input if name not in imp.consts), None)
    source = imp.tensors.get(tensor_name)
    layer = source.layer if source is not None else None
    bias = imp.consts[constants[0]]
    if (len(node.input) != 2 or layer is None or id(layer) not in imp.bias_pending
            or bias.size != layer.out_features):
        raise _unsupported(node, "adding a constant is read only as the bias of a MatMul it alone follows")
    imp.bias_pending.discard(id(layer))
    layer.bias = True
    imp.weights[id(layer)]["bias"] = (bias.reshape(-1), constants[0])
    return source


def _pads(imp, node, rank=2):
    """(ph, pw) fastnet's symmetric padding, from ONNX's [top, left, bottom, right] (begin pads;
    a different end pad is checked by the caller against the output size)."""
    auto_pad = imp.attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise _unsupported(node, f"auto_pad={auto_pad} has no fastnet equivalent; give explicit pads")
    pads = list(imp.attr(node, "pads", [0] * 2 * rank)) if auto_pad == "NOTSET" else [0] * 2 * rank
    return tuple(pads[:rank]), tuple(pads[rank:])


def _check_window(imp, node, image, kernel, strides, begin, end):
    """Asymmetric pads are fastnet's symmetric begin pads where no window reaches the extra end."""
    if begin == end:
        return
    # Both put windows at -b, -b + s, ...: the same windows, with the same contents, when they
    # count as many of them.
    for size, k, s, b, e in zip(image, kernel, strides, begin, end):
        if (size + b + e - k) // s != (size + 2 * b - k) // s:
            raise _unsupported(node, f"pads {list(begin) + list(end)} (begin {begin}, end {end}) on a "
                                     f"{image[0]}x{image[1]} image give windows fastnet's symmetric "
                                     f"padding cannot")


def _geometry(imp, node, x, kernel):
    """(strides, begin pads, end pads) of a Conv or pool with a 2-D kernel; refuses dilations and
    asymmetric pads fastnet cannot represent."""
    if len(x.shape) != 3 or len(kernel) != 2:
        raise _unsupported(node, f"fastnet's convolutions and pools are 2-D over (C, H, W), got input "
                                 f"{tuple(x.shape)} and kernel {list(kernel)}")
    if any(d != 1 for d in imp.attr(node, "dilations", [1, 1])):
        raise _unsupported(node, f"dilations {imp.attr(node, 'dilations')}: fastnet has dilation 1 only")
    strides = tuple(imp.attr(node, "strides", [1, 1]))
    begin, end = _pads(imp, node)
    _check_window(imp, node, x.shape[1:], kernel, strides, begin, end)
    return strides, begin, end


def _conv(imp, node):
    x = imp.node_input(node)
    weight, source = imp.weight(node, 1, "weight")
    if imp.attr(node, "group", 1) != 1:
        raise _unsupported(node, f"group={imp.attr(node, 'group')}: fastnet's Conv2D has groups=1 only")
    if weight.ndim != 4:
        raise _unsupported(node, f"a {weight.ndim - 2}-D convolution: fastnet's Conv2D is 2-D")
    kernel = tuple(imp.attr(node, "kernel_shape", weight.shape[2:]))
    strides, padding, _ = _geometry(imp, node, x, kernel)
    weights = {"weight": (weight, source)}
    bias = imp.optional_const(node, 2)
    if len(node.input) > 2 and node.input[2] and bias is None:
        raise _unsupported(node, f"its bias must be a constant, {node.input[2]} is computed")
    if bias is not None:
        weights["bias"] = (bias, node.input[2])
    layer = imp.make(node, Conv2D, weight.shape[0], kernel, stride=strides, padding=padding, bias=bias is not None)
    return imp.call(node, layer, [x], weights)


def _pool(cls):
    def mapper(imp, node):
        x = imp.node_input(node)
        if imp.attr(node, "ceil_mode", 0):
            raise _unsupported(node, "ceil_mode=1: fastnet's pools round the output size down")
        if len([name for name in node.output if name]) > 1:
            raise _unsupported(node, "the Indices output has no fastnet equivalent")
        if imp.attr(node, "storage_order", 0):
            raise _unsupported(node, "storage_order=1 has no fastnet equivalent")
        kernel = tuple(imp.attr(node, "kernel_shape"))
        strides, padding, end = _geometry(imp, node, x, kernel)
        if cls is AvgPool2D and not imp.attr(node, "count_include_pad", 0) and any(padding + end):
            raise _unsupported(node, "count_include_pad=0 with padding: fastnet's AvgPool2D divides by "
                                     "the whole window (count_include_pad=1)")
        return imp.call(node, imp.make(node, cls, kernel, stride=strides, padding=padding), [x])
    return mapper


def _global_avgpool(imp, node):
    x = imp.node_input(node)
    readers = imp.readers.get(node.output[0], [])
    if len(readers) == 1 and readers[0] is not None and _flattens(imp, readers[0]):
        return imp.call(node, GlobalAvgPool2D(), [x])       # (C,): the flatten after it is then a no-op
    if len(x.shape) != 3:
        raise _unsupported(node, f"fastnet pools (C, H, W) images, got {tuple(x.shape)}")
    return imp.call(node, AvgPool2D(tuple(x.shape[1:])), [x])     # (C, 1, 1), as ONNX's


def _flattens(imp, node):
    """True for a Flatten(axis=1) (a Reshape is only known to flatten once its target is folded)."""
    return node.op_type == "Flatten" and imp.attr(node, "axis", 1) == 1


def _batchnorm(imp, node):
    x = imp.node_input(node)
    if imp.attr(node, "training_mode", 0) or len([name for name in node.output if name]) > 1:
        raise _unsupported(node, "training mode (batch statistics as outputs): fastnet imports the "
                                 "inference form, with running statistics")
    weights = {short: imp.weight(node, i, short)
               for i, short in enumerate(("weight", "bias", "running_mean", "running_var"), start=1)}
    cls = BatchNorm2D if len(x.shape) == 3 else BatchNorm1D
    eps = float(_shortest_float(imp.attr(node, "epsilon", 1e-5)))
    # ONNX: running = momentum * running + (1 - momentum) * batch; PyTorch and fastnet weigh the batch
    momentum = float(1 - _shortest_float(imp.attr(node, "momentum", 0.9)))
    return imp.call(node, imp.make(node, cls, eps=eps, momentum=momentum), [x], weights)


def _flatten(imp, node):
    x = imp.node_input(node)
    axis = imp.attr(node, "axis", 1)
    if axis % (len(x.shape) + 1) != 1:
        raise _unsupported(node, f"axis={axis}: fastnet's Flatten keeps the batch axis and flattens the rest (axis=1)")
    return x if len(x.shape) == 1 else imp.call(node, Flatten(), [x])


def _reshape(imp, node):
    x = imp.node_input(node)
    target = [int(d) for d in imp.const(node, 1, "target shape")]
    size = math.prod(x.shape)
    allowzero = imp.attr(node, "allowzero", 0)
    if not allowzero:             # 0: that axis's size copied from the input
        target = [d if d != 0 else BATCH if i == 0 else x.shape[i - 1] if i <= len(x.shape) else 0
                  for i, d in enumerate(target)]
    rest = target[1:]
    known = math.prod(d for d in rest if d != -1)
    batch_kept = len(target) >= 2 and (target[0] == BATCH or target[0] == -1 and -1 not in rest
                                        and known == size)
    fits = all(d >= 1 or d == -1 for d in rest) and rest.count(-1) <= 1 and (
        size % known == 0 if -1 in rest else known == size) if known else False
    if not (batch_kept and fits):
        raise _unsupported(node, f"a Reshape of {_shape_text([BATCH, *x.shape])} to {_shape_text(target)}: "
                                 f"fastnet reads a Reshape only as one that keeps the batch axis")
    if len(rest) == 1:
        return x if len(x.shape) == 1 else imp.call(node, Flatten(), [x])
    if tuple(size // known if d == -1 else d for d in rest) == tuple(x.shape):
        return x                  # to the shape it has: nothing to do
    return imp.call(node, imp.make(node, Reshape, tuple(rest)), [x])


def _shape_text(dims):
    return "(" + ", ".join("batch" if d == BATCH else str(d) for d in dims) + ")"


def _softmax(imp, node):
    x = imp.node_input(node)
    axis = imp.attr(node, "axis", -1)
    if len(x.shape) != 1 or axis not in (1, -1):
        raise _unsupported(node, f"softmax over axis {axis} of {_shape_text([BATCH, *x.shape])}: fastnet's "
                                 f"Softmax is over the features of a (batch, features) tensor")
    return imp.call(node, Softmax(), [x])


def _concat(imp, node):
    inputs = [imp.node_input(node, i) for i in range(len(node.input))]
    axis = imp.attr(node, "axis")
    rank = len(inputs[0].shape) + 1
    if not -rank <= axis < rank or axis % rank == 0:
        raise _unsupported(node, f"axis={axis}: fastnet joins along a per-sample axis, not the batch")
    return imp.call(node, imp.make(node, Concat, axis=axis % rank), inputs)


def _split(imp, node):
    x = imp.node_input(node)
    rank = len(x.shape) + 1
    axis = imp.attr(node, "axis", 0)
    if not -rank <= axis < rank or axis % rank == 0:
        raise _unsupported(node, f"axis={axis}: fastnet splits along a per-sample axis, not the batch")
    axis %= rank
    sizes = imp.optional_const(node, 1)
    if len(node.input) > 1 and node.input[1] and sizes is None:
        raise _unsupported(node, f"its split sizes must be a constant, {node.input[1]} is computed")
    if sizes is None:
        sizes = imp.attr(node, "split")
    if sizes is None:                       # equal parts, as many as there are outputs
        parts = imp.attr(node, "num_outputs", len(node.output))
        length = x.shape[axis - 1]
        sizes = [-(-length // parts)] * (parts - 1)
        sizes.append(length - sum(sizes))
    layer = imp.make(node, Slice, [int(s) for s in sizes], axis=axis)
    outputs = imp.call(node, layer, [x])
    return outputs if isinstance(outputs, list) else [outputs]


def _passed_through(imp, node):
    """Dropout and Identity: their readers read the input (inference; a mask output is refused)."""
    if len([name for name in node.output if name]) > 1:
        raise _unsupported(node, "the mask output has no fastnet equivalent")
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        mode = imp.optional_const(node, 2)
        if mode is None or bool(mode):
            raise _unsupported(node, "training_mode must be a constant false: fastnet imports inference graphs")
    return imp.node_input(node)


def _embedding(imp, node):
    """Gather(table, ids, axis=0) with a constant 2-D table: an Embedding reading the ids."""
    table, source = imp.weight(node, 0, "data (the embedding table)")
    if table.ndim != 2 or imp.attr(node, "axis", 0) != 0:
        raise _unsupported(node, f"a Gather is read only as an embedding lookup: rows (axis 0) of a "
                                 f"constant matrix, got axis {imp.attr(node, 'axis', 0)} of shape {table.shape}")
    layer = imp.make(node, Embedding, table.shape[0], table.shape[1])
    return imp.call(node, layer, [imp.node_input(node, 1)], {"weight": (table, source)})


def _cast_to_ids(imp, node):
    """A Cast to an integer type that only Gathers (embedding lookups) read: their token ids, which
    fastnet keeps in its float buffers (exact)."""
    to = np.dtype(imp.helper.tensor_dtype_to_np_dtype(imp.attr(node, "to")))
    readers = imp.readers.get(node.output[0], [])
    if to.kind not in "iu" or not readers or any(r is None or r.op_type != "Gather" for r in readers):
        raise _unsupported(node, "a Cast of a computed tensor is read only as the token ids of Gathers "
                                 "(embedding lookups) that alone read it")
    return imp.node_input(node)
def _steps_first(imp, node):
    """Transpose(perm [1, 0, 2]) of a batch-first sequence, read only by recurrent ops (ONNX's are
    sequence-first; fastnet's layers read the batch-first tensor itself)."""
    x = imp.node_input(node)
    readers = imp.readers.get(node.output[0], [])
    if (list(imp.attr(node, "perm", [])) != [1, 0, 2] or len(x.shape) != 2 or not readers
            or any(r is None or r.op_type not in _RECURRENT or r.input[0] != node.output[0] for r in readers)):
        raise _unsupported(node, "a Transpose is read only as perm [1, 0, 2] of a (batch, steps, "
                                 "features) sequence that recurrent ops (RNN, LSTM, GRU) alone read")
    return x


def _zero_state(imp, node):
    """ConstantOfShape of zeros read only as recurrent ops' initial states (torch's h0 = zeros),
    perhaps through Slices (one per layer of a torch module with num_layers > 1)."""
    if node.op_type == "Slice":
        zero = imp.tensors.get(node.input[0]) is _ZERO_STATE
    else:
        value = imp.attr(node, "value")
        zero = value is None or not np.any(imp.numpy_helper.to_array(value))
    readers = imp.readers.get(node.output[0], [])
    if not zero or not readers or any(r is None or not (r.op_type == "Slice" and r.input[0] == node.output[0]
                                                        or r.op_type in _RECURRENT
                                                        and node.output[0] in list(r.input[5:7]))
                                      for r in readers):
        raise _unsupported(node, f"a {node.op_type} is read only as zeros for the initial states of "
                                 f"recurrent ops (RNN, LSTM, GRU)")
    return _ZERO_STATE


_ZERO_STATE = object()           # the tensor name of a zero initial state maps to this
_RECURRENT = {"RNN": (RNN, [0]), "LSTM": (LSTM, [0, 2, 3, 1]), "GRU": (GRU, [1, 0, 2])}
# (fastnet's layer, PyTorch's gate blocks as indices into ONNX's: LSTM i,o,f,c -> i,f,g,o; GRU z,r,h -> r,z,n)


def _recurrent(imp, node):
    cls, order = _RECURRENT[node.op_type]
    producer = imp.producers.get(node.input[0])
    if producer is None or not (producer.op_type == "Transpose" or id(producer) in imp.absorbed):
        raise _unsupported(node, "its input must be a Transpose(perm [1, 0, 2]) of a batch-first "
                                 "(batch, steps, features) sequence, or another recurrent op's Y through "
                                 "Squeeze(axis 1): fastnet's recurrent layers are batch-first")
    x = imp.node_input(node)         # the batch-first sequence (the Transpose passes it through)
    w, w_source = imp.weight(node, 1, "W (the input weights)")
    r, r_source = imp.weight(node, 2, "R (the recurrent weights)")
    hidden = imp.attr(node, "hidden_size", r.shape[-1] if r.ndim == 3 else None)
    rows = len(order) * (hidden or 0)
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != 1 or w.shape[1:] != (rows, x.shape[1]) \
            or r.shape != (1, rows, hidden):
        raise _unsupported(node, f"W {w.shape} and R {r.shape} are not one direction's weights of "
                                 f"{len(order)} gates of hidden size {hidden} over {x.shape[1]} features")
    b = imp.optional_const(node, 3)
    if len(node.input) > 3 and node.input[3] and b is None:
        raise _unsupported(node, f"its bias B must be a constant, {node.input[3]} is computed")
    b = np.zeros((1, 2 * rows), w.dtype) if b is None else b
    if b.shape != (1, 2 * rows):
        raise _unsupported(node, f"bias B of shape {b.shape}, one direction's is (1, {2 * rows})")
    _check_recurrent_attributes(imp, node, cls)
    if len(node.input) > 4 and node.input[4]:
        raise _unsupported(node, "sequence_lens: fastnet's recurrent layers run every step of every sequence")
    for name in node.input[5:]:
        value = imp.consts.get(name)
        if name and not (imp.tensors.get(name) is _ZERO_STATE or value is not None and not np.any(value)):
            raise _unsupported(node, f"initial state {name}: fastnet's recurrent layers start from zeros")

    def blocks(array):                         # ONNX's gate blocks in PyTorch's order
        return np.concatenate([array[i * hidden:(i + 1) * hidden] for i in order])

    b_source = node.input[3] if len(node.input) > 3 and node.input[3] else "(no B: zeros)"
    weights = {"weight_ih_l0": (blocks(w[0]), w_source), "weight_hh_l0": (blocks(r[0]), r_source),
               "bias_ih_l0": (blocks(b[0, :rows]), b_source), "bias_hh_l0": (blocks(b[0, rows:]), b_source)}
    sequences, final, absorbed = _recurrent_output(imp, node, x.shape[0])
    args = {"nonlinearity": _rnn_nonlinearity(imp, node)} if cls is RNN else {}
    layer = imp.make(node, cls, hidden, return_sequences=sequences, **args)
    out = imp.call(node, layer, [x], weights)
    imp.absorbed.update(id(n) for n in absorbed)
    imp.tensors[final] = out
    return []


def _rnn_nonlinearity(imp, node):
    names = [a.decode() if isinstance(a, bytes) else a for a in imp.attr(node, "activations", [b"Tanh"])]
    if len(names) != 1 or names[0].lower() not in ("tanh", "relu"):
        raise _unsupported(node, f"activations {names}: fastnet's RNN is Tanh or Relu")
    return names[0].lower()


def _check_recurrent_attributes(imp, node, cls):
    direction = imp.attr(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    problems = []
    if direction != "forward":
        problems.append(f"direction={direction} (fastnet's are forward only)")
    if imp.attr(node, "clip") is not None:
        problems.append("clip (fastnet does not clip the cell inputs)")
    if imp.attr(node, "layout", 0):
        problems.append("layout=1 (read a Transpose to sequence-first instead)")
    if imp.attr(node, "input_forget", 0):
        problems.append("input_forget=1 (coupled input and forget gates)")
    if cls is GRU and imp.attr(node, "linear_before_reset", 0) != 1:
        problems.append("linear_before_reset=0 (fastnet's GRU is PyTorch's: linear_before_reset=1)")
    if cls is not RNN and imp.attr(node, "activations") is not None:
        defaults = ["Sigmoid", "Tanh", "Tanh"] if cls is LSTM else ["Sigmoid", "Tanh"]
        names = [a.decode() if isinstance(a, bytes) else a for a in imp.attr(node, "activations")]
        if names != defaults:
            problems.append(f"activations {names} (fastnet's are {defaults})")
    if len(node.input) > 7 and node.input[7]:
        problems.append("peepholes P")
    if problems:
        raise _unsupported(node, "; ".join(problems) + " has no fastnet equivalent")


def _recurrent_output(imp, node, steps):
    """(return_sequences, the ONNX tensor that is the layer's output, the nodes read on the way):
    Y -> Squeeze(axis 1) -> Transpose(perm [1, 0, 2]) [-> Gather of the last step], or
    Y_h -> Squeeze(axis 0) or Gather(0 or -1)."""
    def sole_reader(name):
        readers = imp.readers.get(name, []) if name else []
        return readers[0] if len(readers) == 1 and readers[0] is not None else None

    def const_of(reader, index):             # a constant input, its Constant node perhaps not yet folded
        name = reader.input[index] if index < len(reader.input) else ""
        producer = imp.producers.get(name)
        if name not in imp.consts and producer is not None and producer.op_type == "Constant":
            imp.consts[name] = np.asarray(_fold_constant(imp, producer))
        return imp.consts.get(name)

    def is_squeeze(reader, axis, rank):
        if reader.op_type != "Squeeze":
            return False
        axes = const_of(reader, 1) if len(reader.input) > 1 else imp.attr(reader, "axes")
        return axes is not None and list(np.ravel(axes)) in ([axis], [axis - rank])

    def picks(reader, axis, last):           # Gather(axis) of one constant index, the last one
        index = const_of(reader, 1) if reader.op_type == "Gather" else None
        return (index is not None and index.ndim == 0 and imp.attr(reader, "axis", 0) == axis
                and int(index) in (-1, last))

    outputs = list(node.output) + [""] * 3
    read = [bool(name and imp.readers.get(name)) for name in outputs[:3]]
    why = ("of its outputs fastnet reads Y through Squeeze(axis 1) and Transpose(perm [1, 0, 2]), "
           "perhaps then a Gather of the last step, or Y_h through Squeeze(axis 0) or Gather(0)")
    if read[2] or read[0] == read[1]:
        names = [name for name, used in zip(("Y", "Y_h", "Y_c"), read) if used]
        raise _unsupported(node, f"exactly one {why}; this one reads {names or 'none'}")
    if read[1]:
        reader = sole_reader(outputs[1])
        if reader is None or not (is_squeeze(reader, 0, 3) or picks(reader, 0, 0)):
            raise _unsupported(node, why)
        return False, reader.output[0], [reader]
    squeeze = sole_reader(outputs[0])
    transpose = squeeze and sole_reader(squeeze.output[0])
    if squeeze and is_squeeze(squeeze, 1, 4) and transpose and transpose.op_type in _RECURRENT \
            and transpose.input[0] == squeeze.output[0]:
        return True, squeeze.output[0], [squeeze]      # read by the next layer (torch's num_layers > 1)
    if not (squeeze and is_squeeze(squeeze, 1, 4) and transpose and transpose.op_type == "Transpose"
            and list(imp.attr(transpose, "perm", [])) == [1, 0, 2]):
        raise _unsupported(node, why)
    gather = sole_reader(transpose.output[0])
    if gather is not None and picks(gather, 1, steps - 1):
        return False, gather.output[0], [squeeze, transpose, gather]
    return True, transpose.output[0], [squeeze, transpose]


def _activation(cls, **attributes):
    def mapper(imp, node):
        args = {key: float(_shortest_float(imp.attr(node, onnx_name, default)))
                for key, (onnx_name, default) in attributes.items()}
        return imp.call(node, cls(**args), [imp.node_input(node)])
    return mapper


_OPS = {
    "Conv": _conv,
    "Gemm": _dense_from_gemm,
    "MatMul": _dense_from_matmul,
    "Add": _add,
    "Relu": _activation(ReLU),
    "LeakyRelu": _activation(LeakyReLU, negative_slope=("alpha", 0.01)),
    "Sigmoid": _activation(Sigmoid),
    "Tanh": _activation(Tanh),
    "Softmax": _softmax,
    "MaxPool": _pool(MaxPool2D),
    "AveragePool": _pool(AvgPool2D),
    "GlobalAveragePool": _global_avgpool,
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Concat": _concat,
    "Split": _split,
    "Dropout": _passed_through,
    "Identity": _passed_through,
    "Gather": _embedding,
    "Cast": _cast_to_ids,
    "Transpose": _steps_first,
    "ConstantOfShape": _zero_state,
    "Slice": _zero_state,
    "RNN": _recurrent,
    "LSTM": _recurrent,
    "GRU": _recurrent,
}
