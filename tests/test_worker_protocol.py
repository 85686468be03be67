"""The worker protocol's promises (netspec/train/pool.py, netspec/train/exchange.py): the
interpreter exits with a pool left open, a plan runs in one process after a pool step, a wait
burns no core and has an end (a stopped or killed worker is named and the run stops with its
checkpoint kept), parameters are shared only while a pool runs, and `evaluate` uses its data.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import ROOT, TINY, tiny_conv_spec

import netspec
from netspec import checkpoint
from netspec.errors import TrainingError
from netspec.kernels.shared import Arena
from netspec.plan.bench import time_layers
from netspec.plan.gradcheck import check_plan
from netspec.plan.options import PlanOptions, available_cores, can_fork
from netspec.train.pool import WorkerPool
from netspec.train.run import Run
from netspec.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need Linux fork")

SPEC = tiny_conv_spec("tiny-conv", 5, optimizer="{type: sgd, lr: 0.05, momentum: 0.9}")
BATCHNORM = SPEC.replace("  - {type: relu}\n  - {type: maxpool2d",
                         "  - {type: batchnorm}\n  - {type: relu}\n  - {type: maxpool2d")
# how a waiting worker waits: block at once, or spin for the default budget and then block
SPINS = pytest.mark.parametrize("spin", [0.0, None], ids=["block", "spin-then-block"])


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int):
    """Raise Hang in the block if it takes longer than `seconds` (a hang fails the test)."""
    def alarm(*_):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def load(text=SPEC, *overrides):
    return netspec.loads(text, "tiny-conv.yaml", list(overrides))


def flat_x(splits, name="train"):
    x, y = splits[name]
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64), y


def options(spin=None, **kw):
    """PlanOptions for 2 workers with the given spin budget (None: the default)."""
    return PlanOptions(workers=2, **kw) if spin is None else PlanOptions(workers=2,
                                                                         worker_spin=spin, **kw)


def _running(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _gone(pids, seconds=10.0) -> bool:
    end = time.monotonic() + seconds
    while any(_running(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    return not any(_running(p) for p in pids)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process pid so far, from /proc/pid/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ exit

def test_the_interpreter_exits_with_a_pool_left_open(tmp_path):
    """A weakref.finalize made before the pool (a TemporaryDirectory) puts multiprocessing's
    exit handler first; it must find the pool already stopped, not join children that ignore
    SIGTERM forever."""
    script = tmp_path / "leave_open.py"
    script.write_text(textwrap.dedent(f"""
        import tempfile
        scratch = tempfile.TemporaryDirectory()  # a weakref.finalize before the pool
        import numpy as np
        import netspec
        from netspec.data import load_dataset, prepare
        from netspec.train.pool import WorkerPool
        spec = netspec.loads({BATCHNORM!r}, "s.yaml")
        x, y = prepare(load_dataset({str(TINY)!r}), "standardize", 0)["train"]
        pool = WorkerPool(netspec.compile(spec), spec.loss, x.reshape(len(x), -1), y, 2, 16)
        pool.gradient(np.arange(16))
        print(*pool.pids, flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()  # its children see their pipes close and exit
        out, err = proc.communicate()
        pytest.fail(f"the interpreter did not exit: {out} {err}")
    assert proc.returncode == 0, err
    pids = [int(p) for p in out.split()]
    assert len(pids) == 1 and _gone(pids), "a worker outlived its parent"
    assert "Traceback" not in err, err


# ------------------------------------------------------------------ one process after a pool

def test_a_plan_runs_in_one_process_after_a_pool_step(tiny_splits):
    """With the pool still running, the trainer's plan runs a train-mode forward, a timing and
    a gradient check on its own: batchnorm waits for no gather (the exchange is attached to the
    steps only during a pool step)."""
    spec = load(BATCHNORM)
    trainer = Trainer(spec, tiny_splits, dtype="float64", workers=2)
    x = tiny_splits["test"][0][:6]
    labels = tiny_splits["test"][1][:6]
    try:
        trainer.train_epoch()
        plan = trainer.plan
        assert trainer.pool is not None and all(s.ctx.exchange is None for s in plan.steps)
        alone = netspec.compile(spec, "float64")  # the same state, never near a pool
        alone.load_state_dict(plan.state_dict())
        with deadline(60):
            y = plan.forward(x, train=True)
            report = time_layers(plan, 6, 2, np.random.default_rng(0), loss=spec.loss)
            rows = check_plan(plan, lambda out: spec.loss(out, labels), x, spec.gradcheck,
                              np.random.default_rng(0))
            stats = trainer.train_epoch()  # and the pool still trains afterwards
        np.testing.assert_array_equal(y, alone.forward(x, train=True))
        assert report.step_ms > 0 and all(r.passed for r in rows), rows
        assert np.isfinite(stats.loss)
    finally:
        trainer.close()


# ------------------------------------------------------------------ waits burn no core

@pytest.mark.parametrize("waiter", ["parent", "child"])
def test_a_worker_waiting_in_a_gather_burns_no_core(tiny_splits, waiter):
    """One worker takes 2 s to reach batchnorm's gather; the other, waiting there, uses a
    small fraction of a core (it spins only briefly, then blocks)."""
    spec = load(BATCHNORM)
    x, y = flat_x(tiny_splits)
    plan = netspec.compile(spec, "float64", PlanOptions(workers=2))
    parent, real = os.getpid(), plan.steps[0].forward

    def slow(h, train):  # the worker that is not waiting sleeps before its gather
        if (os.getpid() == parent) == (waiter == "child"):
            time.sleep(2.0)
        return real(h, train)

    plan.steps[0].forward = slow
    pool = WorkerPool(plan, spec.loss, x, y, 2, 16)
    try:
        child = pool.pids[0]
        cpu = (time.process_time, lambda: _cpu_seconds(child))[waiter == "child"]
        before = cpu()
        with deadline(60), pool.blas_limit():
            pool.gradient(np.arange(16))
        used = cpu() - before
    finally:
        pool.close()
    assert used < 0.25, f"the waiting {waiter} used {used:.2f} s of CPU in a 2 s wait"


# ------------------------------------------------------------------ the watchdog

def _stop_after(trainer, stopped, epoch=1, step=2):
    """on_step callback: SIGSTOP the first child after `step` steps of epoch `epoch`."""
    def on_step(done, steps, loss, accuracy):
        if trainer.epoch == epoch and done == step and not stopped:
            stopped.append(trainer.pool.pids[0])
            os.kill(stopped[0], signal.SIGSTOP)
    return on_step


def _reap(pids):
    for pid in pids:  # never leave a stopped process behind, whatever the test found
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("net, spin", [("batchnorm", 0.0), ("batchnorm", None), ("plain", None)],
                         ids=["gather-block", "gather-spin-then-block", "reply"])
def test_a_stopped_worker_stops_the_run_and_keeps_the_checkpoint(tmp_path, tiny_splits, net,
                                                                  spin):
    """A worker stopped (SIGSTOP) mid-training: the parent, waiting for it in batchnorm's
    gather or for its reply, gives up after worker_timeout, names it (pid, stopped) and stops
    the pool; the run keeps the checkpoint of the last finished epoch."""
    spec = load(BATCHNORM if net == "batchnorm" else SPEC)
    run = Run(spec, tiny_splits, tmp_path / "run", options=options(spin, worker_timeout=2.0))
    run.start()
    stopped = []
    try:
        with deadline(60), pytest.raises(TrainingError) as failure:
            run.fit(on_step=_stop_after(run.trainer, stopped))
    finally:
        _reap(stopped)
        run.trainer.close()
    message = str(failure.value)
    assert stopped and f"pid {stopped[0]}" in message, message
    assert "stopped" in message and "worker_timeout" in message, message
    assert f"the last good checkpoint is {run.last_path}" in message
    assert checkpoint.load(run.last_path).meta["progress"]["epoch"] == 1
    assert run.trainer.pool is None and _gone(stopped)


def test_a_stopped_worker_in_an_evaluation_is_named(tiny_splits):
    trainer = Trainer(load(), tiny_splits, dtype="float64",
                      options=options(worker_timeout=2.0))
    stopped = []
    try:
        trainer.start_workers()
        stopped.append(trainer.pool.pids[0])
        os.kill(stopped[0], signal.SIGSTOP)
        with deadline(60), pytest.raises(TrainingError, match=rf"pid {stopped[0]}.*stopped"):
            trainer.evaluate(*tiny_splits["test"], 50, split="test")
    finally:
        _reap(stopped)
        trainer.close()
    assert _gone(stopped)


@SPINS
@pytest.mark.parametrize("waiter", ["parent", "child"])
def test_a_worker_killed_in_a_gather_is_reported(tiny_splits, spin, waiter):
    """SIGKILL to the child while it waits in batchnorm's gather for the parent ("child"), or
    before it reaches the gather where the parent waits for it ("parent"): the parent names
    the dead worker and stops the pool."""
    spec = load(BATCHNORM)
    x, y = flat_x(tiny_splits)
    plan = netspec.compile(spec, "float64", options(spin))
    parent, real = os.getpid(), plan.steps[0].forward
    pool = None

    def forward(h, train):
        if os.getpid() != parent:  # the child
            if waiter == "parent":
                time.sleep(5.0)  # killed in here
            return real(h, train)
        child = pool.procs[0]
        if waiter == "child":  # until the child is in its gather: its token is in
            end = time.monotonic() + 20
            while pool.exchange.seq[1] == 0 and time.monotonic() < end:
                time.sleep(0.005)
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        return real(h, train)

    plan.steps[0].forward = forward
    pool = WorkerPool(plan, spec.loss, x, y, 2, 16)
    pid = pool.pids[0]
    with deadline(60), pytest.raises(TrainingError,
                                     match=rf"worker process 1 \(pid {pid}\) exited"):
        pool.gradient(np.arange(16))
    assert pool.procs == [] and all(s.ctx.exchange is None for s in plan.steps)


@pytest.mark.parametrize("wait", ["gradient", "evaluate"])
def test_a_worker_killed_while_the_parent_waits_for_its_reply_is_reported(tiny_splits, wait):
    spec = load()
    x, y = flat_x(tiny_splits)
    plan = netspec.compile(spec, "float64", options())
    parent, real = os.getpid(), plan.steps[0].forward
    pool = None

    def forward(h, train):
        if os.getpid() != parent:
            time.sleep(5.0)  # the child: killed in here
        else:  # the parent kills it, then does its share and waits for the reply
            os.kill(pool.pids[0], signal.SIGKILL)
        return real(h, train)

    plan.steps[0].forward = forward
    pool = WorkerPool(plan, spec.loss, x, y, 2, 16, eval_rows=len(x))
    pid = pool.pids[0]
    with deadline(60), pytest.raises(TrainingError,
                                     match=rf"worker process 1 \(pid {pid}\) exited"):
        if wait == "gradient":
            pool.gradient(np.arange(16))
        else:
            pool.evaluate(x, y, 64, np.empty(len(x), np.int64))
    assert pool.closed and _gone([pid])


# ------------------------------------------------------------------ shared memory

def test_a_plans_parameters_are_private_to_a_forked_process():
    """In one process nothing is shared: a user's fork gets copies of the parameters and
    buffers, and the child's writes stay its own."""
    plan = netspec.compile(load(BATCHNORM), "float64")
    before = plan.state_dict()
    pid = os.fork()
    if pid == 0:  # the child: write and leave at once
        for v in (*plan.params.values(), *plan.buffers.values()):
            v[...] = 7.0
        os._exit(0)
    os.waitpid(pid, 0)
    for k, v in plan.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def _child_writes(array, value) -> bool:
    """Whether a forked child's write of `value` into array[0] reaches this process."""
    pid = os.fork()
    if pid == 0:
        array[0] = value
        os._exit(0)
    os.waitpid(pid, 0)
    return bool(array[0] == value)


def test_an_arena_is_shared_from_the_first_share_to_the_last_unshare():
    arena = Arena(3 * 4096 + 8)
    a = arena.array(8, (3 * 1024,), np.float32)
    a[:] = np.arange(a.size)
    assert not _child_writes(a, -1.0) and not arena.shared
    arena.share()
    arena.share()  # a second pool on the same plan
    assert _child_writes(a, -2.0)
    arena.unshare()
    assert arena.shared and _child_writes(a, -3.0)
    arena.unshare()
    assert not arena.shared and not _child_writes(a, -4.0)
    np.testing.assert_array_equal(a[1:], np.arange(1, a.size))  # the bytes survive each remap
    assert a[0] == -3.0


def test_parameters_are_shared_only_while_a_pool_runs(tiny_splits):
    spec = load(BATCHNORM)
    x, y = flat_x(tiny_splits)
    plan = netspec.compile(spec, "float64")
    views = {k: v for k, v in {**plan.params, **plan.buffers}.items()}
    state = plan.state_dict()

    def child_writes(value) -> bool:
        """Whether a forked child's write of `value` reaches this process."""
        pid = os.fork()
        if pid == 0:
            plan.flat_params[0] = value
            plan.buffers["batchnorm1.running_var"][0] = value
            os._exit(0)
        os.waitpid(pid, 0)
        seen = plan.flat_params[0] == value, plan.buffers["batchnorm1.running_var"][0] == value
        assert seen[0] == seen[1]
        return seen[0]

    pool = WorkerPool(plan, spec.loss, x, y, 2, 16)
    try:
        assert child_writes(5.0)  # the pool's children compute with these very arrays
        plan.flat_params[0] = state["conv1.weight"].flat[0]
        plan.buffers["batchnorm1.running_var"][0] = state["batchnorm1.running_var"][0]
        pool.gradient(np.arange(16))
    finally:
        pool.close()
    assert not child_writes(6.0)
    # every view is the same array as before, over the same memory, with its values kept
    for k, v in {**plan.params, **plan.buffers}.items():
        assert v is views[k]
        np.testing.assert_array_equal(v, plan.state_dict()[k])
    np.testing.assert_array_equal(plan.params["conv1.weight"], state["conv1.weight"])
    assert np.shares_memory(plan.params["conv1.weight"], plan.flat_params)
    step = plan.steps[0]
    assert step.ctx.params["weight"] is plan.params["conv1.weight"]
    assert not np.array_equal(plan.buffers["batchnorm1.running_mean"],
                              state["batchnorm1.running_mean"])  # the pool's step wrote them


# ------------------------------------------------------------------ evaluate

@pytest.mark.parametrize("split", ["test", None])
def test_evaluate_with_workers_uses_the_data_it_is_given(tiny_splits, split):
    """With the pool running, evaluate(x, y) evaluates x, whatever split it names: other data,
    the split changed in place after the children were forked, and more rows than any split."""
    one = Trainer(load(), tiny_splits, dtype="float64", workers=1)
    splits = {k: (x.copy(), y.copy()) for k, (x, y) in tiny_splits.items()}
    two = Trainer(load(), splits, dtype="float64", workers=2)
    two.start_workers()
    x, y = splits["test"]
    try:
        cases = [(x[::-1].copy(), y[::-1].copy()),  # other data than the split
                 (np.concatenate([x, x[:100]]), np.concatenate([y, y[:100]]))]  # more rows
        x += np.random.default_rng(0).normal(0.0, 0.5, x.shape)  # the split, changed in place
        cases.append((x, y))
        for data in cases:
            a = one.evaluate(*data, 50, split=split)
            with deadline(60):
                b = two.evaluate(*data, 50, split=split)
            np.testing.assert_array_equal(b.predictions, a.predictions)
            assert b.loss == pytest.approx(a.loss, rel=1e-12) and b.accuracy == a.accuracy
    finally:
        two.close()


def test_a_trainer_refuses_more_workers_than_cores(tiny_splits):
    with pytest.raises(ValueError, match="workers but netspec may use"):
        Trainer(load(), tiny_splits, workers=available_cores() + 1)


def test_a_reply_read_while_waiting_in_a_gather_is_kept_for_its_step(tiny_splits):
    """The parent, waiting in a gather, reads a child's pipe when it stirs: a reply (the child
    may finish the step while the parent is descheduled) is kept for the step's replies, and
    a child's error is raised at once."""
    spec = load()
    x, y = flat_x(tiny_splits)
    pool = WorkerPool(netspec.compile(spec, "float64"), spec.loss, x, y, 2, 16, eval_rows=50)
    try:
        pool.eval_x[:50], pool.eval_y[:50] = x[:50], y[:50]
        pool.conns[0].send(("evaluate", 0, 50, 50))  # the child's reply is its loss sum
        assert pool.conns[0].poll(30)
        pool.check_children(1)
        assert list(pool.early) == [1] and not pool.conns[0].poll()
        ((k, (loss_sum,)),) = list(pool._replies(2))  # the kept reply, not a wait for another
        assert k == 1 and np.isfinite(loss_sum) and loss_sum > 0 and pool.early == {}
        pool.conns[0].send(("evaluate", 0, 50, 0))  # a batch of 0: the child fails
        assert pool.conns[0].poll(30)
        with pytest.raises(TrainingError, match="worker process 1 failed: ValueError"):
            pool.check_children(1)
        assert pool.closed
    finally:
        pool.close()
