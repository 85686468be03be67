"""conv2d's Winograd F(4x4, 3x3) training path for 7x7 and 8x8 images (netspec/winograd4.py):
when it is taken, that it equals the im2col path, that its gradients check through a net, and
that a broken transform or backward is caught. (test_winograd.py trains with it on two workers
and checks need_dx=False.)"""

import numpy as np
import pytest
from test_winograd import NET4, compare, conv

import netspec
from netspec import blas, winograd, winograd4
from netspec.gradcheck import check_spec


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
