"""Registry-driven layer tests: every registered layer's examples are shape- and gradient-checked.

A new layer file is covered here without a new test: the parametrization reads
`netspec.nn.layers.LAYERS` and each class's `examples`. The remaining tests are the checker's
negative controls (a wrong backward must fail), kink skipping, the train/eval behaviour of
dropout and batchnorm (expected values derived by hand with NumPy, independently of the
layer code), and seeding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.nn.init import SCHEMES
from netspec.nn.layers import LAYERS
from netspec.plan.compiler import layer_plan
from netspec.plan.gradcheck import check_layer_plan, check_plan
from netspec.plan.shapes import infer
from netspec.spec.model import GradcheckSpec, NetSpec

SPECS = Path(__file__).resolve().parent.parent / "specs"

# Batch 4 rather than the spec default of 2: with two samples flat batchnorm maps every feature
# to about +-1 whatever the input, so its input gradient nearly vanishes and the check is weak.
# Step and tolerances are the defaults (eps 1e-6, atol 1e-5, rtol 1e-3).
CFG = GradcheckSpec(batch_size=4)

CASES = [(tag, i, fields, tuple(shape))
         for tag, cls in sorted(LAYERS.items()) for i, (fields, shape) in enumerate(cls.examples)]


def make(tag: str, fields: dict):
    return LAYERS[tag].model_validate({"type": tag, **fields})


def inferred(layer, in_shape):
    """Shape inference's LayerInfo for `layer` alone on the network input `in_shape` (a
    multi-input example names the input several times: inputs: [input, input])."""
    return infer(tuple(in_shape), [layer])[0]


def one_layer_check(plan, tag, cfg=CFG, seed=0):
    return check_layer_plan(plan, cfg, np.random.default_rng(seed), tag)


# ---------------------------------------------------------------- every example of every layer


@pytest.mark.parametrize(("tag", "i", "fields", "in_shape"), CASES,
                         ids=[f"{tag}-{i}" for tag, i, _, _ in CASES])
def test_example_shape_and_gradients(tag, i, fields, in_shape):
    layer = make(tag, fields)
    out_shape = inferred(layer, in_shape).out_shape
    plan = layer_plan(layer, in_shape, "float64")
    x = np.random.default_rng(1).standard_normal((3, *in_shape))
    for train in (True, False):
        y = plan.forward(x, train=train)
        assert y.shape == (3, *out_shape)
        assert np.isfinite(y).all()

    rows = one_layer_check(plan, tag)
    expected = {"input"} | set(inferred(layer, in_shape).param_shapes)
    assert {r.tensor for r in rows} == expected  # one row per tensor, input included
    for r in rows:
        assert r.checked >= 1, f"{r.tensor}: no entry checked ({r.skipped} skipped)"
        assert r.passed, (f"{tag}-{i} {r.tensor}: rel err {r.rel_err:.2e} "
                          f"(abs {r.abs_err:.2e}) at {r.index}")


def test_every_layer_has_examples():
    assert LAYERS, "the registry is empty"
    missing = [tag for tag, cls in LAYERS.items() if not cls.examples]
    assert not missing, f"layers without examples (so not gradient-checked): {missing}"


@pytest.mark.parametrize(("tag", "i", "fields", "in_shape"), CASES,
                         ids=[f"{tag}-{i}" for tag, i, _, _ in CASES])
def test_example_round_trips_through_netspec(tag, i, fields, in_shape):
    # A custom dataset name skips the MNIST shape/class checks, so any example shape works; mse,
    # since a lone softmax layer is no classifier for cross_entropy.
    data = {"input": {"shape": list(in_shape)}, "layers": [{"type": tag, **fields}],
            "data": {"dataset": "custom-dir"}, "loss": {"type": "mse"}}
    spec = NetSpec.model_validate(data)
    assert spec.layers[0] == make(tag, fields)
    again = netspec.loads(spec.to_yaml(), "resolved.yaml")  # dump -> YAML -> validate + infer
    assert again.resolved() == spec.resolved()  # names and inits written out, the same layer
    assert again.infos[0].out_shape == inferred(make(tag, fields), in_shape).out_shape


def test_specs_demonstrate_every_layer_init_optimizer_and_schedule():
    specs = [netspec.load(path) for path in sorted(SPECS.glob("*.yaml"))]
    layers = {layer.type for spec in specs for layer in spec.layers}
    assert set(LAYERS) <= layers, f"no spec in specs/ uses {sorted(set(LAYERS) - layers)}"
    inits = {scheme.type for spec in specs
             for init in [spec.defaults.init] + [getattr(x, "init", None) for x in spec.layers]
             if init is not None for scheme in (init.weight, init.bias) if scheme is not None}
    assert inits >= set(SCHEMES), f"no spec uses init {sorted(set(SCHEMES) - inits)}"
    optimizers = {(s.train.optimizer.type, getattr(s.train.optimizer, "nesterov", False))
                  for s in specs}
    assert optimizers >= {("sgd", False), ("sgd", True), ("adam", False), ("adamw", False)}
    schedules = {s.train.schedule.type for s in specs}
    assert schedules >= {"constant", "step", "multistep", "exponential", "cosine"}
    assert any(s.train.schedule.type == "cosine" and s.train.schedule.warmup_epochs
               for s in specs)


# ---------------------------------------------------------------- negative controls


def _first_example(tag):
    fields, shape = LAYERS[tag].examples[0]
    return make(tag, fields), tuple(shape)


@pytest.mark.parametrize("tag", sorted(LAYERS))
def test_wrong_input_gradient_fails(tag):
    layer, shape = _first_example(tag)
    plan = layer_plan(layer, shape, "float64")
    step = plan.steps[0]
    right = step.backward

    def wrong(dy, need_dx=True):
        dx = right(dy, need_dx)
        if isinstance(dx, list):  # a multi-input layer: every input's dx
            return [d * 1.05 for d in dx]
        return dx * 1.05  # 5% off

    step.backward = wrong
    rows = {r.tensor: r for r in one_layer_check(plan, tag)}
    assert not rows["input"].passed
    assert all(r.passed for t, r in rows.items() if t != "input")


PARAM_TAGS = [t for t in sorted(LAYERS)
              if LAYERS[t].examples and inferred(*_first_example(t)).param_shapes]


@pytest.mark.parametrize("tag", PARAM_TAGS)
def test_wrong_parameter_gradient_fails(tag):
    layer, shape = _first_example(tag)
    plan = layer_plan(layer, shape, "float64")
    step = plan.steps[0]
    right = step.backward
    tensor = next(iter(step.ctx.grads))  # the first parameter, e.g. "weight"

    def wrong(dy, need_dx=True):
        dx = right(dy, need_dx)
        step.ctx.grads[tensor].flat[0] += 0.01  # one entry off
        return dx

    step.backward = wrong
    cfg = GradcheckSpec(batch_size=4, max_entries=10_000)  # check every entry of this small layer
    rows = {r.tensor: r for r in one_layer_check(plan, tag, cfg)}
    assert not rows[tensor].passed
    assert rows[tensor].index == (0,) * step.ctx.grads[tensor].ndim  # the corrupted entry
    assert all(r.passed for t, r in rows.items() if t != tensor)


def _project(shape, seed=3):
    proj = np.random.default_rng(seed).standard_normal(shape)

    def objective(out):
        return float(np.sum(out * proj)), proj.copy()

    return objective


@pytest.mark.parametrize("tag", ["relu", "leaky_relu"])
def test_relu_kinks_are_skipped(tag):
    plan = layer_plan(make(tag, {}), (6,), "float64")
    x = np.array([[1.0, -2.0, 3e-7, -4e-7, 0.5, 0.0]])  # three entries within eps (1e-6) of 0
    rows = check_plan(plan, _project((1, 6)), x, CFG, np.random.default_rng(0), "layer")
    (row,) = rows
    assert row.skipped == 3 and row.checked == 3
    assert row.passed


def test_maxpool_ties_are_skipped():
    plan = layer_plan(make("maxpool2d", {"kernel_size": 2}), (1, 2, 4), "float64")
    x = np.array([[[[1.0, 1.0, 0.0, 2.0],  # left window: a tie between 1.0 and 1.0
                    [0.0, 0.5, 1.0, -1.0]]]])
    rows = check_plan(plan, _project((1, 1, 1, 2)), x, CFG, np.random.default_rng(0), "layer")
    (row,) = rows
    assert row.skipped == 2  # nudging either tied input changes which one wins
    assert row.checked == 6 and row.passed


def test_without_kink_skipping_a_relu_at_zero_would_fail():
    """The skip matters: at x = 0 the central difference is 1/2, the analytic derivative 0."""
    plan = layer_plan(make("relu", {}), (1,), "float64")
    y_up = plan.forward(np.array([[1e-6]]), True)[0, 0]
    y_down = plan.forward(np.array([[-1e-6]]), True)[0, 0]
    numeric = (y_up - y_down) / 2e-6
    plan.forward(np.array([[0.0]]), True)
    analytic = plan.backward(np.ones((1, 1)))[0, 0]
    assert abs(numeric - 0.5) < 1e-9 and analytic == 0.0


# ---------------------------------------------------------------- conv2d


@pytest.mark.parametrize("padding", [0, 1])
def test_conv2d_inference_follows_each_new_input(padding):
    # Inference keeps its strided views of the (padded) input while that array stays the
    # same: a new input array, of the same shape, must be read afresh.
    layer = make("conv2d", {"out_channels": 3, "kernel_size": 3, "padding": padding})
    plan = layer_plan(layer, (2, 8, 8), "float64")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 2, 8, 8)) for _ in range(3)]
    got = [plan.forward(x) for x in inputs]
    for x, y in zip(inputs, got):
        fresh = layer_plan(layer, (2, 8, 8), "float64")
        np.testing.assert_allclose(y, fresh.forward(x), rtol=1e-12, atol=1e-12)
    assert not np.allclose(got[0], got[1])


# ---------------------------------------------------------------- dropout


def test_dropout_eval_is_identity():
    plan = layer_plan(make("dropout", {"p": 0.4}), (3, 5, 5), "float64")
    x = np.random.default_rng(0).standard_normal((7, 3, 5, 5))
    np.testing.assert_array_equal(plan.forward(x, train=False), x)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_array_equal(plan.backward(dy), dy)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_train_drops_and_rescales(dtype):
    p = 0.3
    plan = layer_plan(make("dropout", {"p": p}), (50, 40), dtype)
    x = np.random.default_rng(0).uniform(1, 2, (10, 50, 40))  # no zeros in the input
    y = plan.forward(x, train=True)
    assert y.dtype == np.dtype(dtype)
    kept = y != 0
    # kept entries are scaled by 1 / (1 - p); 20,000 draws: the drop fraction is p +- 0.01
    np.testing.assert_allclose(y[kept], (x / (1 - p))[kept], rtol=1e-6)
    assert abs((~kept).mean() - p) < 0.01
    # the backward uses the same mask and scale
    dx = plan.backward(np.ones_like(x))
    np.testing.assert_allclose(dx, kept / (1 - p), rtol=1e-6)
    # a new forward draws a new mask
    assert not np.array_equal(plan.forward(x, train=True) != 0, kept)


def test_dropout_mask_is_a_function_of_seed_step_and_batch_position():
    plan = layer_plan(make("dropout", {}), (3, 5), "float64", seed=7)
    x = np.random.default_rng(0).uniform(1, 2, (6, 3, 5))
    whole = plan.forward(x, train=True)  # step 0
    assert plan.noise.step == 1
    assert not np.array_equal(plan.forward(x, train=True) == 0, whole == 0)  # step 1: new
    plan.noise.step = 0
    np.testing.assert_array_equal(plan.forward(x, train=True), whole)  # step 0 again
    # Samples k.. as the slice of a worker whose part of the batch starts at position k: the
    # masks of the whole batch's samples k.. (k * 15 draws before them: odd and even counts).
    # At offset 0 they are other masks.
    for k in (1, 2, 3):
        for offset, same in ((k, True), (0, False)):
            plan.noise.step, plan.noise.offset = 0, offset
            part = plan.from_internal(plan.run_forward(plan.to_internal(x[k:]), train=True))
            assert np.array_equal(part == 0, whole[k:] == 0) == same
    other = layer_plan(make("dropout", {}), (3, 5), "float64", seed=8)
    assert not np.array_equal(other.forward(x, train=True) == 0, whole == 0)  # another seed


# ---------------------------------------------------------------- batchnorm


def _bn_plan(shape, **fields):
    plan = layer_plan(make("batchnorm", fields), shape, "float64")
    return plan, plan.steps[0].name


def _channel_axes(x):
    """Axes a torch BatchNorm reduces over for PyTorch-layout x: all but the channel axis 1."""
    return (0,) + tuple(range(2, x.ndim))


def _bcast(v, x):
    """(C,) -> shape broadcasting against PyTorch-layout x (N, C, ...)."""
    return v.reshape(1, -1, *([1] * (x.ndim - 2)))


@pytest.mark.parametrize("shape", [(3, 4, 5), (6,)], ids=["2d", "1d"])
def test_batchnorm_initial_state_ignores_defaults_init(shape):
    text = f"""
