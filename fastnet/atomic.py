"""Atomic file writes: a crash or an error mid-write leaves the previous file whole."""

import contextlib
import os
import re
import secrets


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file; on success it is flushed, fsynced and renamed onto `path`.

    The data goes to a temporary file in the same directory (so the rename is atomic), created with
    O_EXCL under a random name (no clash with a concurrent writer) and mode 0o666, so the umask
    decides the final permissions as open() would. On any error the temporary file is removed.
    """
    name = os.fspath(path)
    folder = os.path.dirname(name) or "."
    tmp = os.path.join(folder, f".{os.path.basename(name)}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def remove_stale(folder):
    """Remove the temporary files atomic_write left in `folder` when a process was killed mid-write
    (SIGKILL, a power cut: nothing ran to remove them). Only for a folder no one else writes to now."""
    for entry in os.listdir(folder):
        if re.fullmatch(r"\..+\.[0-9a-f]{8}\.tmp", entry):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, entry))


def _fsync_folder(folder):
    # The rename itself survives a power cut only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
