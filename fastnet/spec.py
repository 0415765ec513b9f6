"""Network spec files: a network written down as data (TOML), like a Caffe prototxt or a Darknet cfg.

    input_shape = [1, 28, 28]

    [[layers]]
    type = "conv2d"
    out_channels = 32
    kernel_size = 3
    padding = 1

    [[layers]]
    type = "relu"
    ...

`from_spec(path_or_dict)` builds the network (it remembers input_shape, so `compile` needs only
the batch size); `to_spec(network)` (the network's own `to_spec()`) writes one down, and every
checkpoint carries it. A layer's entry is its constructor's arguments (Layer.config) plus `type`,
the class name in lower case ("conv2d", "maxpool2d", "batchnorm2d", ...; case and underscores are
ignored): every layer class registers itself under it (Layer.types), so a layer defined anywhere,
a user's own included, can be named in a spec.

A graph (fastnet.Graph) is a spec where layers name their `inputs`: names of other layers, of the
graph input (`input`, unless the spec sets `input = "..."`), or "name:i" for output i of a Slice.
An entry without `inputs` reads the entry before it, so a chain needs no `inputs` at all. The
output is the last entry unless the spec sets `output = "..."`. Entries may come in any order;
a cycle, an unknown name, or a layer whose output nothing reads is a SpecError.

    input_shape = [16, 8, 8]
    [[layers]]
    type = "conv2d"
    name = "branch"
    out_channels = 16
    kernel_size = 3
    padding = 1
    [[layers]]
    type = "add"
    inputs = ["input", "branch"]
"""

import os

import tomllib

from .errors import FastnetError, SpecError
from .graph import Graph, Sequential, name_layers
from .layers import Layer
from .nodes import Input

GRAPH_KEYS = ("input", "output")


def from_spec(spec):
    """A Sequential, or a Graph when layers name their inputs, from a TOML file's path or the
    equivalent dict."""
    if isinstance(spec, (str, os.PathLike)):
        spec = _read_toml(os.fspath(spec))
    if not isinstance(spec, dict):
        raise SpecError(f"a spec is a TOML file or a dict, got {type(spec).__name__}")
    entries = spec.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError("a spec needs a non-empty list of [[layers]]")
    input_shape = spec.get("input_shape")
    if input_shape is not None and (not isinstance(input_shape, list) or not input_shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)):
        raise SpecError(f"input_shape must be a non-empty list of positive integers, got {input_shape!r}")
    is_graph = any(key in spec for key in GRAPH_KEYS) or any(
        isinstance(entry, dict) and "inputs" in entry for entry in entries)
    if not is_graph:
        built = [_build_layer(i, entry) for i, entry in enumerate(entries)]
        try:
            return Sequential(built, input_shape=input_shape)
        except FastnetError as err:   # a several-output layer in a chain
            raise SpecError(f"{err}: give the layers `inputs`") from None
    if input_shape is None:
        raise SpecError("a graph spec needs its input_shape")
    return _build_graph(spec, entries, input_shape)


def to_spec(network):
    """The dict `from_spec` turns back into an equal network (input_shape included if known)."""
    return network.to_spec()


