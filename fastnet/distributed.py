"""Data-parallel training over MPI (mpi4py): the communicator Model.fit talks to.

Every rank runs the same program (`mpiexec -n K fastnet train ...`, or a script calling fit);
what fit needs from its peers is this small interface:

    rank, size, is_main, local_rank
    allreduce_sum(array)   in place, summed over the ranks (the flat gradients: one per step)
    bcast_array(array)     in place, rank 0's values
    bcast(obj)             rank 0's object (small: settings, paths, RNG states)
    allgather(obj)         every rank's object, in rank order (hashes compared by every rank)
    barrier(), abort(code)

`world()` is the communicator of this process: MPI when a launcher started it (detected from the
environment before mpi4py is imported, so a single-process run never loads MPI), else `Single`
(size 1, every collective a no-op). `FakeWorld(K)` runs K replicas in threads of one process for
tests: threads, not a lock-step driver, because fit is an ordinary loop and a driver would have to
turn it inside out; only one replica runs at a time (a run token handed over inside every
collective), so Numba's thread pool is never entered by two replicas at once and a run is
deterministic.

The split of a global batch of m rows over K ranks is `shard(m, rank, size)`: contiguous slices,
sizes differing by at most one (the first m % K ranks one row more), a rank getting 0 rows when
m < K (it still joins every collective, with zero gradients).
"""

import os
import sys
import threading
import time
import zlib

import numpy as np

from .errors import DistributedError

# Set by the launchers: MPICH's hydra (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx (PMIX_RANK),
# Intel MPI (PMI_* too). FASTNET_MPI=1 asks for MPI without them (e.g. a launcher not listed here).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")

CHECK_EVERY = 100    # steps between the checks that every rank holds the same parameters


def launched():
    """True when this process was started by an MPI launcher (or FASTNET_MPI=1 asks for MPI)."""
    if os.environ.get("FASTNET_MPI", "") not in ("", "0"):
        return True
    return any(name in os.environ for name in RANK_VARIABLES)


