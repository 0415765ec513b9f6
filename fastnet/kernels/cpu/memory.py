"""Buffers: how the plan and the model allocate arrays and move them to and from the host, without
knowing the device. On the CPU a buffer is a NumPy array and "moving" is a copy (or nothing)."""

import numpy as np


def zeros(shape, dtype):
    """A buffer of zeros."""
    return np.zeros(shape, dtype)


def staging(buffer):
    """The host array a batch is assembled in before it goes into `buffer`: on the CPU, the buffer
    itself, so assembling the batch is all there is to do."""
    return buffer


def copy_in(buffer, host):
    """buffer[...] = host (a host array of the buffer's shape; cast to its dtype)."""
    if host is not buffer:
        np.copyto(buffer, host, casting="unsafe")


def copy_out(host, buffer):
    """host[...] = buffer."""
    np.copyto(host, buffer)


def to_host(buffer):
    """A host copy of the buffer."""
    return np.array(buffer)
