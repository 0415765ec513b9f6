"""The exceptions fastnet raises. Every one is a FastnetError, so `except fn.FastnetError` catches all.

The second base class of each says what kind of problem it is, so code written
against the standard exceptions (ValueError for bad input, ...) keeps working.
"""


class FastnetError(Exception):
    """Base class of every error fastnet raises on purpose."""


class ShapeError(FastnetError, ValueError):
    """A shape does not fit: a layer's input at compile time, or the data given to a model."""


class DataError(FastnetError, ValueError):
    """Data that cannot be used: a malformed file, labels out of range, non-finite values."""


class CheckpointError(FastnetError):
    """A checkpoint or state dict that does not match the model, or a file that cannot be read."""


class DivergenceError(FastnetError, FloatingPointError):
    """The training loss became non-finite."""


class SpecError(FastnetError, ValueError):
    """A network spec (TOML file or dict) that does not describe a network: unknown layer types,
    bad arguments, a missing input shape."""


class MonitorError(FastnetError, ValueError):
    """A callback's monitor (fastnet.callbacks) is not among the figures fit records (or was not
    measured)."""
