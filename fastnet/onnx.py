"""ONNX export: a compiled model's plan written as an ONNX graph (Model.export_onnx, `fastnet export`).

Built with the `onnx` package's helper API (pip install 'fastnet[onnx]'), imported only when a model
is exported, so `import fastnet` never needs it. The graph has one input "input" of shape
("batch", *input_shape) and one output "logits" (what Model.predict returns), in the model's dtype;
the parameters and BatchNorm's running statistics are initializers, copied from the state dict.

What each layer becomes:
  Dense -> Gemm(transB=1); Conv2D -> Conv (pads, strides), and a ReLU the plan fused into it is
  its own Relu node; ReLU / LeakyReLU / Sigmoid / Tanh -> Relu / LeakyRelu(alpha) / Sigmoid / Tanh;
  Softmax -> Softmax(axis=1); MaxPool2D / AvgPool2D -> MaxPool / AveragePool(count_include_pad=1);
  GlobalAvgPool2D -> GlobalAveragePool + Flatten; Flatten -> Flatten(axis=1); Dropout -> nothing
  (Identity where it is the output); BatchNorm1D / 2D -> BatchNormalization (evaluation mode);
  Add -> Add (chained for more than two inputs); Concat -> Concat; Slice -> Split (sizes as an input);
  Normalize -> Sub, Div by constants of shape (1, C, 1, ...) (or all ones for one mean and std);
  Reshape -> Reshape (the batch kept: shape [0, *shape]);
  RNN / LSTM / GRU -> Transpose to ONNX's sequence-first (T, N, F), the RNN (activation Tanh or
  Relu) / LSTM / GRU (linear_before_reset=1: PyTorch's b_hn inside r * (W_hn h + b_hn)) op, one
  direction, with W, R, B (= [Wb, Rb]) the PyTorch-layout weights with their gate blocks reordered
  (LSTM i, f, g, o -> ONNX i, o, f, c; GRU r, z, n -> z, r, h); then for return_sequences Squeeze of
  Y's direction axis and Transpose back to (N, T, H), else Squeeze of Y_h to (N, H). (A float64
  model's recurrent ops are valid ONNX, but ONNX Runtime's CPU kernels for them take float32 only.)
Any other layer type (a user's own Layer subclass) is a FastnetError naming the layer.

Below the model in the import layers: it reads the plan through the model it is given, and imports
nothing above the layers.
"""

import numpy as np

from ._version import __version__
from .atomic import atomic_write
from .errors import FastnetError
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
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    Normalize,
    ReLU,
    Reshape,
    Sigmoid,
    Slice,
    Softmax,
    Tanh,
)

MIN_OPSET = 13          # Split takes its sizes as an input, Softmax works on one axis
INPUT, OUTPUT = "input", "logits"


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise FastnetError("ONNX export needs the onnx package: pip install 'fastnet[onnx]'") from None
    return onnx, helper, numpy_helper


def export(model, path, opset=17):
    """Write `model` (a compiled fastnet Model) to `path` as an ONNX model of the given opset,
    checked by onnx.checker; atomic (a failure leaves any previous file whole). Returns the path."""
    onnx, helper, numpy_helper = _import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise FastnetError(f"ONNX export: opset must be an integer from {MIN_OPSET} to {newest} "
                           f"(the installed onnx's newest), got {opset!r}")
    proto = build(model, opset, onnx, helper, numpy_helper)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:   # onnx's checker and shape inference raise their own types
        raise FastnetError(f"ONNX export produced a model onnx.checker rejects: {err}") from None
    try:
        with atomic_write(path) as f:
            f.write(proto.SerializeToString())
    except OSError as err:
        raise FastnetError(f"ONNX export: cannot write {path}: {err.strerror or err}") from None
    return path


