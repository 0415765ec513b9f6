"""Workspaces: the scratch arrays a kernel is handed instead of allocating in the training loop.

Every op that needs scratch declares it, per device, in `k.<op>_workspace_shapes(...)`: a dict
name -> shape, where a plain shape is per sample (allocated as (batch, *shape) in the model's dtype
and handed over sliced to the current batch) and a WorkspaceSpec says otherwise (another dtype, or
no batch axis). The names are the kernels' parameter names: a kernel takes the workspaces it uses
as its last arguments, by those names, and a device declares only what its own kernels take. So
the CPU and the CUDA kernels of one op agree on every other argument and may differ in these; the
layers pass them by keyword (Slot.workspaces_for in fastnet/layers/base.py, through
Workspaces.for_kernel here).

`allocate` is the one place workspace buffers are made (the plan calls it for every layer, a loss
for its own).
"""

import inspect

import numpy as np


class WorkspaceSpec:
    """A workspace of a dtype other than the model's (e.g. integer argmax indices; None: the
    model's), or one with no batch axis (per_sample=False: allocated as `shape` exactly, used whole,
    e.g. per-thread partial sums)."""

    def __init__(self, shape, dtype=None, per_sample=True):
        self.shape = tuple(shape)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.per_sample = per_sample

    @classmethod
    def of(cls, spec):
        """spec itself, or a plain per-sample shape as a WorkspaceSpec."""
        return spec if isinstance(spec, cls) else cls(spec)

    def __repr__(self):
        return f"WorkspaceSpec({self.shape}, dtype={self.dtype}, per_sample={self.per_sample})"


class Workspaces(dict):
    """name -> buffer, for one layer call (or one loss); `per_sample` holds the names of the buffers
    with a batch axis, which are sliced to the current batch when handed to a kernel."""

    def __init__(self, buffers=(), per_sample=()):
        super().__init__(buffers)
        self.per_sample = frozenset(per_sample)
        self._names = {}            # kernel -> the names of this dict it takes (computed once)

    def batch(self, name, n):
        """Buffer `name` for a batch of n rows: a view of the first n rows, or the whole buffer
        where it has no batch axis."""
        buffer = self[name]
        return buffer[:n] if name in self.per_sample else buffer

    def for_kernel(self, kernel, n):
        """{parameter name: buffer} of the workspaces `kernel` takes, for a batch of n rows:
        kernel(..., **workspaces.for_kernel(kernel, n))."""
        names = self._names.get(kernel)
        if names is None:
            kernel = _unwrap(kernel)            # a wrapper (functools.wraps) takes its kernel's
            names = self._names.get(kernel)
            if names is None:
                names = self._names[kernel] = tuple(p for p in parameter_names(kernel) if p in self)
        return {name: self.batch(name, n) for name in names}


_parameters = {}


def parameter_names(kernel):
    """A kernel's parameter names, in order: a Numba dispatcher's are its Python function's, a
    wrapper's (functools.wraps) those of the kernel it wraps. Computed once per kernel."""
    kernel = _unwrap(kernel)
    names = _parameters.get(kernel)
    if names is None:
        names = _parameters[kernel] = tuple(
            inspect.signature(getattr(kernel, "py_func", kernel)).parameters)
    return names


def _unwrap(kernel):
    """The kernel a functools.wraps wrapper wraps: a launcher, or a Numba dispatcher (which itself
    wraps its Python function, py_func: the unwrapping stops there)."""
    while True:
        inner = getattr(kernel, "__wrapped__", None)
        if inner is None or inner is getattr(kernel, "py_func", None):
            return kernel
        kernel = inner


def allocate(zeros, specs, batch, dtype):
    """Workspaces for `specs` (name -> shape or WorkspaceSpec, as <op>_workspace_shapes give them)
    and `batch` rows, made with the device's zeros(shape, dtype) in `dtype` unless a spec names
    another."""
    buffers, per_sample = {}, []
    for name, spec in specs.items():
        spec = WorkspaceSpec.of(spec)
        shape = (batch, *spec.shape) if spec.per_sample else spec.shape
        buffers[name] = zeros(shape, spec.dtype or dtype)
        if spec.per_sample:
            per_sample.append(name)
    return Workspaces(buffers, per_sample)
