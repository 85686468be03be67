"""conv2d's Winograd F(4x4, 3x3) training path for 7x7 and 8x8 images (netspec/winograd4.py):
when it is taken, that it equals the im2col path, that its gradients check through a net and on
two workers, and that a broken transform or backward is caught."""

import numpy as np
import pytest
from conftest import train_with_workers
from test_winograd import NET, compare, conv

import netspec
from netspec import blas, winograd, winograd4
from netspec.gradcheck import check_spec
from netspec.parallel import can_fork

# NET with a third conv at 7x7 (after a second pool): conv2 (14x14) takes F(2x2), conv3 F(4x4)
NET4 = NET.replace(
    "  - {type: global_avgpool}",
    "  - {type: maxpool2d, kernel_size: 2}\n"
    "  - {type: conv2d, name: conv3, out_channels: 8, kernel_size: 3, padding: 1}\n"
    "  - {type: batchnorm, name: bn3}\n  - {type: relu}\n  - {type: global_avgpool}")


@pytest.fixture
def calls(monkeypatch):
    """Counts of Winograd4.forward / .backward calls (f4) and of Winograd's (f2)."""
    counts = {"f4 forward": 0, "f4 backward": 0, "f2 forward": 0, "f2 backward": 0}
    for cls, tag in ((winograd4.Winograd4, "f4"), (winograd.Winograd, "f2")):
        for name in ("forward", "backward"):
            real = getattr(cls, name)

            def spy(self, *args, _real=real, _key=f"{tag} {name}", **kwargs):
                counts[_key] += 1
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, spy)
    return counts


@pytest.mark.parametrize("c, k, h, w, bias", [
    (64, 64, 7, 7, False),  # vgg-bn's conv6
    (32, 64, 7, 7, True),
    (8, 5, 8, 8, True),  # whole tiles: no cropping
    (9, 3, 7, 8, False),
    (8, 4, 8, 7, True),
])
def test_f4_equals_im2col(c, k, h, w, bias, monkeypatch, calls):
    assert compare(c, k, h, w, bias, monkeypatch) < 1e-10
    assert calls["f4 forward"] == 2 and calls["f4 backward"] == 2  # each of the two steps
    assert calls["f2 forward"] == 0


def test_a_broken_transform_is_caught(monkeypatch, calls):
    """Negative control: a 1% error in one entry of B^T (read when the layer is built)."""
    BT = winograd4.BT.copy()
    BT[3, 1] *= 1.01
    monkeypatch.setattr(winograd4, "BT", BT)
    assert compare(8, 4, 7, 7, True, monkeypatch) > 1e-3
    assert calls["f4 forward"] == 2


@pytest.mark.parametrize("c, h, w, taken", [
    (8, 7, 7, "f4"), (8, 8, 8, "f4"), (8, 7, 8, "f4"),
    (8, 6, 6, None),  # below winograd4.SIZES
    (8, 9, 9, None), (8, 7, 9, None), (8, 11, 11, None),  # between the two paths
    (8, 12, 12, "f2"),  # winograd.MIN_SIZE
    (7, 7, 7, None),  # too few input channels (winograd.MIN_CHANNELS)
])
def test_which_path_is_taken(c, h, w, taken, monkeypatch, calls):
    monkeypatch.setattr(blas, "THREADS", 1)
    _, step = conv(c, 4, h, w)
    rng = np.random.default_rng(0)
    y = step.forward(rng.standard_normal((c, h, w, 2)), True)
    step.backward(rng.standard_normal(y.shape), True)
    for tag in ("f4", "f2"):
        assert calls[f"{tag} forward"] == calls[f"{tag} backward"] == (tag == taken)


def test_without_dx_the_weight_gradient_is_still_right(monkeypatch, calls):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((8, 7, 7, 3)), rng.standard_normal((4, 7, 7, 3))
    grads = {}
    for threads in (None, 1):
        monkeypatch.setattr(blas, "THREADS", threads)
        plan, step = conv(8, 4, 7, 7)
        step.forward(x, True)
        assert step.backward(dy, False) is None
        grads[threads] = plan.flat_grads.copy()
    assert calls["f4 backward"] == 1
    np.testing.assert_allclose(grads[1], grads[None], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("broken", [False, True])
def test_gradcheck_through_the_f4_path(broken, monkeypatch, calls):
    monkeypatch.setattr(blas, "THREADS", 1)
    if broken:  # negative control: conv3's dx 1% off, so everything upstream is wrong
        real = winograd4.Winograd4.backward

        def wrong(self, *args, **kwargs):
            dx = real(self, *args, **kwargs)
            return None if dx is None else dx * 1.01

        monkeypatch.setattr(winograd4.Winograd4, "backward", wrong)
    report = check_spec(netspec.loads(NET4, "wino4.yaml"))
    assert calls["f4 forward"] > 0 and calls["f2 forward"] > 0
    failed = {(r.layer, r.tensor) for r in report.rows if not r.passed}
    if broken:
        assert ("conv2", "weight") in failed and ("conv3", "weight") not in failed
    else:
        assert not failed


@pytest.mark.skipif(not can_fork(), reason="worker processes need Linux fork")
def test_two_workers_with_f4_train_like_one(tiny_splits, monkeypatch, calls):
    """One epoch of NET4 on 2 workers (F(2x2) and F(4x4) in the workers) and in one process
    (im2col): the same parameters to rounding, in float64."""
    monkeypatch.setattr("netspec.parallel.available_cores", lambda: 2)  # 1 BLAS thread each
    spec = netspec.loads(NET4, "wino4.yaml")
    finals = {}
    for workers in (1, 2):
        trainer, stats = train_with_workers(spec, tiny_splits, workers)
        finals[workers] = (trainer.plan.flat_params.copy(), stats.loss, dict(calls))
    (one, loss1, calls1), (two, loss2, calls2) = finals[1], finals[2]
    assert calls1["f4 forward"] == 0 and calls2["f4 forward"] > 0
    np.testing.assert_allclose(two, one, rtol=1e-8, atol=1e-10)
    assert loss2 == pytest.approx(loss1, rel=1e-8)