input: {{shape: {list(shape)}}}
defaults:
  init: {{weight: {{type: normal, std: 3.0}}, bias: ones}}
layers:
  - {{type: batchnorm, name: bn}}
data: {{dataset: custom-dir}}
"""
    plan = netspec.compile(netspec.loads(text, "t.yaml"), "float64")
    c = shape[0]
    np.testing.assert_array_equal(plan.params["bn.weight"], np.ones(c))
    np.testing.assert_array_equal(plan.params["bn.bias"], np.zeros(c))
    np.testing.assert_array_equal(plan.buffers["bn.running_mean"], np.zeros(c))
    np.testing.assert_array_equal(plan.buffers["bn.running_var"], np.ones(c))


@pytest.mark.parametrize("shape", [(3, 4, 5), (6,)], ids=["2d", "1d"])
def test_batchnorm_train_uses_batch_stats_and_updates_running_stats_like_torch(shape):
    momentum, eps = 0.2, 1e-5
    plan, name = _bn_plan(shape, momentum=momentum)
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal(shape[0]), rng.standard_normal(shape[0])
    plan.params[f"{name}.weight"][...] = w
    plan.params[f"{name}.bias"][...] = b
    run_mean, run_var = np.zeros(shape[0]), np.ones(shape[0])
    for step in range(3):
        x = 2.0 + 3.0 * rng.standard_normal((8, *shape))
        y = plan.forward(x, train=True)
        axes = _channel_axes(x)
        count = x.size // shape[0]  # values per channel
        mean = x.sum(axis=axes) / count
        centred = x - _bcast(mean, x)
        biased = (centred**2).sum(axis=axes) / count
        unbiased = (centred**2).sum(axis=axes) / (count - 1)
        expected = centred / np.sqrt(_bcast(biased, x) + eps) * _bcast(w, x) + _bcast(b, x)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
        run_mean = (1 - momentum) * run_mean + momentum * mean
        run_var = (1 - momentum) * run_var + momentum * unbiased
        np.testing.assert_allclose(plan.buffers[f"{name}.running_mean"], run_mean, rtol=1e-12)
        np.testing.assert_allclose(plan.buffers[f"{name}.running_var"], run_var, rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 4, 5), (6,)], ids=["2d", "1d"])
def test_batchnorm_eval_uses_running_stats_and_is_affine(shape):
    eps = 1e-3
    plan, name = _bn_plan(shape, eps=eps)
    rng = np.random.default_rng(1)
    c = shape[0]
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    plan.params[f"{name}.weight"][...] = w
    plan.params[f"{name}.bias"][...] = b
    plan.buffers[f"{name}.running_mean"][...] = rm
    plan.buffers[f"{name}.running_var"][...] = rv
    x = rng.standard_normal((5, *shape))
    y = plan.forward(x, train=False)
    xhat = (x - _bcast(rm, x)) / np.sqrt(_bcast(rv, x) + eps)
    np.testing.assert_allclose(y, xhat * _bcast(w, x) + _bcast(b, x), rtol=1e-12, atol=1e-12)
    # eval mode leaves the running statistics alone
    np.testing.assert_array_equal(plan.buffers[f"{name}.running_mean"], rm)
    np.testing.assert_array_equal(plan.buffers[f"{name}.running_var"], rv)
    # ... and its backward is the affine map's: dx = dy * w / sqrt(rv + eps)
    dy = rng.standard_normal(x.shape)
    dx = plan.backward(dy)
    np.testing.assert_allclose(dx, dy * _bcast(w / np.sqrt(rv + eps), x), rtol=1e-12)
    axes = _channel_axes(x)
    np.testing.assert_allclose(plan.grads[f"{name}.weight"], (dy * xhat).sum(axis=axes),
                               rtol=1e-10)
    np.testing.assert_allclose(plan.grads[f"{name}.bias"], dy.sum(axis=axes), rtol=1e-10)


def test_batchnorm_one_value_per_channel_in_training_is_an_error():
    plan, _ = _bn_plan((4,))
    with pytest.raises(netspec.TrainingError, match="batch_size of 2 or more"):
        plan.forward(np.ones((1, 4)), train=True)
    plan.forward(np.ones((1, 4)), train=False)  # eval is fine with one sample


# ---------------------------------------------------------------- other elementwise layers


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    for dtype in ("float32", "float64"):
        plan = layer_plan(make("sigmoid", {}), (5,), dtype)
        with np.errstate(over="raise", divide="raise", invalid="raise"):  # (underflow is fine)
            y = plan.forward(x, train=True)
            dx = plan.backward(np.ones_like(x))
        expected = np.array([0.0, np.exp(-50.0) / (1 + np.exp(-50.0)), 0.5, 1.0, 1.0])
        np.testing.assert_allclose(y[0], expected, rtol=1e-6, atol=0)
        assert dx[0, 2] == pytest.approx(0.25) and dx[0, 0] == 0.0 and dx[0, 4] == 0.0


def test_elementwise_formulas():
    x = np.linspace(-3, 3, 13)[None, :]
    cases = {
        ("tanh", ()): (np.tanh(x), 1 - np.tanh(x) ** 2),
        ("sigmoid", ()): (1 / (1 + np.exp(-x)), np.exp(-x) / (1 + np.exp(-x)) ** 2),
        ("leaky_relu", (("negative_slope", 0.1),)): (np.where(x > 0, x, 0.1 * x),
                                                     np.where(x > 0, 1.0, 0.1)),
        ("leaky_relu", (("negative_slope", 2.0),)): (np.where(x > 0, x, 2.0 * x),
                                                     np.where(x > 0, 1.0, 2.0)),
        ("leaky_relu", (("negative_slope", -0.5),)): (np.where(x > 0, x, -0.5 * x),
                                                      np.where(x > 0, 1.0, -0.5)),
    }
    for (tag, fields), (y_expected, d_expected) in cases.items():
        plan = layer_plan(make(tag, dict(fields)), (13,), "float64")
        np.testing.assert_allclose(plan.forward(x, True), y_expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(plan.backward(np.ones_like(x)), d_expected, rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_propagates_nan_and_clamps_infinities(dtype):
    """relu is max(x, 0) on every value NumPy has (it runs as np.clip, which NumPy does faster
    than maximum against a scalar): NaN stays NaN (np.fmax would give 0), -inf gives 0."""
    x = np.array([[np.nan, -np.inf, -2.5, -0.0, 0.0, 1e-30, 3.0, np.inf]])
    plan = layer_plan(make("relu", {}), (8,), dtype)
    with np.errstate(invalid="ignore"):
        y = plan.forward(x, train=True)
    np.testing.assert_array_equal(y, np.maximum(x, 0).astype(dtype))  # NaN matches NaN


def test_global_avgpool_is_the_channel_mean():
    plan = layer_plan(make("global_avgpool", {}), (3, 4, 5), "float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(plan.forward(x, True), x.mean(axis=(2, 3)), rtol=1e-12)
    dx = plan.backward(np.ones((2, 3)))
    np.testing.assert_allclose(dx, np.full(x.shape, 1 / 20), rtol=1e-12)


# ---------------------------------------------------------------- seeding


def test_same_seed_same_parameters_different_seed_different():
    a = netspec.compile(netspec.load(SPECS / "lenet.yaml"))
    b = netspec.compile(netspec.load(SPECS / "lenet.yaml"))
    c = netspec.compile(netspec.load(SPECS / "lenet.yaml", overrides=["seed=1"]))
    assert a.params.keys() == b.params.keys() == c.params.keys()
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert all(not np.array_equal(a.params[k], c.params[k])
               for k in a.params if k.endswith(".weight"))


def test_same_seed_same_dropout_masks():
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28))
    a = netspec.compile(netspec.load(SPECS / "tiny-zoo.yaml"), "float64")  # has dropout
    b = netspec.compile(netspec.load(SPECS / "tiny-zoo.yaml"), "float64")
    assert any(s.info.type == "dropout" for s in a.steps)
    a1, a2 = a.forward(x, train=True), a.forward(x, train=True)
    b1, b2 = b.forward(x, train=True), b.forward(x, train=True)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # each forward draws a fresh mask


def test_workspace_fills_only_arrays_it_allocates():
    """fill= (and zero=) set a new array once; the same array comes back as the caller left
    it, and a new shape gets a new filled array (batchnorm's and conv2d's ones for row sums)."""
    from netspec.nn.layers.base import Workspace

    ws = Workspace("float32")
    ones = ws("ones", (4,), fill=1)
    assert ones.tolist() == [1, 1, 1, 1] and ones.dtype == np.float32
    ones[0] = 7  # not refilled on the next call: the fill is for new arrays only
    assert ws("ones", (4,), fill=1) is ones and ones[0] == 7
    assert ws("ones", (3,), fill=1).tolist() == [1, 1, 1]
    assert ws("pad", (2,), zero=True).tolist() == [0, 0]