def build(model, opset, onnx, helper, numpy_helper):
    """The onnx.ModelProto of a compiled model (unchecked)."""
    plan = model.plan
    dtype = np.dtype(plan.dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    state = model.state_dict()
    g = _Builder(helper, numpy_helper, dtype, state)

    names = {id(plan.input_node): INPUT}        # node -> its ONNX tensor name
    output_node = plan.output_node
    for position, node in enumerate(plan.nodes, start=1):
        names[id(node)] = OUTPUT if node is output_node else f"t{position}"
    split_done = set()
    for slot, node in zip(plan.slots, plan.nodes):
        layer = slot.layer
        if type(layer) not in _MAPPERS:
            raise FastnetError(f"ONNX export: layer {layer.describe()} (type {type(layer).__name__}) "
                               f"has no ONNX mapping; the layers exported are "
                               f"{', '.join(sorted(cls.__name__ for cls in _MAPPERS))}")
        inputs = [names[id(src)] for src in node.inputs]
        out = names[id(node)]
        if isinstance(layer, Slice):
            if id(layer) in split_done:
                continue
            split_done.add(id(layer))
            # one Split for all the layer's outputs; a section nothing reads gets a name of its own
            outs = [f"{slot.prefix}.unused{i}" for i in range(layer.n_outputs)]
            for other in plan.nodes:
                if other.layer is layer:
                    outs[other.output_index] = names[id(other)]
            g.add("Split", inputs + [g.const(f"{slot.prefix}.split", np.array(layer.sections, np.int64))],
                  outs, axis=layer.axis)
            continue
        if isinstance(layer, Normalize):
            _normalize(g, layer, slot.prefix, inputs, out, node.shape)
            continue
        if isinstance(layer, Dropout):
            if node is output_node:
                g.add("Identity", inputs, [out])
            else:
                names[id(node)] = inputs[0]        # dropped: readers take its input
            continue
        _MAPPERS[type(layer)](g, layer, slot.prefix, inputs, out)

    shape = ["batch", *plan.input_node.shape]
    graph = helper.make_graph(
        g.nodes, "fastnet",
        [helper.make_tensor_value_info(INPUT, elem, shape)],
        [helper.make_tensor_value_info(OUTPUT, elem, ["batch", *output_node.shape])],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastnet",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    return proto


class _Builder:
    def __init__(self, helper, numpy_helper, dtype, state):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.dtype, self.state = dtype, state
        self.nodes, self.initializers = [], []
        self.count = 0

    def add(self, op, inputs, outputs, **attributes):
        self.count += 1
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=f"{op}_{self.count}", **attributes))

    def const(self, name, array):
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def param(self, prefix, short):
        name = f"{prefix}.{short}"
        return self.const(name, np.asarray(self.state[name], self.dtype))


def _dense(g, layer, prefix, inputs, out):
    args = inputs + [g.param(prefix, "weight")] + ([g.param(prefix, "bias")] if layer.bias else [])
    g.add("Gemm", args, [out], transB=1)


def _conv(g, layer, prefix, inputs, out):
    args = inputs + [g.param(prefix, "weight")] + ([g.param(prefix, "bias")] if layer.bias else [])
    ph, pw = layer.padding
    g.add("Conv", args, [out], kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
          pads=[ph, pw, ph, pw])


def _pool(op, **extra):
    def mapper(g, layer, prefix, inputs, out):
        ph, pw = layer.padding
        g.add(op, inputs, [out], kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
              pads=[ph, pw, ph, pw], **extra)
    return mapper


def _global_avgpool(g, layer, prefix, inputs, out):
    pooled = f"{out}.pooled"
    g.add("GlobalAveragePool", inputs, [pooled])
    g.add("Flatten", [pooled], [out], axis=1)


def _batchnorm(g, layer, prefix, inputs, out):
    args = inputs + [g.param(prefix, short) for short in ("weight", "bias", "running_mean", "running_var")]
    g.add("BatchNormalization", args, [out], epsilon=layer.eps)


def _normalize(g, layer, prefix, inputs, out, shape):
    # constants that broadcast over the batch and the axes after the channels, as the kernels do
    def constant(short, values):
        dims = [1, len(values)] + [1] * (len(shape) - 1) if len(values) > 1 else [1] * (len(shape) + 1)
        return g.const(f"{prefix}.{short}", np.asarray(values, g.dtype).reshape(dims))

    centred = f"{out}.centred"
    g.add("Sub", inputs + [constant("mean", layer.means)], [centred])
    g.add("Div", [centred, constant("std", layer.stds)], [out])


