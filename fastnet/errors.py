"""The exceptions fastnet raises. Every one is a FastnetError, so `except fn.FastnetError` catches all.

The second base class of each says what kind of problem it is, so code written
against the standard exceptions (ValueError for bad input, ...) keeps working:
  ValueError          bad input: shapes, data, specs, compile arguments, checkpoints. A corrupt or
                      mismatched checkpoint is bad input that happens to come from a file (a file
                      that is not there stays the standard FileNotFoundError, an OSError);
  FloatingPointError  training diverged (DivergenceError);
  MemoryError         the network does not fit the memory compile may use (MemoryBudgetError).
`fastnet` (the command line, fastnet/cli.py) prints any of them as one line and exits with 2
(DivergenceError: 1).
"""


class FastnetError(Exception):
    """Base class of every error fastnet raises on purpose."""


class ShapeError(FastnetError, ValueError):
    """A shape does not fit: a layer's input at compile time, or the data given to a model."""


class DataError(FastnetError, ValueError):
    """Data that cannot be used: a malformed file, labels out of range, non-finite values."""


class CheckpointError(FastnetError, ValueError):
    """A checkpoint or state dict that does not match the model, or a file that cannot be read."""


class DivergenceError(FastnetError, FloatingPointError):
    """The training loss became non-finite."""


class SpecError(FastnetError, ValueError):
    """A network spec (TOML file or dict) that does not describe a network: unknown layer types,
    bad arguments, a missing input shape."""


class MonitorError(FastnetError, ValueError):
    """A callback's monitor (fastnet.callbacks) is not among the figures fit records (or was not
    measured)."""


class MemoryBudgetError(FastnetError, MemoryError):
    """The memory a network needs (parameters, gradients, optimizer state, activations, workspaces:
    estimated from the shapes at compile, before anything is allocated) exceeds the memory available
    (or compile's max_memory)."""


class DistributedError(FastnetError, ValueError):
    """The ranks of a data-parallel run (fastnet/distributed.py) disagree: different settings, spec or
    data on some rank, parameters that drifted apart, or a peer that failed. `everywhere` is true
    when every rank raised it alike (found by a collective), so no rank needs to abort the others."""

    everywhere = False