def shard(m, rank, size):
    """(lo, hi): rank's contiguous slice of a global batch of m rows."""
    base, extra = divmod(m, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def differing_ranks(values):
    """The ranks whose value in `values` (an allgather's, in rank order) differs from rank 0's."""
    return [rank for rank, value in enumerate(values) if value != values[0]]


def everywhere(err):
    """`err`, marked as met by every rank alike: the CLI reports it once, from rank 0, with no abort."""
    err.everywhere = True
    return err


def fingerprint(obj):
    """A short hash of a JSON-able description (compared across ranks)."""
    import json
    return zlib.crc32(json.dumps(obj, sort_keys=True, default=str).encode())


def array_fingerprint(*arrays):
    """A CRC-32 of the bytes of host arrays: arrays that differ in any bit differ in it (but for a
    collision, one in 2**32)."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8), crc)
    return crc


class Comm:
    """The interface; `Single` is the one-process case."""
    rank, size, local_rank = 0, 1, 0

    @property
    def is_main(self):
        return self.rank == 0

    def allreduce_sum(self, array):
        return array

    def bcast_array(self, array):
        return array

    def bcast(self, obj):
        return obj

    def allgather(self, obj):
        return [obj]

    def barrier(self):
        pass

    def abort(self, code=1):
        sys.exit(code)

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class Single(Comm):
    """One process: every collective is a no-op."""


class MPIComm(Comm):
    """mpi4py's COMM_WORLD. A waiting rank does not spin a core: MPICH and Open MPI busy-poll inside
    a blocking collective (a rank waiting 2 s for a slower peer used 1.3-2.0 s of CPU here), taking
    the core the compute threads of this machine's other ranks need. So every collective first
    waits in a non-blocking barrier, tested with a short, growing sleep (0.05 s of CPU in those
    2 s), and runs the blocking collective only once every rank has arrived: polling the
    Iallreduce itself with sleeps stalls its progress (1M float32: 5.6 ms instead of 1.2 ms).
    FASTNET_MPI_POLL=0: plain blocking collectives."""

    SPIN, POLL_START, POLL_MAX = 200e-6, 20e-6, 1e-3   # seconds: busy tests first, then sleeps between tests

    def __init__(self):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = _local_rank(self.rank)
        self.poll = os.environ.get("FASTNET_MPI_POLL", "1") not in ("0", "")

    def _arrive(self):
        """Return once every rank has reached this point, without spinning a core meanwhile."""
        if not self.poll:
            return
        request = self.comm.Ibarrier()
        start = time.perf_counter()
        while not request.Test():
            if time.perf_counter() - start > self.SPIN:
                break
        delay = self.POLL_START
        while not request.Test():
            time.sleep(delay)
            delay = min(delay * 2, self.POLL_MAX)

    def allreduce_sum(self, array):
        self._arrive()
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def bcast_array(self, array):
        self._arrive()
        self.comm.Bcast(array, root=0)
        return array

    def bcast(self, obj):
        self._arrive()
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj):
        self._arrive()
        return self.comm.allgather(obj)

    def barrier(self):
        self._arrive()
        if not self.poll:
            self.comm.Barrier()

    ABORT_DRAIN = 0.3    # seconds for the launcher to forward what this rank printed before MPI_Abort

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(self.ABORT_DRAIN)     # else hydra may end the job with the message half forwarded
        self.comm.Abort(code)


def local_size():
    """How many ranks this machine runs (1 without a launcher)."""
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        if name in os.environ:
            return int(os.environ[name])
    return world().size if _world else 1


def find_mpiexec():
    """The mpiexec to start ranks with: $FASTNET_MPIEXEC, else the one beside this Python (the MPICH
    wheel's, in the environment's bin/), else mpiexec or mpirun on PATH; None if there is none."""
    import shutil
    given = os.environ.get("FASTNET_MPIEXEC")
    if given:
        return shutil.which(given) or given
    here = os.path.dirname(os.path.abspath(sys.executable))
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name, path=here) or shutil.which(name)
        if found:
            return found
    return None


def launch_command(size, argv, mpiexec=None):
    """The command that runs `python -m fastnet argv` on `size` ranks of this machine, each with
    cores // size Numba threads (unless NUMBA_NUM_THREADS is set)."""
    import subprocess
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec is None:
        raise DistributedError("--workers needs an MPI: pip install 'fastnet[mpich]' (mpi4py and the MPICH "
                               "wheel, whose mpiexec goes beside python), or install your MPI and "
                               "'fastnet[mpi]'; FASTNET_MPIEXEC may name its mpiexec")
    extra = []
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "OpenRTE" in version:
        # Open MPI refuses more ranks than cores, and root, unless told; and pins ranks to cores
        extra = ["--oversubscribe", "--bind-to", "none"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return [mpiexec, "-n", str(size), *extra, sys.executable, "-m", "fastnet", *argv]


def use_local_gpu(local_rank=None):
    """A rank's GPU: the one of its local rank (modulo the GPUs this machine has), chosen before
    the first CUDA context is made; returns its index. Model.__init__ calls it under a launcher
    for device="cuda". The gradients' allreduce goes through host memory."""
    from numba import cuda
    local_rank = world().local_rank if local_rank is None else local_rank
    count = len(cuda.gpus)
    if count == 0:
        raise DistributedError("device='cuda' under MPI, but this machine has no GPU")
    index = local_rank % count
    cuda.select_device(index)
    return index


def _local_rank(rank):
    for name in LOCAL_RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return rank


_world = []


def world():
    """This process's communicator: MPIComm under a launcher, else Single. Made once."""
    if not _world:
        if launched():
            try:
                import mpi4py  # noqa: F401
            except ImportError:
                found = [name for name in RANK_VARIABLES if name in os.environ] or ["FASTNET_MPI"]
                raise DistributedError(f"started by an MPI launcher ({found[0]} is set) but mpi4py is not "
                                       f"installed: pip install 'fastnet[mpi]' (or 'fastnet[mpich]')") from None
            _world.append(MPIComm())
        else:
            _world.append(Single())
    return _world[0]


# -- K replicas in one process, for tests ---------------------------------------------------------

class _Shared:
    def __init__(self, size, timeout):
        self.size = size
        self.slots = [None] * size
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.token = threading.Lock()    # the replica holding it runs; collectives hand it over


class FakeComm(Comm):
    """Rank `rank` of a FakeWorld. Every collective exchanges values through shared slots between
    two barriers; sums are taken in rank order, so every replica gets bit-identical results."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.size, self.local_rank = shared, rank, shared.size, rank
        self.calls = 0     # collectives joined (tests count them)

    def _exchange(self, value):
        s = self.shared
        self.calls += 1
        s.slots[self.rank] = value
        s.token.release()
        try:
            s.barrier.wait()
            values = list(s.slots)
            s.barrier.wait()       # all have read before any replica writes its next value
        except threading.BrokenBarrierError:
            raise DistributedError("another rank failed (its error is reported by that rank)") from None
        finally:
            s.token.acquire()
        return values

    def allreduce_sum(self, array):
        values = self._exchange(np.array(array, copy=True))
        total = values[0].copy()
        for v in values[1:]:
            total += v
        array[...] = total
        return array

    def bcast_array(self, array):
        array[...] = self._exchange(np.array(array, copy=True))[0]
        return array

    def bcast(self, obj):
        return self._exchange(obj)[0]

    def allgather(self, obj):
        return self._exchange(obj)

    def barrier(self):
        self._exchange(None)

    def abort(self, code=1):
        self.shared.barrier.abort()
        raise DistributedError(f"rank {self.rank} aborted the job (code {code})")


class FakeWorld:
    """K replicas in threads: `FakeWorld(K).run(fn)` calls fn(comm) on each, one at a time between
    collectives, and returns their results in rank order; the first error raised is re-raised
    (the other replicas are released from their collective with a DistributedError)."""

    def __init__(self, size, timeout=120.0):
        self.shared = _Shared(size, timeout)
        self.comms = [FakeComm(self.shared, rank) for rank in range(size)]

    def run(self, fn):
        results, errors = [None] * len(self.comms), [None] * len(self.comms)

        def body(comm):
            self.shared.token.acquire()
            try:
                results[comm.rank] = fn(comm)
            except BaseException as err:      # noqa: B036 -- handed to the caller below
                errors[comm.rank] = err
                self.shared.barrier.abort()
            finally:
                self.shared.token.release()

        threads = [threading.Thread(target=body, args=(comm,), daemon=True) for comm in self.comms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first = next((e for e in errors if e is not None and not isinstance(e, DistributedError)),
                     next((e for e in errors if e is not None), None))
        if first is not None:
            raise first
        return results
