"""conv2d's Winograd F(4x4, 3x3) training algorithm (netspec/kernels/winograd.py): when the plan's
options choose it, that it equals the im2col algorithm (whole tiles and cropped ones, one block
of tiles or many, runs of samples), that its gradients check, that two workers with it train
like one process, and that a broken transform or backward is caught."""

import numpy as np
import pytest
from conftest import TINY, train_with_workers

import netspec
from netspec.kernels import blas, winograd
from netspec.nn.layers import LAYERS
from netspec.plan.compiler import layer_plan
from netspec.plan.gradcheck import check_spec
from netspec.plan.options import PlanOptions, can_fork


@pytest.fixture
def calls(monkeypatch):
    """Counts of Winograd.forward and .backward calls in this process."""
    counts = {"forward": 0, "backward": 0}
    for name in counts:
        real = getattr(winograd.Winograd, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(winograd.Winograd, name, spy)
    return counts


def conv(c, k, h, w, bias=True, options=None, **more):
    layer = LAYERS["conv2d"].model_validate({"type": "conv2d", "out_channels": k,
                                             "kernel_size": 3, "padding": 1, "bias": bias,
                                             **more})
    plan = layer_plan(layer, (c, h, w), "float64", seed=0, options=options)
    step = plan.steps[0]
    if bias:  # not the zero init, so that a wrong bias path shows
        plan.params[f"{step.name}.bias"][...] = np.linspace(-1, 1, k)
    return plan, step


def step_once(plan, step, x, dy, train=True):
    """(y, dx, {param: grad}) of one forward and backward."""
    y = step.forward(x, train).copy()
    dx = step.backward(dy, True).copy()
    return y, dx, {k: g.copy() for k, g in plan.grads.items()}


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def compare(c, k, h, w, bias, n=3, train=True):
    """Worst relative difference of y, dx and every gradient between a plan with the Winograd
    algorithm and one with im2col, over two steps, the weights changed in between as an
    optimizer would (U must follow them)."""
    rng = np.random.default_rng(1)
    plans = {algo: conv(c, k, h, w, bias, PlanOptions(conv=algo))
             for algo in ("im2col", "winograd")}
    assert [p.algorithms() for p, _ in plans.values()] == [{"conv2d": "im2col"},
                                                           {"conv2d": "winograd"}]
    worst = 0.0
    for _ in range(2):
        x, dy = rng.standard_normal((c, h, w, n)), rng.standard_normal((k, h, w, n))
        got = {algo: step_once(plan, step, x, dy, train) for algo, (plan, step) in plans.items()}
        (y0, dx0, g0), (y1, dx1, g1) = got["im2col"], got["winograd"]
        worst = max(worst, rel(y1, y0), rel(dx1, dx0), *(rel(g1[key], g0[key]) for key in g0))
        delta = rng.standard_normal(plans["winograd"][0].flat_params.shape)
        for plan, _ in plans.values():
            plan.flat_params[...] += 0.1 * delta
    return worst


@pytest.mark.parametrize("c, k, h, w, bias", [
    (16, 16, 28, 28, False),  # vgg-bn's conv2: 7 rows of whole tiles
    (16, 32, 14, 14, True),  # the last tile row and column half outside
    (64, 64, 7, 7, False),  # vgg-bn's conv6
    (8, 5, 8, 8, True),  # 2x2 whole tiles
    (8, 4, 15, 15, True),
    (8, 5, 15, 12, False),
    (9, 3, 12, 17, True),
    (8, 4, 7, 9, True),
])
def test_winograd_equals_im2col(c, k, h, w, bias, calls):
    assert compare(c, k, h, w, bias) < 1e-10
    assert calls == {"forward": 2, "backward": 2}  # the Winograd plan took the path each step


@pytest.mark.parametrize("floats", [1, 2000])  # runs of 1 sample; of 1-2 samples (uneven)
def test_runs_of_samples_equal_whole_rows(floats, monkeypatch, calls):
    """Blocks of a row of tiles split into runs of samples (winograd.CHUNK_FLOATS) give the
    same result as whole rows."""
    monkeypatch.setattr(winograd, "CHUNK_FLOATS", floats)
    assert compare(8, 6, 9, 9, True, n=5) < 1e-10
    assert calls == {"forward": 2, "backward": 2}


@pytest.mark.parametrize("part", ["BT", "G", "backward"])
def test_a_broken_transform_is_caught(part, monkeypatch, calls):
    """Negative controls: a 1% error in one entry of B^T (the input transform, read when the
    layer is built: y, dW and dx wrong) or G (the filter transform), or the adjoint's row
    blocks summed wrongly (the first two rows of each block set instead of added: dx wrong)."""
    if part == "backward":
        real = winograd.Winograd._backward_row
        monkeypatch.setattr(winograd.Winograd, "_backward_row",
                            lambda self, *a: real(self, *a[:-1], False))
    else:
        M = getattr(winograd, part).copy()
        M[3, 1] *= 1.01
        monkeypatch.setattr(winograd, part, M)
    assert compare(8, 4, 14, 14, True) > 1e-3
    assert calls == {"forward": 2, "backward": 2}


@pytest.mark.parametrize("c, h, more, threads, train, taken", [
    (8, 12, {}, 1, True, True),
    (8, 7, {}, 1, True, True),  # winograd.MIN_SIZE
    (8, 12, {"padding": "same"}, 1, True, True),
    (8, 12, {}, 2, True, False),  # two BLAS threads: the GEMM algorithms
    (8, 12, {}, 1, False, False),  # inference keeps the cache-blocked im2col
    (8, 6, {}, 1, True, False),  # too small
    (7, 12, {}, 1, True, False),  # too few input channels (winograd.MIN_CHANNELS)
    (8, 12, {"stride": 2}, 1, True, False),
    (8, 12, {"dilation": 2, "padding": 2}, 1, True, False),
    (8, 12, {"padding": 0}, 1, True, False),
    (8, 12, {"kernel_size": 5, "padding": 2}, 1, True, False),
])
def test_when_the_algorithm_is_chosen(c, h, more, threads, train, taken, calls):
    """conv 'auto' with the given BLAS threads per process."""
    plan, step = conv(c, 4, h, h + 1, options=PlanOptions(blas_threads=threads), **more)
    assert (plan.algorithms()["conv2d"] == "winograd") == (taken or not train)
    rng = np.random.default_rng(0)
    y = step.forward(rng.standard_normal((c, h, h + 1, 2)), train)
    step.backward(rng.standard_normal(y.shape), True)
    assert calls == ({"forward": 1, "backward": 1} if taken else {"forward": 0, "backward": 0})


def test_a_forced_algorithm_runs_where_it_can():
    """conv: winograd on a layer it does not suit gives im2col; auto with two threads (no
    Winograd) on a tall 16-channel image gives the row-stacked GEMM, and on a 3-channel image,
    whose stacked GEMM has too few rows, im2col."""
    assert conv(8, 4, 12, 12, options=PlanOptions(conv="winograd"), stride=2)[0].algorithms() \
        == {"conv2d": "im2col"}
    assert conv(16, 4, 20, 20, options=PlanOptions(blas_threads=2))[0].algorithms() \
        == {"conv2d": "stacked"}
    assert conv(3, 4, 20, 20, options=PlanOptions(blas_threads=1))[0].algorithms() \
        == {"conv2d": "im2col"}
    with pytest.raises(ValueError, match="conv must be 'auto' or one of"):
        PlanOptions(conv="fft")


def test_backward_after_an_eval_forward(calls):
    """An eval-mode forward (im2col, no V kept) then backward still gives the right gradients,
    and Winograd is not used for either."""
    assert compare(8, 4, 14, 14, True, train=False) < 1e-10
    assert calls == {"forward": 0, "backward": 0}


def blas_threads() -> set:
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_blas_limit_sets_and_restores_the_thread_count():
    before = blas_threads()
    with blas.limit(1):
        assert blas_threads() == {1}
    assert blas_threads() == before


NET = f"""
name: wino-net
seed: 0
input: {{shape: [1, 28, 28]}}
layers:
  - {{type: conv2d, name: conv1, out_channels: 8, kernel_size: 3, padding: 1, bias: false}}
  - {{type: batchnorm, name: bn1}}
  - {{type: relu}}
  - {{type: maxpool2d, kernel_size: 2}}
  - {{type: conv2d, name: conv2, out_channels: 8, kernel_size: 3, padding: 1}}
  - {{type: batchnorm, name: bn2}}
  - {{type: relu}}
  - {{type: global_avgpool}}
  - {{type: linear, name: fc, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 32, optimizer: {{type: sgd, lr: 0.05, momentum: 0.9}}}}
gradcheck: {{batch_size: 2}}
"""


# NET with a third conv at 7x7 (after a second pool)
NET3 = NET.replace(
    "  - {type: global_avgpool}",
    "  - {type: maxpool2d, kernel_size: 2}\n"
    "  - {type: conv2d, name: conv3, out_channels: 8, kernel_size: 3, padding: 1}\n"
    "  - {type: batchnorm, name: bn3}\n  - {type: relu}\n  - {type: global_avgpool}")


@pytest.mark.parametrize("broken", [False, True])
def test_gradcheck_through_the_winograd_path(broken, monkeypatch, calls):
    if broken:  # negative control: conv3's dx 1% off, so everything upstream is wrong
        real = winograd.Winograd.backward

        def wrong(self, *args, **kwargs):
            dx = real(self, *args, **kwargs)
            return None if dx is None else dx * 1.01

        monkeypatch.setattr(winograd.Winograd, "backward", wrong)
    report = check_spec(netspec.loads(NET3, "wino.yaml"), options=PlanOptions(conv="winograd"))
    assert calls["forward"] > 0 and calls["backward"] > 0
    failed = {(r.layer, r.tensor) for r in report.rows if not r.passed}
    if broken:  # what lies upstream of conv3's dx is wrong; conv3's own weight is right
        assert ("conv2", "weight") in failed and ("conv3", "weight") not in failed
    else:
        assert not failed


def spy_calls(monkeypatch) -> list:
    """A list that gets one entry per Winograd forward or backward call: (name, last arg)."""
    seen = []
    for name in ("forward", "backward"):
        real = getattr(winograd.Winograd, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            seen.append((_name, args[-1]))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(winograd.Winograd, name, spy)
    return seen


@pytest.mark.skipif(not can_fork(), reason="worker processes need Linux fork")
def test_two_workers_with_winograd_train_like_one(tiny_splits, monkeypatch):
    """One epoch of a batchnorm net whose conv2 (14x14) and conv3 (7x7) take Winograd on 2
    workers (one BLAS thread each), and im2col in one process: the same parameters to
    rounding, in float64."""
    monkeypatch.setattr("netspec.plan.options.available_cores", lambda: 2)  # 1 BLAS thread each
    seen = spy_calls(monkeypatch)
    spec = netspec.loads(NET3, "wino.yaml")
    threads = blas_threads()
    finals = {}
    for workers in (1, 2):
        trainer, stats = train_with_workers(spec, tiny_splits, workers)
        finals[workers] = (trainer.plan.flat_params.copy(), stats.loss, len(seen))
    (one, loss1, calls1), (two, loss2, calls2) = finals[1], finals[2]
    assert calls1 == 0 and calls2 > 0  # the parent's half of each batch
    np.testing.assert_allclose(two, one, rtol=1e-8, atol=1e-10)
    assert loss2 == pytest.approx(loss1, rel=1e-8)
    assert blas_threads() == threads  # the pool's limit ended with the epoch


@pytest.mark.parametrize("h, w", [(14, 13), (7, 7)])
def test_without_dx_the_weight_gradient_is_still_right(h, w, monkeypatch):
    """The first layer of a net skips dL/dx (need_dx=False)."""
    seen = spy_calls(monkeypatch)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((8, h, w, 2)), rng.standard_normal((4, h, w, 2))
    grads = {}
    for algo in ("im2col", "winograd"):
        plan, step = conv(8, 4, h, w, options=PlanOptions(conv=algo))
        step.forward(x, True)
        assert step.backward(dy, False) is None
        grads[algo] = plan.flat_grads.copy()
    assert seen[-1] == ("backward", False)  # called once, with need_dx=False
    assert len(seen) == 2
    assert rel(grads["winograd"], grads["im2col"]) < 1e-10


@pytest.mark.parametrize("c, k, h, n, taken", [
    (64, 64, 14, 16, True),  # C*K = 4096, 4 tiles x 16 samples per block
    (64, 64, 14, 3, False),  # too few tiles per block (winograd.EVAL_MIN_TILES)
    (32, 64, 28, 16, False),  # too small a GEMM (winograd.EVAL_MIN_CK)
])
def test_inference_takes_winograd_where_asked_and_it_pays(c, k, h, n, taken, calls):
    """Plan option eval_conv 'auto': the same y as im2col's inference to rounding, Winograd
    where the rule says so; a backward after it gives im2col's gradients (it runs the
    forward again, keeping V)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((c, h, h, n))
    dy = rng.standard_normal((k, h, h, n))
    got = {}
    for eval_conv in ("im2col", "auto"):
        plan, step = conv(c, k, h, h, options=PlanOptions(eval_conv=eval_conv, blas_threads=1))
        got[eval_conv] = step_once(plan, step, x, dy, train=False)
    assert calls == ({"forward": 2, "backward": 1} if taken else {"forward": 0, "backward": 0})
    (y0, dx0, g0), (y1, dx1, g1) = got["im2col"], got["auto"]
    assert max(rel(y1, y0), rel(dx1, dx0), *(rel(g1[key], g0[key]) for key in g0)) < 1e-10


def test_inference_keeps_im2col_by_default_and_with_two_threads(calls):
    rng = np.random.default_rng(0)
    for options in (PlanOptions(blas_threads=1), PlanOptions(eval_conv="auto", blas_threads=2)):
        step = conv(64, 64, 14, 14, options=options)[1]
        step.forward(rng.standard_normal((64, 14, 14, 16)), False)
    assert calls == {"forward": 0, "backward": 0}
    assert "eval conv auto" in netspec.compile(
        netspec.loads(NET, "wino.yaml"), options=PlanOptions(eval_conv="auto")).options.describe()
    with pytest.raises(ValueError, match="eval_conv must be 'im2col' or 'auto'"):
        PlanOptions(eval_conv="winograd")
