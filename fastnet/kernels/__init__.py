"""Kernel namespaces, one per device, with the same function names and arguments."""

import importlib

from ..errors import FastnetError

DEVICES = ("cpu",)


def namespace(device):
    """The kernel module for `device`; CUDA modules are imported only when asked for."""
    if device not in DEVICES:
        raise FastnetError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    return importlib.import_module(f"{__name__}.{device}")
