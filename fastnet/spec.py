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

`from_spec(path_or_dict)` builds the Sequential (it remembers input_shape, so `compile` needs only
the batch size); `to_spec(network)` writes one down, and every checkpoint carries it. A layer's
entry is its constructor's arguments (Layer.config) plus `type`, the class name in lower case
("conv2d", "maxpool2d", "batchnorm2d", ...; case and underscores are ignored).
"""

import os
import tomllib

from . import layers as layer_classes
from .errors import FastnetError, SpecError
from .graph import Sequential

LAYER_TYPES = {cls.__name__.lower(): cls for cls in (
    layer_classes.Dense, layer_classes.Conv2D, layer_classes.MaxPool2D, layer_classes.AvgPool2D,
    layer_classes.GlobalAvgPool2D, layer_classes.BatchNorm1D, layer_classes.BatchNorm2D,
    layer_classes.ReLU, layer_classes.LeakyReLU, layer_classes.Sigmoid, layer_classes.Tanh,
    layer_classes.Softmax, layer_classes.Flatten, layer_classes.Dropout)}


def from_spec(spec):
    """A Sequential from a TOML file's path or the equivalent dict."""
    if isinstance(spec, (str, os.PathLike)):
        spec = _read_toml(os.fspath(spec))
    if not isinstance(spec, dict):
        raise SpecError(f"a spec is a TOML file or a dict, got {type(spec).__name__}")
    entries = spec.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError("a spec needs a non-empty list of [[layers]]")
    built = [_build_layer(i, entry) for i, entry in enumerate(entries)]
    input_shape = spec.get("input_shape")
    if input_shape is not None and (not isinstance(input_shape, list)
                                    or not all(isinstance(d, int) and d > 0 for d in input_shape)):
        raise SpecError(f"input_shape must be a list of positive integers, got {input_shape!r}")
    return Sequential(built, input_shape=input_shape)


def to_spec(network):
    """The dict `from_spec` turns back into an equal network (input_shape included if known)."""
    spec = {}
    if network.input_shape is not None:
        spec["input_shape"] = list(network.input_shape)
    spec["layers"] = [{"type": type(layer).__name__.lower(), **layer.config()} for layer in network.layers]
    return spec


def _read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise SpecError(f"cannot read the spec file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path} is not valid TOML: {err}") from None


def _build_layer(index, entry):
    if not isinstance(entry, dict) or "type" not in entry:
        raise SpecError(f"layer {index}: each [[layers]] entry needs a type, got {entry!r}")
    args = dict(entry)
    kind = str(args.pop("type"))
    cls = LAYER_TYPES.get(kind.lower().replace("_", ""))
    if cls is None:
        raise SpecError(f"layer {index}: unknown type {kind!r}; known: {', '.join(sorted(LAYER_TYPES))}")
    try:
        return cls(**args)
    except TypeError as err:     # an argument the constructor does not take, or one missing
        raise SpecError(f"layer {index} ({kind}): {err}") from None
    except FastnetError as err:
        raise SpecError(f"layer {index} ({kind}): {err}") from None
