"""Data-parallel training in worker processes (netspec/train/pool.py).

The gradient of a batch split across workers equals the whole batch's gradient; runs are
reproducible; a child's failure, NaN or death is reported; children exit with their parent;
'auto' and explicit worker counts are resolved with reasons.
"""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, TINY, gone, tiny_conv_spec, train_with_workers
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.errors import TrainingError
from netspec.kernels.noise import Noise
from netspec.kernels.shared import shared_array
from netspec.nn.layers.batchnorm import BatchNorm
from netspec.plan.options import MAX_AUTO_WORKERS, PlanOptions, can_fork, resolve_workers
from netspec.train.pool import WorkerPool, slice_gradient
from netspec.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need Linux fork")

SGD = "{type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}"
SPEC = tiny_conv_spec("tiny-conv", 5, optimizer=SGD)
DROPOUT = tiny_conv_spec("tiny-conv", 5, dropout=0.3, optimizer=SGD)
BATCHNORM = SPEC.replace("  - {type: relu}\n  - {type: maxpool2d",
                         "  - {type: batchnorm}\n  - {type: relu}\n  - {type: maxpool2d")


@pytest.fixture(scope="module")
def tie_free(tiny_splits):
    """The tiny splits plus seeded 1e-3 noise. MNIST's flat background makes exact ties in max
    pooling (3,179 of 9,216 windows of a batch of 64 here), and which tied input wins, so where
    the gradient goes, depends on the last bit of the convolution below: a BLAS may round
    equal patches differently at different columns of a GEMM, and a worker's slice puts the
    patches at other columns than the whole batch. Tests that compare one process with several
    use these tie-free splits."""
    rng = np.random.default_rng(0)
    return {k: (x + rng.normal(0.0, 1e-3, x.shape), y) for k, (x, y) in tiny_splits.items()}


def load(text=SPEC, *overrides):
    return netspec.loads(text, "tiny-conv.yaml", list(overrides))


def flat_x(splits):
    x, y = splits["train"]
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64), y


@pytest.mark.parametrize("workers, batch", [(2, 32), (2, 7), (3, 10)])
def test_split_gradient_equals_the_whole_batch_gradient(tie_free, workers, batch):
    spec = load()
    x, y = flat_x(tie_free)
    idx = np.random.default_rng(0).permutation(len(x))[:batch]
    whole = netspec.compile(spec, "float64")
    rows = np.empty((batch, x.shape[1]))
    loss, correct = slice_gradient(whole, spec.loss, x, y, idx, rows)

    split = netspec.compile(spec, "float64")
    pool = WorkerPool(split, spec.loss, x, y, workers, batch)
    try:
        split.flat_grads[...] = np.nan  # must be overwritten, not accumulated into
        got_loss, got_correct, bad = pool.gradient(idx)
    finally:
        pool.close()
    assert bad is None
    assert got_correct == correct
    assert got_loss == pytest.approx(loss, rel=1e-12)
    for k in whole.grads:
        np.testing.assert_allclose(split.grads[k], whole.grads[k], rtol=1e-10, atol=1e-13,
                                   err_msg=k)
    assert np.abs(whole.flat_grads).max() > 0


def test_two_workers_train_like_one_and_reproducibly(tie_free):
    finals = {}
    for name, workers in (("one", 1), ("two", 2), ("two again", 2)):
        trainer, stats = train_with_workers(load(), tie_free, workers, epochs=2)
        assert (trainer.pool is None) and trainer.workers == workers
        finals[name] = (trainer.plan.flat_params.copy(), stats.loss, stats.accuracy)
    one, two, again = finals["one"], finals["two"], finals["two again"]
    np.testing.assert_allclose(two[0], one[0], rtol=1e-8, atol=1e-10)  # rounding only
    assert two[1] == pytest.approx(one[1], rel=1e-8) and two[2] == one[2]
    assert np.array_equal(two[0], again[0])  # bit-identical for the same worker count


@pytest.fixture(params=[None, 0.0], ids=["spin-then-block", "block"])
def exchange_wait(request):
    """PlanOptions for both ways a worker waits in a batch exchange: spinning for the default
    budget, then blocking; or blocking at once."""
    return PlanOptions() if request.param is None else PlanOptions(worker_spin=request.param)


