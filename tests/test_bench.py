"""Functional tests of netspec.plan.bench.time_layers (never timing assertions).

A fake clock that advances exactly 1 ms per reading makes every measured interval 1 ms, so the
expected report follows from counting clock readings, independently of the machine.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import netspec
from netspec.plan.bench import time_layers

SPEC = """
name: tiny-conv
input: {shape: [1, 8, 8]}
layers:
  - {type: conv2d, name: conv1, out_channels: 3, kernel_size: 3, padding: 1}
  - {type: maxpool2d, kernel_size: 2}
  - {type: relu}
  - {type: flatten}
  - {type: linear, name: fc, out_features: 4}
data: {dataset: custom-dir, num_classes: 4}
train:
  batch_size: 8
  optimizer: {type: sgd, lr: 0.5, momentum: 0.9, weight_decay: 1.0e-3}
"""


def fake_clock(step_seconds=0.001):
    """Readings 0, 1 ms, 2 ms, ...: every interval between two consecutive readings is 1 ms."""
    ticks = itertools.count()
    return lambda: next(ticks) * step_seconds


@pytest.fixture
def spec():
    return netspec.loads(SPEC, "tiny-conv.yaml")


def test_report_has_one_row_per_layer_in_plan_order(spec):
    plan = netspec.compile(spec)
    report = time_layers(plan, 8, 3, np.random.default_rng(0), loss=spec.loss,
                         optimizer=spec.train.optimizer)
    assert [t.name for t in report.layers] == ["conv1", "maxpool2d1", "relu2", "flatten3", "fc"]
    assert [t.type for t in report.layers] == ["conv2d", "maxpool2d", "relu", "flatten",
                                               "linear"]
    assert report.layers[0].out_shape == (3, 8, 8)
    assert report.layers[-1].out_shape == (4,)
    assert (report.batch_size, report.repeats, report.dtype) == (8, 3, "float32")
    for t in report.layers:
        assert t.forward_ms >= 0 and t.backward_ms >= 0 and 0 <= t.share <= 1
    assert report.step_min_ms <= report.step_ms <= report.step_max_ms


def test_fake_clock_gives_exact_medians_and_shares(spec):
    plan = netspec.compile(spec)
    report = time_layers(plan, 8, 5, np.random.default_rng(0), loss=spec.loss,
                         optimizer=spec.train.optimizer, clock=fake_clock())
    n = len(plan.steps)
    for t in report.layers:  # each forward and backward is bracketed by two readings
        assert t.forward_ms == pytest.approx(1.0)
        assert t.backward_ms == pytest.approx(1.0)
        # 2 ms of this layer out of 2 ms per layer + 1 ms loss + 1 ms optimizer
        assert t.share == pytest.approx(2 / (2 * n + 2))
    assert report.loss_ms == pytest.approx(1.0)
    assert report.optimizer_ms == pytest.approx(1.0)
    assert report.forward_ms == pytest.approx(n) and report.backward_ms == pytest.approx(n)
    assert report.step_ms == pytest.approx(1.0)  # a whole step is bracketed by two readings
    assert report.images_per_s == pytest.approx(8 / 0.001)


def test_without_optimizer_the_update_is_not_timed(spec):
    plan = netspec.compile(spec)
    report = time_layers(plan, 4, 2, np.random.default_rng(0), clock=fake_clock())
    assert report.optimizer_ms == 0.0
    for t in report.layers:  # 2 ms out of 2 ms per layer + 1 ms loss
        assert t.share == pytest.approx(2 / (2 * len(plan.steps) + 1))


def test_parameters_are_restored_after_timing(spec):
    plan = netspec.compile(spec)
    before = plan.state_dict()
    time_layers(plan, 8, 3, np.random.default_rng(0), loss=spec.loss,
                optimizer=spec.train.optimizer)
    for key, value in before.items():
        np.testing.assert_array_equal(plan.state_dict()[key], value, err_msg=key)


def test_optimizer_really_steps_during_timing(spec):
    # A clock that records the parameters whenever it is read sees them change mid-run.
    plan = netspec.compile(spec)
    start = plan.params["fc.weight"].copy()
    seen = []
    ticks = itertools.count()

    def clock():
        seen.append(plan.params["fc.weight"].copy())
        return next(ticks) * 0.001

    time_layers(plan, 8, 2, np.random.default_rng(0), loss=spec.loss,
                optimizer=spec.train.optimizer, clock=clock)
    assert any(not np.array_equal(start, s) for s in seen), "the optimizer never stepped"
    np.testing.assert_array_equal(plan.params["fc.weight"], start)  # and it was undone


def test_report_is_json_ready(spec):
    report = time_layers(netspec.compile(spec), 4, 2, np.random.default_rng(0))
    data = json.loads(json.dumps(report.to_dict()))
    assert [row["name"] for row in data["layers"]] == [t.name for t in report.layers]
    assert data["layers"][0]["out_shape"] == [3, 8, 8]
    for key in ("step_ms", "forward_ms", "backward_ms", "images_per_s", "loss_ms"):
        assert key in data


@pytest.mark.parametrize(("batch", "repeats", "warmup"), [(0, 3, 1), (4, 0, 1), (4, 3, -1)])
def test_bad_arguments_are_rejected(spec, batch, repeats, warmup):
    with pytest.raises(ValueError, match="must be"):
        time_layers(netspec.compile(spec), batch, repeats, np.random.default_rng(0),
                    warmup=warmup)


GRAPH = """
name: tiny-graph
input: {shape: [2, 6, 6]}
layers:
  - {type: conv2d, name: conv1, out_channels: 2, kernel_size: 3, padding: 1}
  - {type: relu, name: act}
  - {type: add, name: res, inputs: [act, input]}
  - {type: conv2d, name: side, out_channels: 3, kernel_size: 1, inputs: [input]}
  - {type: concat, name: cat, inputs: [res, side]}
  - {type: global_avgpool}
  - {type: linear, name: fc, out_features: 3}
data: {dataset: custom-dir, num_classes: 3}
"""


def test_graph_layers_are_timed_through_the_plans_own_loops(monkeypatch):
    spec = netspec.loads(GRAPH, "tiny-graph.yaml")
    plan = netspec.compile(spec)
    runs = []
    run_forward, run_backward = plan.run_forward, plan.run_backward
    monkeypatch.setattr(plan, "run_forward",
                        lambda *a, **k: runs.append("f") or run_forward(*a, **k))
    monkeypatch.setattr(plan, "run_backward",
                        lambda *a, **k: runs.append("b") or run_backward(*a, **k))
    report = time_layers(plan, 4, 3, np.random.default_rng(0), loss=spec.loss, warmup=1,
                         clock=fake_clock())
    assert [t.name for t in report.layers] == [s.name for s in plan.steps]
    assert [t.type for t in report.layers][2:5] == ["add", "conv2d", "concat"]
    assert runs == ["f", "b"] * (1 + 2 * 3)  # warmup, then instrumented and plain steps
    for t in report.layers:  # each layer call is timed by exactly two clock readings
        assert (t.forward_ms, t.backward_ms) == pytest.approx((1.0, 1.0))
    assert plan.hook is None
