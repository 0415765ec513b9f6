"""Data parallelism (fastnet/distributed.py) against the in-process FakeWorld: K replicas of a model
trained with the same global batch must end where one process ends (up to summation order), stay
identical to each other, and refuse to start when they disagree. The real-MPI runs are in
tests/test_mpi.py."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnet as fn
from fastnet import distributed


def network(batchnorm=False, dropout=False):
    layers = [fn.Flatten(), fn.Dense(12)]
    if batchnorm:
        layers.append(fn.BatchNorm1D())
    layers.append(fn.ReLU())
    if dropout:
        layers.append(fn.Dropout(0.3))
    layers.append(fn.Dense(4))
    return fn.Sequential(layers)


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 3, 3)), rng.integers(0, 4, n)


OPTIMIZERS = {"sgd": lambda: fn.SGD(lr=0.1, momentum=0.9), "adam": lambda: fn.Adam(lr=0.01)}


def compiled(optimizer="sgd", batch=8, seed=3, dtype="float64", **net):
    return network(**net).compile((2, 3, 3), batch, optimizer=OPTIMIZERS[optimizer](), seed=seed, dtype=dtype)


def train_replicas(size, n, epochs=2, make=compiled, validation=None, **kw):
    x, y = data(n)

    def replica(comm):
        model = make(**kw)
        history = model.fit(x, y, epochs=epochs, verbose=0, comm=comm, validation_data=validation)
        return model, history, comm.calls

    return distributed.FakeWorld(size).run(replica)


def max_relative_difference(a, b):
    worst = 0.0
    for name, value in a.state_dict().items():
        other = b.state_dict()[name]
        worst = max(worst, float(np.max(np.abs(value - other)) / max(np.max(np.abs(other)), 1e-30)))
    return worst


@pytest.mark.parametrize("m", range(0, 12))
def test_shards_are_contiguous_balanced_and_cover_the_batch(m):
    for size in (1, 2, 3, 5):
        slices = [distributed.shard(m, rank, size) for rank in range(size)]
        assert slices[0][0] == 0 and slices[-1][1] == m
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        lengths = [hi - lo for lo, hi in slices]
        assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("size, n", [(2, 29), (3, 26)])   # 26 = 3 x 8 + 2: the last batch leaves rank 2 no row
def test_replicas_equal_one_process_with_the_global_batch(optimizer, size, n):
    x, y = data(n)
    single = compiled(optimizer, dropout=True)
    expected = single.fit(x, y, epochs=2, verbose=0)
    results = train_replicas(size, n, optimizer=optimizer, dropout=True)
    for model, history, _ in results:
        assert max_relative_difference(model, single) < 1e-12
        assert model.step == single.step
        np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-12)
        assert history["accuracy"] == expected["accuracy"]
    # bit for bit the same on every rank
    for model, _, _ in results[1:]:
        for name, value in model.state_dict().items():
            assert np.array_equal(value, results[0][0].state_dict()[name]), name


def test_float32_replicas_stay_close_to_one_process():
    x, y = data(29)
    single = compiled("adam", dtype="float32")
    single.fit(x, y, epochs=2, verbose=0)
    for model, _, _ in train_replicas(2, 29, optimizer="adam", dtype="float32"):
        assert max_relative_difference(model, single) < 1e-4


def test_batchnorm_statistics_are_per_rank_and_the_running_ones_averaged():
    results = train_replicas(2, 32, epochs=1, batchnorm=True)
    a, b = results[0][0], results[1][0]
    for name, value in a.state_dict().items():
        assert np.array_equal(value, b.state_dict()[name]), name
    # per-rank batch statistics: not the one-process result with the global batch
    x, y = data(32)
    single = compiled(batchnorm=True)
    single.fit(x, y, epochs=1, verbose=0)
    assert max_relative_difference(a, single) > 1e-6


def test_one_allreduce_per_step():
    steps = -(-29 // 8)
    once = train_replicas(2, 29, epochs=1)[0][2]
    twice = train_replicas(2, 29, epochs=2)[0][2]
    assert twice - once == steps + 1    # the steps' gradients and the epoch's loss/accuracy sums


def test_evaluation_is_sharded_and_summed():
    x, y = data(21, seed=5)
    single = compiled()
    expected = single.evaluate(x, y)

    def replica(comm):
        model = compiled()
        return model.evaluate(x, y, comm=comm)

    for result in distributed.FakeWorld(3).run(replica):
        assert result["accuracy"] == expected["accuracy"]
        assert result["loss"] == pytest.approx(expected["loss"], rel=1e-12)


def test_rank_zero_parameters_and_progress_are_broadcast():
    x, y = data(16)

    def replica(comm):
        model = compiled(seed=3)
        if comm.rank == 1:   # another start on rank 1 only (the seed itself must agree)
            for array in model.parameters().values():
                array[...] = 7.0
        model.fit(x, y, epochs=1, verbose=0, comm=comm)
        return model

    a, b = distributed.FakeWorld(2).run(replica)
    for name, value in a.state_dict().items():
        assert np.array_equal(value, b.state_dict()[name]), name


@pytest.mark.parametrize("differ", ["seed", "data", "batch"])
def test_ranks_that_disagree_all_refuse_to_start(differ):
    def replica(comm):
        other = comm.rank == 1
        model = compiled(seed=4 if (other and differ == "seed") else 3, batch=6 if (other and differ == "batch") else 8)
        x, y = data(17 if (other and differ == "data") else 16)
        try:
            model.fit(x, y, epochs=1, verbose=0, comm=comm)
        except fn.DistributedError as err:
            return str(err), model.step
        return None, model.step

    results = distributed.FakeWorld(2).run(replica)
    for message, steps in results:
        assert message is not None and "rank(s) [1]" in message and steps == 0


def test_a_drift_between_ranks_is_an_error(monkeypatch):
    monkeypatch.setattr(distributed, "CHECK_EVERY", 2)
    x, y = data(40)

    def replica(comm):
        model = compiled()
        if comm.rank == 1:     # rank 1 updates with another learning rate after the broadcast
            original = model._reduce_gradients

            def skewed():
                original()
                model.plan.flat_grads *= 1.5
            model._reduce_gradients = skewed
        model.fit(x, y, epochs=1, verbose=0, comm=comm)

    with pytest.raises(fn.DistributedError, match=r"rank\(s\) \[1\] differ from rank 0's at optimizer step 2"):
        distributed.FakeWorld(2).run(replica)


def test_an_error_on_one_replica_releases_the_others():
    x, y = data(16)

    def replica(comm):
        model = compiled()
        if comm.rank == 1:
            raise RuntimeError("rank 1 broke")
        model.fit(x, y, epochs=1, verbose=0, comm=comm)

    with pytest.raises(RuntimeError, match="rank 1 broke"):
        distributed.FakeWorld(2, timeout=30).run(replica)


def test_a_single_process_never_imports_mpi():
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import fastnet as fn
        model = fn.Sequential([fn.Flatten(), fn.Dense(3)]).compile((2, 2), 4)
        model.fit(np.ones((6, 2, 2)), np.zeros(6, np.int64), verbose=0)
        model.evaluate(np.ones((6, 2, 2)), np.zeros(6, np.int64))
        assert fn.distributed.world().size == 1
        assert "mpi4py" not in sys.modules, "mpi4py was imported"
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k not in
           distributed.RANK_VARIABLES + distributed.SIZE_VARIABLES + ("FASTNET_MPI",)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)


def conv_bn(batch=8, seed=3, dtype="float64", device="cpu"):
    net = fn.Sequential([fn.Conv2D(3, 3, padding=1), fn.BatchNorm2D(), fn.ReLU(), fn.Flatten(), fn.Dense(4)])
    return net.compile((2, 3, 3), batch, optimizer=fn.SGD(lr=0.1, momentum=0.9), seed=seed, dtype=dtype, device=device)


@pytest.mark.parametrize("make, size, n", [(lambda: compiled(batchnorm=True), 2, 29),
                                           (lambda: compiled(batchnorm=True), 3, 29), (conv_bn, 2, 21)])
def test_sync_bn_equals_one_process_with_the_global_batch(make, size, n):
    x, y = data(n)
    single = make()
    single.fit(x, y, epochs=2, verbose=0)

    def replica(comm):
        model = make()
        model.fit(x, y, epochs=2, verbose=0, comm=comm, sync_bn=True)
        return model

    for model in distributed.FakeWorld(size).run(replica):
        assert max_relative_difference(model, single) < 1e-10     # parameters and running statistics


def test_sync_bn_on_the_gpu_kernels_equals_the_cpu():
    pytest.importorskip("numba.cuda")
    x, y = data(12)

    def run(device):
        def replica(comm):
            model = network(batchnorm=True).compile((2, 3, 3), 6, optimizer=fn.SGD(lr=0.1), seed=3,
                                                    dtype="float64", device=device)
            model.fit(x, y, epochs=1, verbose=0, comm=comm, sync_bn=True)
            return model
        return distributed.FakeWorld(2).run(replica)[0]

    assert max_relative_difference(run("cuda"), run("cpu")) < 1e-10


def test_sync_bn_refuses_a_last_batch_that_leaves_a_rank_without_rows():
    x, y = data(25)     # 3 x 8 + 1: one row for 2 ranks

    def replica(comm):
        model = compiled(batchnorm=True)
        with pytest.raises(fn.DistributedError, match="sync_bn: the last batch .* has 1 row"):
            model.fit(x, y, epochs=1, verbose=0, comm=comm, sync_bn=True)
        return model.step

    assert distributed.FakeWorld(2).run(replica) == [0, 0]


def test_each_rank_takes_the_gpu_of_its_local_rank():
    cuda = pytest.importorskip("numba.cuda")
    count = len(cuda.gpus)
    assert [distributed.use_local_gpu(rank) for rank in range(3)] == [rank % count for rank in range(3)]
    distributed.use_local_gpu(0)


def test_workers_without_an_mpiexec_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    from fastnet import cli
    monkeypatch.setenv("FASTNET_MPIEXEC", str(tmp_path / "no-such-mpiexec"))
    for name in distributed.RANK_VARIABLES + ("FASTNET_MPI",):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["train", "--workers", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot start" in err and "no-such-mpiexec" in err, err
    assert not (tmp_path / "run").exists()


def test_augmented_replicas_see_the_images_one_process_sees():
    from fastnet.data import Augment
    x, y = data(29)
    make = lambda: compiled("sgd")
    single = make()
    single.fit(x, y, epochs=2, verbose=0, augment=Augment(pad=1, flip=True, seed=5))

    def replica(comm):
        model = make()
        model.fit(x, y, epochs=2, verbose=0, comm=comm, augment=Augment(pad=1, flip=True, seed=5))
        return model

    for model in distributed.FakeWorld(3).run(replica):
        assert max_relative_difference(model, single) < 1e-12


def test_a_launcher_without_mpi4py_is_one_line_and_exit_2(tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None      # as if it were not installed
        from fastnet import cli
        sys.exit(cli.main(["train", "--model", "mlp", "--out", "run"]))
    """)
    env = dict(__import__("os").environ, PMI_RANK="0", PMI_SIZE="2")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "mpi4py is not installed" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_non_finite_gradients_on_one_rank_are_refused_by_every_rank_before_the_update():
    """Rank 1 alone overflows (its rows are huge): the summed gradients are non-finite on every
    rank, so every rank raises the same DivergenceError and no rank applies the update."""
    from test_numerical_faults import make_overflow, overflowing

    def replica(comm):
        model, x, y = overflowing(fn.SGD(lr=0.1))
        make_overflow(model)
        if comm.rank == 0:
            x = np.ones_like(x)     # finite gradients here
        before = model.state_dict()
        try:
            model.fit(x, y, epochs=1, verbose=0, comm=comm)
        except fn.DivergenceError as err:
            unchanged = all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
            return err.bad_gradients, err.everywhere, model.step, unchanged
        return None

    for result in distributed.FakeWorld(2).run(replica):
        assert result is not None, "a rank applied the non-finite update"
        bad, everywhere, step, unchanged = result
        assert bad > 0 and everywhere and step == 0 and unchanged