def _reshape(g, layer, prefix, inputs, out):
    shape = g.const(f"{prefix}.shape", np.array([0, *layer.shape], np.int64))   # 0: the batch kept
    g.add("Reshape", inputs + [shape], [out])


# ONNX's gate blocks as indices into PyTorch's (fastnet's) order
_GATE_ORDER = {RNN: [0], LSTM: [0, 3, 1, 2], GRU: [1, 0, 2]}   # LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h


def _recurrent(g, layer, prefix, inputs, out):
    order, hidden = _GATE_ORDER[type(layer)], layer.hidden_size

    def blocks(short):                   # the parameter with its gate blocks in ONNX's order
        value = np.asarray(g.state[f"{prefix}.{short}"], g.dtype)
        return np.concatenate([value[i * hidden:(i + 1) * hidden] for i in order])

    w = g.const(f"{prefix}.W", blocks("weight_ih_l0")[None])                        # (1, gates*H, F)
    r = g.const(f"{prefix}.R", blocks("weight_hh_l0")[None])                        # (1, gates*H, H)
    b = g.const(f"{prefix}.B", np.concatenate([blocks("bias_ih_l0"), blocks("bias_hh_l0")])[None])
    attributes = {"hidden_size": hidden}
    if isinstance(layer, RNN):
        attributes["activations"] = ["Relu" if layer.nonlinearity == "relu" else "Tanh"]
    if isinstance(layer, GRU):
        attributes["linear_before_reset"] = 1
    steps_first = f"{out}.steps_first"
    g.add("Transpose", inputs, [steps_first], perm=[1, 0, 2])                       # (T, N, F)
    if layer.return_sequences:
        y = f"{out}.Y"                                                              # (T, 1, N, H)
        g.add(type(layer).__name__, [steps_first, w, r, b], [y], **attributes)
        squeezed = f"{out}.Y_squeezed"
        g.add("Squeeze", [y, g.const(f"{prefix}.direction_axis", np.array([1], np.int64))], [squeezed])
        g.add("Transpose", [squeezed], [out], perm=[1, 0, 2])                       # (N, T, H)
    else:
        y_h = f"{out}.Y_h"                                                          # (1, N, H)
        g.add(type(layer).__name__, [steps_first, w, r, b], ["", y_h], **attributes)
        g.add("Squeeze", [y_h, g.const(f"{prefix}.direction_axis", np.array([0], np.int64))], [out])


def _add(g, layer, prefix, inputs, out):
    if len(inputs) == 1:
        g.add("Identity", inputs, [out])
        return
    total = inputs[0]
    for i, x in enumerate(inputs[1:], start=1):
        target = out if i == len(inputs) - 1 else f"{out}.sum{i}"
        g.add("Add", [total, x], [target])
        total = target


def _simple(op, **attributes):
    def mapper(g, layer, prefix, inputs, out):
        g.add(op, inputs, [out], **{key: value(layer) if callable(value) else value
                                    for key, value in attributes.items()})
    return mapper


_MAPPERS = {
    Dense: _dense,
    Conv2D: _conv,
    ReLU: _simple("Relu"),
    LeakyReLU: _simple("LeakyRelu", alpha=lambda layer: layer.negative_slope),
    Sigmoid: _simple("Sigmoid"),
    Tanh: _simple("Tanh"),
    Softmax: _simple("Softmax", axis=1),
    MaxPool2D: _pool("MaxPool"),
    AvgPool2D: _pool("AveragePool", count_include_pad=1),
    GlobalAvgPool2D: _global_avgpool,
    Flatten: _simple("Flatten", axis=1),
    Dropout: None,        # handled in build(): dropped
    BatchNorm1D: _batchnorm,
    BatchNorm2D: _batchnorm,
    Add: _add,
    Concat: _simple("Concat", axis=lambda layer: layer.axis),
    Slice: None,          # handled in build(): one Split for all its outputs
    Normalize: None,      # handled in build(): Sub and Div, shaped by the node's shape
    Reshape: _reshape,
    RNN: _recurrent,
    LSTM: _recurrent,
    GRU: _recurrent,
}
