"""Buffers on the GPU: how the plan and the model allocate device arrays and move them to and from
the host, with the functions of kernels/cpu/memory.py. A buffer is a numba.cuda device array; a
batch is assembled on the host in a page-locked (pinned) staging array, which the driver copies
to the device directly (no bounce through an unpinned copy).
"""

import numpy as np
from numba import cuda

# ---- host side ----


def zeros(shape, dtype):
    """A device buffer of zeros, copied from the host: buffers are made once, at compile time, and
    a copy costs the simulator nothing where a fill kernel runs one Python thread per element."""
    return cuda.to_device(np.zeros(shape, dtype=np.dtype(dtype)))


def staging(buffer):
    """The pinned host array a batch is assembled in before copy_in sends it to `buffer`."""
    return cuda.pinned_array(buffer.shape, dtype=buffer.dtype)


def _host_like(buffer, host):
    """host as a C-contiguous array of the buffer's shape and dtype: host itself when it already
    is one (the staging arrays), else a converted copy (casting as np.copyto(..., "unsafe") would)."""
    host = np.asarray(host)
    if host.shape != buffer.shape:
        host = np.broadcast_to(host, buffer.shape)
    return np.ascontiguousarray(host, dtype=buffer.dtype)


def copy_in(buffer, host):
    """buffer[...] = host (a host array of the buffer's shape; cast to its dtype)."""
    buffer.copy_to_device(_host_like(buffer, host))


def copy_out(host, buffer):
    """host[...] = buffer: straight into host where it is a C-contiguous array of the buffer's dtype."""
    if host.dtype == buffer.dtype and host.flags.c_contiguous and host.shape == buffer.shape:
        buffer.copy_to_host(host)
    else:
        np.copyto(host, buffer.copy_to_host())


def to_host(buffer):
    """A host copy of the buffer."""
    return buffer.copy_to_host()
