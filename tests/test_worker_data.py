"""What worker processes share (netspec/train/pool.py, netspec/kernels/shared.py): a plan's
parameters and buffers only while a pool runs, the data `evaluate` is given (not a copy the
children were forked with), and no more workers than cores.
"""

import os

import numpy as np
import pytest
from conftest import deadline, tiny_conv_spec

import netspec
from netspec.kernels.shared import Arena
from netspec.plan.options import available_cores, can_fork
from netspec.train.pool import WorkerPool
from netspec.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need Linux fork")

SPEC = tiny_conv_spec("tiny-conv", 5, optimizer="{type: sgd, lr: 0.05, momentum: 0.9}")
BATCHNORM = SPEC.replace("  - {type: relu}\n  - {type: maxpool2d",
                         "  - {type: batchnorm}\n  - {type: relu}\n  - {type: maxpool2d")


def load(text=SPEC):
    return netspec.loads(text, "tiny-conv.yaml")


def flat_x(splits, name="train"):
    x, y = splits[name]
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64), y


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
