"""Long runs and concurrency (issue 16): memory does not grow over 30 epochs or 10,000 predict
calls; two models in one process share no buffers; a model called from a second thread while it
trains refuses the call with a BusyError (a lock taken without waiting by train_step, gradients,
forward, predict, predict_proba, evaluate, fit, state_dict, load_state_dict and save), never
running it on half-written buffers."""

import threading

import numpy as np
import pytest

import fastnet as fn


def rss_bytes():
    """This process's resident set size (Linux: VmRSS in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status VmRSS on this system")


def tiny(seed=0, batch=16):
    return fn.Sequential([fn.Flatten(), fn.Dense(32), fn.ReLU(), fn.Dense(4)]).compile(
        (1, 8, 8), batch, optimizer=fn.Adam(lr=1e-3), seed=seed)


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, n)


SLACK = 3 * 2**20     # "within a few MB": allocator noise, never a per-epoch or per-call leak


def test_memory_after_30_epochs_is_that_after_the_first():
    model = tiny()
    x, y = data()
    rss = {}
    history = model.fit(x, y, epochs=30, validation_data=data(64, seed=1), verbose=0,
                        callbacks=[lambda m, epoch, figures: rss.__setitem__(epoch, rss_bytes())])
    assert len(history.epoch) == 30 and len(rss) == 30
    growth = rss[30] - rss[1]
    assert growth < SLACK, f"RSS grew by {growth / 2**20:.1f} MiB from epoch 1 to epoch 30"


def test_ten_thousand_predict_calls_do_not_grow_memory():
    model = tiny(batch=8)
    x, _ = data(5)
    first = model.predict(x)
    for _ in range(1000):
        model.predict(x)
    before = rss_bytes()
    for _ in range(9000):
        out = model.predict(x)
    growth = rss_bytes() - before
    assert growth < SLACK, f"RSS grew by {growth / 2**20:.1f} MiB over 9,000 predict calls"
    np.testing.assert_array_equal(out, first)


def buffers_of(model):
    plan = model.plan
    return [plan.flat_params, plan.flat_grads, *plan.acts, *[g for g in plan.grads if g is not None],
            *model.opt_state.values(), model.targets]


def test_two_models_in_one_process_share_no_buffers_and_train_as_if_alone():
    x, y = data()
    a, b = tiny(seed=1), tiny(seed=2)
    for one in buffers_of(a):
        assert not any(np.shares_memory(one, other) for other in buffers_of(b))
    for epoch in range(2):     # interleaved: epochs of a and b, and single steps between them
        a.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        b.train_step(x[:16], y[:16])
        b.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        a.train_step(x[16:32], y[16:32])
    alone_a, alone_b = tiny(seed=1), tiny(seed=2)
    for epoch in range(2):
        alone_a.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        alone_a.train_step(x[16:32], y[16:32])
    for epoch in range(2):
        alone_b.train_step(x[:16], y[:16])
        alone_b.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
    for mixed, alone in ((a, alone_a), (b, alone_b)):
        for name, value in mixed.state_dict().items():
            assert value.tobytes() == alone.state_dict()[name].tobytes(), name


def test_a_second_thread_is_refused_while_the_model_trains():
    model = tiny()
    x, y = data()
    started, tried = threading.Event(), threading.Event()
    nested = []

    class Pause(fn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 3 and not started.is_set():
                nested.append(model.evaluate(x[:16], y[:16]))      # the same thread may nest calls
                started.set()
                assert tried.wait(60), "the other thread never tried"

    errors = []
    trainer = threading.Thread(target=lambda: _run(errors, model.fit, x, y, epochs=2, verbose=0,
                                                   callbacks=[Pause()]))
    trainer.start()
    try:
        assert started.wait(60)
        calls = {"predict": lambda: model.predict(x[:4]), "train_step": lambda: model.train_step(x[:4], y[:4]),
                 "evaluate": lambda: model.evaluate(x[:4], y[:4]), "forward": lambda: model.forward(x[:4]),
                 "gradients": lambda: model.gradients(x[:4], y[:4]), "state_dict": model.state_dict,
                 "load_state_dict": lambda: model.load_state_dict({}), "fit": lambda: model.fit(x, y, verbose=0)}
        for name, call in calls.items():
            with pytest.raises(fn.BusyError, match=rf"^{name}\(\) was called while fit\(\) runs in another thread") \
                    as caught:
                call()
            assert isinstance(caught.value, RuntimeError)
    finally:
        tried.set()
        trainer.join(120)
    assert not errors, errors
    assert nested and nested[0]["loss"] > 0
    # nothing the refused calls did reached the model: it equals one trained without them
    alone = tiny()
    alone.fit(x, y, epochs=2, verbose=0)
    for name, value in model.state_dict().items():        # free again once fit returned
        assert value.tobytes() == alone.state_dict()[name].tobytes(), name


def _run(errors, function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except BaseException as err:    # reported by the main thread
        errors.append(err)
