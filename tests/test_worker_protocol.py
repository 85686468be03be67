"""The worker protocol's promises (netspec/train/pool.py, netspec/train/exchange.py): the
interpreter exits with a pool left open, a plan runs in one process after a pool step, and a
wait burns no core and has an end: a stopped or killed worker is named, and the run stops with
its checkpoint kept. What the workers share is tested in test_worker_data.py.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import ROOT, TINY, deadline, gone, tiny_conv_spec

import netspec
from netspec import checkpoint
from netspec.errors import TrainingError
from netspec.plan.bench import time_layers
from netspec.plan.gradcheck import check_plan
from netspec.plan.options import PlanOptions, can_fork
from netspec.train.pool import WorkerPool
from netspec.train.run import Run
from netspec.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need Linux fork")

SPEC = tiny_conv_spec("tiny-conv", 5, optimizer="{type: sgd, lr: 0.05, momentum: 0.9}")
BATCHNORM = SPEC.replace("  - {type: relu}\n  - {type: maxpool2d",
                         "  - {type: batchnorm}\n  - {type: relu}\n  - {type: maxpool2d")
# how a waiting worker waits: block at once, or spin for the default budget and then block
SPINS = pytest.mark.parametrize("spin", [0.0, None], ids=["block", "spin-then-block"])


def load(text=SPEC, *overrides):
    return netspec.loads(text, "tiny-conv.yaml", list(overrides))


def flat_x(splits, name="train"):
    x, y = splits[name]
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64), y


def options(spin=None, **kw):
    """PlanOptions for 2 workers with the given spin budget (None: the default)."""
    if spin is not None:
        kw["worker_spin"] = spin
    return PlanOptions(workers=2, **kw)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process pid so far, from /proc/pid/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ exit

@pytest.mark.parametrize("finalizer", ["before", "after"])
def test_the_interpreter_exits_with_a_pool_left_open(tmp_path, finalizer):
    """A weakref.finalize made before the pool (a TemporaryDirectory) puts multiprocessing's
    exit handler first; it must find the pool already stopped, not join children that ignore
    SIGTERM forever. Made after the pool, it runs first: the interpreter exits too."""
    scratch = "tempfile.TemporaryDirectory()  # a weakref.finalize"
    script = tmp_path / "leave_open.py"
    script.write_text(textwrap.dedent(f"""
        import tempfile
        before = {scratch if finalizer == "before" else None}
        import numpy as np
        import netspec
        from netspec.data import load_dataset, prepare
        from netspec.train.pool import WorkerPool
        spec = netspec.loads({BATCHNORM!r}, "s.yaml")
        x, y = prepare(load_dataset({str(TINY)!r}), "standardize", 0)["train"]
        pool = WorkerPool(netspec.compile(spec), spec.loss, x.reshape(len(x), -1), y, 2, 16)
        pool.gradient(np.arange(16))
        after = {scratch if finalizer == "after" else None}
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
    assert len(pids) == 1 and gone(pids), "a worker outlived its parent"
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
    assert run.trainer.pool is None and gone(stopped)


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
    assert gone(stopped)


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
    assert pool.closed and gone([pid])


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