@pytest.mark.parametrize("workers, batch", [(2, 32), (2, 7), (3, 10)])
def test_batchnorm_split_across_workers_uses_whole_batch_statistics(tiny_splits, monkeypatch,
                                                                      exchange_wait, workers,
                                                                      batch):
    """One step of a batchnorm net on 2-3 workers: gradients, loss and the running statistics
    equal one process's to rounding in float64 (slices of 16/16, 3/4 and 3/3/4 samples)."""
    spec = load(BATCHNORM)
    x, y = flat_x(tiny_splits)
    idx = np.random.default_rng(1).permutation(len(x))[:batch]
    whole = netspec.compile(spec, "float64")
    loss, correct = slice_gradient(whole, spec.loss, x, y, idx, np.empty((batch, x.shape[1])))
    split = netspec.compile(spec, "float64", exchange_wait)
    pool = WorkerPool(split, spec.loss, x, y, workers, batch)
    try:
        got_loss, got_correct, _ = pool.gradient(idx)
    finally:
        pool.close()
    assert got_correct == correct and got_loss == pytest.approx(loss, rel=1e-12)
    for k in whole.grads:
        np.testing.assert_allclose(split.grads[k], whole.grads[k], rtol=1e-9, atol=1e-12,
                                   err_msg=k)
    for k in whole.buffers:  # updated once, by the parent, with whole-batch statistics
        np.testing.assert_allclose(split.buffers[k], whole.buffers[k], rtol=1e-12, err_msg=k)
    # negative control: without the exchange each worker normalises with its own slice's
    # statistics, and the gradient differs
    monkeypatch.setattr(BatchNorm, "couples_batch", False)
    alone = netspec.compile(spec, "float64")
    pool = WorkerPool(alone, spec.loss, x, y, workers, batch)
    try:
        pool.gradient(idx)
    finally:
        pool.close()
    assert pool.exchange is None
    assert not np.allclose(alone.grads["conv1.weight"], whole.grads["conv1.weight"], rtol=1e-3)


def test_batchnorm_net_trains_on_two_workers_like_one(tiny_splits):
    """Two epochs of a batchnorm net in float64: parameters, running statistics, loss and
    evaluation on 2 workers agree with 1 worker to 1e-8; 2 workers twice are bit-identical."""
    finals = {}
    for name, workers in (("one", 1), ("two", 2), ("two again", 2)):
        trainer = Trainer(load(BATCHNORM), tiny_splits, dtype="float64", workers=workers)
        try:
            stats = [trainer.train_epoch() for _ in range(2)]
            ev = trainer.evaluate(*tiny_splits["test"])
        finally:
            trainer.close()
        state = np.concatenate([trainer.plan.flat_params] + list(trainer.plan.buffers.values()))
        finals[name] = (state, stats[-1].loss, ev.loss)
    one, two, again = finals["one"], finals["two"], finals["two again"]
    np.testing.assert_allclose(two[0], one[0], rtol=1e-8, atol=1e-10)
    assert two[1] == pytest.approx(one[1], rel=1e-8) and two[2] == pytest.approx(one[2], 1e-8)
    assert np.array_equal(two[0], again[0])


def test_a_child_failing_inside_a_batch_exchange_is_reported(tiny_splits, monkeypatch,
                                                             exchange_wait):
    """A child that fails before its batchnorm gather leaves the parent waiting in the
    exchange: the parent reports the child's error and stops the pool (no hang)."""
    spec = load(BATCHNORM)
    x, y = flat_x(tiny_splits)
    plan = netspec.compile(spec, "float64", exchange_wait)
    real = plan.steps[0].forward

    def failing(x, train):  # fails in the child only (the parent's pid differs)
        if os.getpid() != parent:
            raise FloatingPointError("boom in a child")
        return real(x, train)

    parent = os.getpid()
    plan.steps[0].forward = failing
    pool = WorkerPool(plan, spec.loss, x, y, 2, 16)
    with pytest.raises(TrainingError, match="worker process 1 failed: FloatingPointError"):
        pool.gradient(np.arange(16))
    assert pool.procs == [] and plan.steps[1].ctx.exchange is None


def test_dropout_with_workers_is_reproducible(tiny_splits):
    params = []
    for _ in range(2):
        trainer, _ = train_with_workers(load(DROPOUT), tiny_splits, 2, dtype="float32")
        params.append(trainer.plan.flat_params.copy())
    assert np.array_equal(params[0], params[1])


@pytest.mark.parametrize("batch", [1000, 50, 7])
def test_evaluation_split_across_workers_equals_one_process(tie_free, batch):
    one = Trainer(load(), tie_free, dtype="float64", workers=1)
    two = Trainer(load(), tie_free, dtype="float64", workers=2)
    two.start_workers()
    sent = []  # the messages the children get
    send = two.pool._send
    two.pool._send = lambda k, message: sent.append(message) or send(k, message)
    try:
        parts = [("test", tie_free["test"]), ("train", tie_free["train"]),
                 ("train", [a[:301] for a in tie_free["train"]]),
                 (None, [a[::2] for a in tie_free["test"]])]
        for split, (x, y) in parts:
            before = len(sent)
            a, b = one.evaluate(x, y, batch, split), two.evaluate(x, y, batch, split)
            assert np.array_equal(a.predictions, b.predictions)
            assert b.loss == pytest.approx(a.loss, rel=1e-12) and b.accuracy == a.accuracy
            # the child took half of the samples of every evaluation (a single batch of 1,000
            # is split too): within a sample per round of staging
            mine = sent[before:]
            assert mine and {m[0] for m in mine} == {"evaluate"}
            assert abs(sum(m[2] - m[1] for m in mine) - len(x) / 2) <= len(mine)
    finally:
        two.close()


