"""The exceptions fastnet raises. Every one is a FastnetError, so `except fn.FastnetError` catches all.

The second base class of each says what kind of problem it is, so code written
against the standard exceptions (ValueError for bad input, ...) keeps working:
  ValueError          bad input: shapes, data, specs, compile arguments, checkpoints. A corrupt or
                      mismatched checkpoint is bad input that happens to come from a file (a file
                      that is not there stays the standard FileNotFoundError, an OSError);
  FloatingPointError  training diverged (DivergenceError);
  MemoryError         the network does not fit the memory compile may use (MemoryBudgetError);
  RuntimeError        a model called from a second thread while another call is using it (BusyError).
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
    """The training loss, or a gradient with a finite loss, became non-finite. The facts are
    attributes as well as in the message: `epoch` (fit's epoch number, None outside fit), `step`
    (the optimizer step that was refused, counting from 1), `last_loss` (the loss of the last
    finite step, None if there was none), `loss` (this step's loss), `bad_gradients` (how many
    gradient values were NaN or inf; None where the loss itself was not finite) and `checkpoint`
    (the last good checkpoint's path where `fastnet train` kept one, else None)."""

    def __init__(self, message, epoch=None, step=None, last_loss=None, loss=None, bad_gradients=None,
                 checkpoint=None):
        super().__init__(message)
        self.epoch, self.step, self.last_loss, self.loss = epoch, step, last_loss, loss
        self.bad_gradients, self.checkpoint = bad_gradients, checkpoint


class SpecError(FastnetError, ValueError):
    """A network spec (TOML file or dict) that does not describe a network: unknown layer types,
    bad arguments, a missing input shape; and compile's own arguments that cannot be used (an unknown
    loss, an optimizer's lr or momentum, the dtype, max_memory)."""


class MonitorError(FastnetError, ValueError):
    """A callback's monitor (fastnet.callbacks) is not among the figures fit records (or was not
    measured)."""


class BusyError(FastnetError, RuntimeError):
    """A model was called from one thread while a call from another (a fit, say) was using its
    buffers: refused at once rather than run on half-written buffers. A model serves one thread at a
    time; compile (or fn.load) one model per thread."""


class MemoryBudgetError(FastnetError, MemoryError):
    """The memory a network needs (parameters, gradients, optimizer state, activations, workspaces:
    estimated from the shapes at compile, before anything is allocated) exceeds the memory available
    (or compile's max_memory)."""


class DistributedError(FastnetError, ValueError):
    """The ranks of a data-parallel run (fastnet/distributed.py) disagree: different settings, spec or
    data on some rank, parameters that drifted apart, or a peer that failed. `everywhere` is true
    when every rank raised it alike (found by a collective), so no rank needs to abort the others."""

    everywhere = False
