"""The compiled Plan: public API contracts, eval chunking, flat parameter storage."""

import numpy as np
import pytest
from conftest import ROOT

import netspec
from netspec.errors import CheckpointError


def lenet(dtype="float64"):
    spec = netspec.load(ROOT / "specs" / "lenet-max.yaml")
    return spec, netspec.compile(spec, dtype=dtype)


def test_chunked_eval_forward_and_backward_equal_unchunked():
    _, chunked = lenet()
    _, whole = lenet()
    whole.eval_chunk = 10**9  # never chunk
    n = 3 * chunked.eval_chunk + 7  # several chunks and a ragged end
    x = np.random.default_rng(0).standard_normal((n, 1, 28, 28))
    assert n > chunked.eval_chunk
    y1, y2 = chunked.forward(x), whole.forward(x)
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(1).standard_normal(y1.shape)
    dx1, dx2 = chunked.backward(dy), whole.backward(dy)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-10, atol=1e-12)
    for k in chunked.grads:
        np.testing.assert_allclose(chunked.grads[k], whole.grads[k], rtol=1e-10, atol=1e-12)


def test_flat_input_view_gives_the_same_result_as_a_contiguous_copy():
    spec = netspec.load(ROOT / "specs" / "mlp.yaml")
    plan = netspec.compile(spec, dtype="float64")
    x = np.random.default_rng(0).standard_normal((32, 784))
    expected = plan.run_forward(np.ascontiguousarray(x.T), train=False).T.copy()
    np.testing.assert_array_equal(plan.forward(x), expected)
    np.testing.assert_array_equal(plan.forward(x.reshape(32, 1, 28, 28)), expected)


def test_parameters_are_views_of_one_flat_array_in_pytorch_layout():
    _, plan = lenet("float32")
    assert [k for k in plan.params][:4] == ["conv1.weight", "conv1.bias", "conv2.weight",
                                            "conv2.bias"]
    assert plan.params["conv1.weight"].shape == (6, 1, 5, 5)
    assert plan.params["fc1.weight"].shape == (120, 400)
    assert plan.flat_params.size == sum(p.size for p in plan.params.values()) == 61706
    plan.flat_params[:] = 0.5
    assert all((p == 0.5).all() for p in plan.params.values())
    assert all(p.dtype == np.float32 for p in plan.params.values())


def test_state_dict_round_trip_and_mismatch_errors():
    _, a = lenet()
    _, b = lenet()
    b.flat_params[:] = 0
    b.load_state_dict(a.state_dict())
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    state = a.state_dict()
    state["fc1.weight"] = state["fc1.weight"][:10]
    del state["fc3.bias"]
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(CheckpointError) as err:
        b.load_state_dict(state, "test state")
    message = str(err.value)
    assert "missing: fc3.bias" in message and "unexpected: extra.weight" in message
    assert "fc1.weight: (10, 400) there, (120, 400) here" in message


def test_public_shape_checks():
    _, plan = lenet()
    with pytest.raises(ValueError, match="x must have shape"):
        plan.forward(np.zeros((2, 3, 28, 28)))
    with pytest.raises(ValueError, match="dy must have shape"):
        plan.forward(np.zeros((2, 1, 28, 28)))
        plan.backward(np.zeros((2, 9)))


def test_the_first_layer_skips_its_input_gradient_only_when_asked():
    _, plan = lenet()
    x = plan.to_internal(np.random.default_rng(0).standard_normal((4, 1, 28, 28)))
    out = plan.run_forward(x, train=True)
    assert plan.run_backward(np.ones_like(out), need_dx=False) is None
    out = plan.run_forward(x, train=True)
    assert plan.run_backward(np.ones_like(out), need_dx=True).shape == (1, 28, 28, 4)


def test_a_plan_runs_with_its_own_ufunc_buffer_and_restores_the_callers():
    from netspec.kernels.ufuncs import UFUNC_BUFSIZE

    _, plan = lenet()
    seen = []
    step = plan.steps[0]
    forward, backward = step.forward, step.backward
    step.forward = lambda x, train: (seen.append(np.getbufsize()), forward(x, train))[1]
    step.backward = lambda dy, need_dx: (seen.append(np.getbufsize()), backward(dy, need_dx))[1]
    old = np.setbufsize(4096)
    try:
        x = np.random.default_rng(0).standard_normal((4, 1, 28, 28))
        plan.backward(plan.forward(x, train=True))
        assert np.getbufsize() == 4096  # the caller's setting is back
    finally:
        np.setbufsize(old)
    assert seen == [UFUNC_BUFSIZE, UFUNC_BUFSIZE]
    assert UFUNC_BUFSIZE != 4096


def test_the_compiler_does_not_load_the_worker_machinery():
    # plan.py is the core: worker processes (parallel.py) build on it, not the other way round.
    import subprocess
    import sys

    code = "import sys, netspec; print('netspec.train.pool' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"


def test_eval_chunk_has_a_floor_for_nets_with_large_activations():
    """record.yaml's activations (~570 kB per sample) would give chunks of 9 samples from
    EVAL_BYTES alone; chunks that small are dominated by per-call overhead."""
    from netspec.plan import compiler as plans

    big = netspec.compile(netspec.load(ROOT / "specs" / "record.yaml"), dtype="float32")
    assert plans.EVAL_BYTES // (570 << 10) < plans.MIN_EVAL_CHUNK
    assert big.eval_chunk == plans.MIN_EVAL_CHUNK
    small = netspec.compile(netspec.load(ROOT / "specs" / "lenet.yaml"), dtype="float32")
    assert small.eval_chunk > plans.MIN_EVAL_CHUNK  # EVAL_BYTES still rules for small nets