def _build_graph(spec, entries, input_shape):
    input_name = spec.get("input", "input")
    if not isinstance(input_name, str) or not input_name or ":" in input_name:
        raise SpecError(f"input must be a name (a string without ':'), got {input_name!r}")
    layers = [_build_layer(i, {k: v for k, v in entry.items() if k != "inputs"} if isinstance(entry, dict)
                           else entry) for i, entry in enumerate(entries)]
    named = [layer.name for layer in layers if layer.name]
    if len(set(named)) != len(named) or input_name in named:
        twice = sorted({name for name in named + [input_name] if (named + [input_name]).count(name) > 1})
        raise SpecError(f"names must be unique, got {', '.join(twice)} more than once")
    name_layers(layers)
    reads = [_inputs_of(i, entry, layers, input_name) for i, entry in enumerate(entries)]
    defined = {input_name: Input(input_shape, name=input_name)}
    pending = list(range(len(layers)))
    while pending:                      # place each layer once everything it reads is there
        ready = [i for i in pending if all(ref in defined for ref in reads[i])]
        if not ready:
            raise SpecError(_unresolved(pending, reads, layers, defined))
        for i in ready:
            try:
                outputs = layers[i](*[defined[ref] for ref in reads[i]])
            except FastnetError as err:
                raise SpecError(f"layer {i} ({layers[i].name}): {err}") from None
            for node in outputs if isinstance(outputs, list) else [outputs]:
                defined[node.name] = node
        pending = [i for i in pending if i not in ready]
    output_name = spec.get("output", layers[-1].name)
    if output_name not in defined or output_name == input_name:
        raise SpecError(f"output {output_name!r} is not the output of a layer in the spec")
    read = {ref.split(":")[0] for refs in reads for ref in refs} | {output_name.split(":")[0]}
    unused = [layer.name for layer in layers if layer.name not in read]
    if unused:
        raise SpecError(f"nothing reads the output of {', '.join(unused)}: not an input of any "
                        f"layer, nor the spec's output")
    try:
        return Graph(inputs=defined[input_name], outputs=defined[output_name])
    except FastnetError as err:
        raise SpecError(str(err)) from None


def _inputs_of(index, entry, layers, input_name):
    """The names layer `index` reads: its `inputs`, or else the entry before it."""
    if "inputs" not in entry:
        if index == 0:
            return [input_name]
        previous = layers[index - 1]
        if previous.n_outputs > 1:
            raise SpecError(f"layer {index} ({layers[index].name}): the layer before it has "
                            f"{previous.n_outputs} outputs; say which in `inputs`")
        return [previous.name]
    refs = entry["inputs"]
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise SpecError(f"layer {index} ({layers[index].name}): inputs must be a non-empty list of "
                        f"names, got {entry['inputs']!r}")
    return refs


def _unresolved(pending, reads, layers, defined):
    """Why the layers left cannot be placed: a name that nothing defines, or a cycle."""
    names = {layers[i].name: i for i in pending}
    for i in pending:
        for ref in reads[i]:
            if ref not in defined and ref.split(":")[0] not in names:
                return (f"layer {i} ({layers[i].name}) reads {ref!r}, which is neither the input nor "
                        f"a layer's output")
    # Every name is some pending layer: walking back from any one of them must come round again.
    path, i = [], pending[0]
    while layers[i].name not in path:
        path.append(layers[i].name)
        i = next(names[ref.split(":")[0]] for ref in reads[i] if ref not in defined)
    cycle = path[path.index(layers[i].name):] + [layers[i].name]
    return f"the layers form a cycle: {' -> '.join(reversed(cycle))}"


def _read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise SpecError(f"cannot read the spec file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:   # TOML is UTF-8 text
        raise SpecError(f"{path} is not valid TOML: {err}") from None


def _build_layer(index, entry):
    if not isinstance(entry, dict) or "type" not in entry:
        raise SpecError(f"layer {index}: each [[layers]] entry needs a type, got {entry!r}")
    args = dict(entry)
    kind = str(args.pop("type"))
    cls = Layer.types.get(kind.lower().replace("_", ""))
    if cls is None:
        raise SpecError(f"layer {index}: unknown type {kind!r}; known: {', '.join(sorted(Layer.types))}")
    try:
        return cls(**args)
    except (TypeError, ValueError, OverflowError) as err:
        # an argument the constructor does not take, one missing, or a value of the wrong type
        # ("ten" for a size; int("ten") is a ValueError) or beyond what numpy holds
        raise SpecError(f"layer {index} ({kind}): {err}") from None
    except FastnetError as err:
        raise SpecError(f"layer {index} ({kind}): {err}") from None