def test_a_mid_epoch_checkpoint_of_replicas_resumes_exactly(tmp_path):
    """Rank 0 saves a checkpoint after step 3 of epoch 1 (as --checkpoint-every does); replicas
    loading it and fitting on end bit for bit where the unbroken replicas end."""
    x, y = data(29)
    path = str(tmp_path / "mid.safetensors")

    class SaveAtStep3(fn.callbacks.Callback):
        def __init__(self, comm):
            super().__init__()
            self.comm = comm

        def on_batch_end(self, batch, logs=None):
            if self.model.step == 3:
                if self.comm.rank == 0:
                    self.model.save(path)
                self.comm.barrier()

    def unbroken(comm):
        model = compiled("adam", dropout=True)
        model.fit(x, y, epochs=2, verbose=0, comm=comm, callbacks=[SaveAtStep3(comm)])
        return model

    def resumed(comm):
        model = fn.load(path)
        assert model.step == 3 and model.epoch == 0
        model.fit(x, y, epochs=2, initial_epoch=model.epoch, verbose=0, comm=comm)
        return model

    expected = distributed.FakeWorld(2).run(unbroken)
    got = distributed.FakeWorld(2).run(resumed)
    for a, b in zip(got, expected):
        assert a.step == b.step
        for name, value in a.state_dict().items():
            assert np.array_equal(value, b.state_dict()[name]), name