@pytest.mark.parametrize("keyed", [True, False], ids=["by-batch-position", "negative-control"])
def test_dropout_trains_alike_with_one_or_two_workers(tie_free, monkeypatch, keyed):
    # Dropout masks are keyed by batch position, so the worker count changes only the rounding.
    # Control: every slice draws as if it started the batch (the child's samples get the masks
    # of positions 0..), which changes the training.
    if not keyed:
        monkeypatch.setattr(Noise, "offset", property(lambda self: 0, lambda self, v: None),
                            raising=False)
    finals = []
    for workers in (1, 2):
        trainer, stats = train_with_workers(load(DROPOUT), tie_free, workers, epochs=2)
        finals.append((trainer.plan.flat_params.copy(), stats.loss))
    (one, one_loss), (two, two_loss) = finals
    assert np.allclose(two, one, rtol=1e-8, atol=1e-10) == keyed
    assert (two_loss == pytest.approx(one_loss, rel=1e-8)) == keyed


def test_auto_and_explicit_worker_counts():
    conv, mlp = load(), netspec.load(ROOT / "specs" / "mlp.yaml")
    n, why = resolve_workers("auto", conv.infos, cores=2)
    assert n == 2 and "2 worker processes (one per core)" in why
    assert resolve_workers("auto", conv.infos, cores=16)[0] == MAX_AUTO_WORKERS
    assert resolve_workers("auto", conv.infos, batch_size=12, cores=4)[0] == 1  # 8 a slice
    n, why = resolve_workers("auto", mlp.infos, cores=2)
    assert n == 1 and "used 1.0x per sample" in why
    assert resolve_workers(3, mlp.infos, cores=4)[0] == 3  # explicit: the user's choice
    with pytest.raises(ValueError, match="3 workers but netspec may use 2 cores"):
        resolve_workers(3, mlp.infos, cores=2)  # the rule holds in the library, not the CLI
    bn = load(BATCHNORM)
    n, why = resolve_workers("auto", bn.infos, cores=2)
    assert n == 2 and "exchanging batchnorm statistics" in why
    assert resolve_workers(2, bn.infos, cores=2)[0] == 2
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            resolve_workers(bad, conv.infos)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "positive integer or 'auto'"),
    (["--workers", "many"], "positive integer or 'auto'"),
])
def test_cli_rejects_impossible_worker_counts(tmp_path, args, message):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(SPEC)
    result = CliRunner().invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "r"),
                                      *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_failing_child_is_reported_and_the_pool_stops(tiny_splits, monkeypatch):
    spec = load()
    x, y = flat_x(tiny_splits)
    plan = netspec.compile(spec, "float64")
    parent = os.getpid()
    forward = plan.steps[2].forward

    def broken(h, train):  # fails in the child process only
        if os.getpid() != parent:
            raise RuntimeError("simulated worker bug")
        return forward(h, train)

    monkeypatch.setattr(plan.steps[2], "forward", broken)
    pool = WorkerPool(plan, spec.loss, x, y, 2, 16)
    children = pool.procs[:]
    with pytest.raises(TrainingError, match="worker process 1 failed: RuntimeError: simulated "
                                            "worker bug.*--workers 1"):
        pool.gradient(np.arange(16))
    assert pool.procs == [] and all(not p.is_alive() for p in children)

    pool = WorkerPool(plan, spec.loss, x, y, 2, 16, eval_rows=len(x))  # and in evaluation
    with pytest.raises(TrainingError, match="worker process 1 failed: RuntimeError"):
        pool.evaluate(x, y, 100, np.empty(len(x), np.int64))
    assert pool.procs == []


def test_a_dead_child_is_reported(tiny_splits):
    spec = load()
    x, y = flat_x(tiny_splits)
    pool = WorkerPool(netspec.compile(spec, "float64"), spec.loss, x, y, 2, 16)
    pool.procs[0].kill()
    pool.procs[0].join(5)
    with pytest.raises(TrainingError, match=r"worker process 1 \(pid \d+\) exited unexpectedly"):
        pool.gradient(np.arange(16))


def test_nan_in_a_childs_slice_names_the_layer(tiny_splits):
    spec = load()
    x, y = flat_x(tiny_splits)
    x = x.copy()
    x[12, 100] = np.nan  # sample 12 is in the child's half of idx 0..15
    pool = WorkerPool(netspec.compile(spec, "float64"), spec.loss, x, y, 2, 16)
    try:
        with np.errstate(invalid="ignore"):
            loss, _, bad = pool.gradient(np.arange(16))
    finally:
        pool.close()
    assert np.isnan(loss) and bad == "conv1"


def test_children_exit_quietly_when_the_parent_is_killed(tmp_path):
    # The parent dies while its worker is mid-step: the worker must notice, exit, and print
    # nothing (its reply goes to a closed pipe).
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        import numpy as np
        import netspec
        from netspec.train.pool import WorkerPool
        from netspec.data import load_dataset, prepare
        spec = netspec.loads({SPEC!r}, "s.yaml")
        x, y = prepare(load_dataset({str(TINY)!r}), "standardize", 0)["train"]
        plan = netspec.compile(spec)
        parent, forward = os.getpid(), plan.steps[0].forward
        def slow(h, train):  # the child says it started its slice, then takes a second
            if os.getpid() != parent:
                open({str(tmp_path / "started")!r}, "w").close()
                time.sleep(1.0)
            return forward(h, train)
        plan.steps[0].forward = slow
        pool = WorkerPool(plan, spec.loss, x.reshape(len(x), -1), y, 2, 16)
        print(*pool.pids, flush=True)
        pool.idx[:16] = np.arange(16)
        pool.conns[0].send(("gradient", 8, 16, 16, 2, 0, 1))  # the child's half of step 1
        time.sleep(0.3)
        os.kill(parent, signal.SIGKILL)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert proc.wait(30) == -signal.SIGKILL
    assert len(pids) == 1
    assert gone(pids, 20), "a worker outlived its parent"
    errors = proc.stderr.read()  # the worker shares it: EOF once the worker is gone too
    assert "Traceback" not in errors, errors
    assert (tmp_path / "started").exists(), "the worker never started the step"


@pytest.mark.parametrize("spin", [None, 0.0], ids=["spin-then-block", "block"])
def test_a_child_waiting_in_a_batch_exchange_exits_when_the_parent_is_killed(tmp_path, spin):
    # The child reaches batchnorm's gather and waits there for a parent that never comes and
    # then dies: it must notice, exit and print nothing, spinning or blocked.
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, time
        import numpy as np
        import netspec
        from netspec.plan.options import PlanOptions
        from netspec.train import pool as parallel
        from netspec.data import load_dataset, prepare
        spin = {spin!r}
        spec = netspec.loads({BATCHNORM!r}, "s.yaml")
        x, y = prepare(load_dataset({str(TINY)!r}), "standardize", 0)["train"]
        plan = netspec.compile(spec, options=PlanOptions() if spin is None
                               else PlanOptions(worker_spin=spin))
        pool = parallel.WorkerPool(plan, spec.loss, x.reshape(len(x), -1), y, 2, 16)
        print(*pool.pids, flush=True)
        pool.idx[:16] = np.arange(16)
        pool.exchange.start_step(2, 1)
        pool.conns[0].send(("gradient", 8, 16, 16, 2, 0, 1))  # the child's half of step 1
        deadline = time.monotonic() + 20  # until the child is in its gather: its token is in
        while pool.exchange.seq[1] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert proc.wait(30) == -signal.SIGKILL
    assert len(pids) == 1 and gone(pids, 20), "a worker outlived its parent"
    errors = proc.stderr.read()
    assert "Traceback" not in errors, errors


def test_shared_array_is_shared_with_forked_children():
    a = shared_array((4,), np.float32)
    pid = os.fork()
    if pid == 0:  # child: write and leave at once
        a[:] = [1, 2, 3, 4]
        os._exit(0)
    os.waitpid(pid, 0)
    assert a.tolist() == [1, 2, 3, 4]


def test_a_forgotten_pool_stops_its_children(tiny_splits):
    import gc

    spec = load()
    x, y = flat_x(tiny_splits)
    pool = WorkerPool(netspec.compile(spec, "float64"), spec.loss, x, y, 2, 16)
    children = pool.procs[:]
    assert all(p.is_alive() for p in children)
    del pool
    gc.collect()
    for p in children:
        p.join(5)
    assert not any(p.is_alive() for p in children)


def test_a_diverging_run_with_workers_prints_no_numpy_warnings(tmp_path):
    # The NaN is reported as an error; NumPy's overflow warnings, from the worker processes
    # too, are noise around it.
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(SPEC)
    proc = subprocess.run(
        [sys.executable, "-m", "netspec", "train", str(spec_path), "--workers", "2",
         "--set", "train.schedule={type: exponential, gamma: 1.0e+8}", "--no-progress",
         "--out", str(tmp_path / "run")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "loss became nan" in proc.stderr and "plan: 2 worker processes" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
