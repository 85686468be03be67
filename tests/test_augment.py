"""Augmentation: each operation against a reference (numpy's padding modes, np.rot90), draws
keyed by (seed, epoch, sample index) so that resumes are bit-identical and worker counts agree,
fills in normalised units, and evaluation never augmented."""

import math

import numpy as np
import pytest
from conftest import TINY, finished_run, resumed_run, stopped_run, tiny_conv_spec

import netspec
from netspec import checkpoint
from netspec.data import Normalization, load_dataset, prepare
from netspec.data.augment import Augmenter, keyed_uniform, pad_index
from netspec.spec.data import AugmentSpec
from netspec.train.trainer import Trainer


def aug(**kw) -> AugmentSpec:
    return AugmentSpec.model_validate(kw)


def draws(seed, epoch, i, slot, n):
    return int(np.floor(keyed_uniform(seed, epoch, np.array([i]), slot)[0] * n))


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_crop_with_padding_is_numpys_pad_then_a_window(mode):
    x = np.arange(3 * 2 * 5 * 6, dtype=np.float32).reshape(3, 60)
    idx = np.array([4, 9, 17])
    a = Augmenter(aug(crop={"padding": 3, "mode": mode, "fill": 0}), (2, 5, 6), 7, 10)
    rows = x.copy()
    a(rows, idx, step=31)  # epoch 3
    for k, i in enumerate(idx):
        dy, dx = draws(7, 3, i, 0, 7), draws(7, 3, i, 1, 7)
        padded = np.pad(x[k].reshape(2, 5, 6), ((0, 0), (3, 3), (3, 3)), mode=mode)
        assert np.array_equal(rows[k].reshape(2, 5, 6), padded[:, dy:dy + 5, dx:dx + 6])


def test_padding_modes_match_torchvisions_documented_examples():
    i = np.arange(-2, 6)
    row = np.array([1, 2, 3, 4])
    assert row[pad_index(i, 4, "reflect")].tolist() == [3, 2, 1, 2, 3, 4, 3, 2]
    assert row[pad_index(i, 4, "symmetric")].tolist() == [2, 1, 1, 2, 3, 4, 4, 3]
    assert row[pad_index(i, 4, "edge")].tolist() == [1, 1, 1, 2, 3, 4, 4, 4]
    assert pad_index(i, 4, "constant").tolist() == [-1, -1, 0, 1, 2, 3, -1, -1]


def test_translation_shifts_by_whole_pixels_and_fills():
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    a = Augmenter(aug(translate={"pixels": 2, "fill": 255}), (1, 4, 4), 0, 1)
    rows = x.copy()
    a(rows, np.array([5]), step=0)
    ty, tx = draws(0, 0, 5, 2, 5) - 2, draws(0, 0, 5, 3, 5) - 2
    expected = np.full((4, 4), 255.0)
    src = x.reshape(4, 4)
    for y in range(4):
        for c in range(4):
            if 0 <= y - ty < 4 and 0 <= c - tx < 4:
                expected[y, c] = src[y - ty, c - tx]
    assert np.array_equal(rows.reshape(4, 4), expected)


def test_flip_mirrors_about_half_of_the_samples():
    x = np.tile(np.arange(8, dtype=np.float32), (1000, 1))
    a = Augmenter(aug(horizontal_flip=0.5), (1, 1, 8), 0, 1)
    rows = x.copy()
    a(rows, np.arange(1000), step=0)
    flipped = np.all(rows == x[:, ::-1], axis=1)
    assert np.all(flipped | np.all(rows == x, axis=1))
    assert 400 < flipped.sum() < 600


def test_rotation_is_counter_clockwise_bilinear_with_a_fill():
    img = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    a = Augmenter(aug(rotate={"degrees": 90}), (1, 4, 4), 0, 1)
    quarter = a.rotate(img, np.array([90.0]), np.zeros(1))
    assert np.allclose(quarter[0, 0], np.rot90(img[0, 0]))  # np.rot90 turns counter-clockwise
    assert not np.allclose(quarter[0, 0], np.rot90(img[0, 0], -1))  # negative control
    small = a.rotate(img, np.array([30.0]), np.full(1, -7.0))
    assert small[0, 0, 0, 0] < img.min()  # a corner blends in the fill
    assert small[0, 0, 1:3, 1:3].min() >= img.min()  # the middle does not


def reference_rotate(img, degrees, fill):
    """One sample (C, H, W) turned pixel by pixel: the inverse turn of each output pixel's
    centre offset, then bilinear interpolation with fill outside the image."""
    c, h, w = img.shape
    t = np.radians(degrees)
    out = np.empty_like(img, dtype=np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    for y in range(h):
        for x in range(w):
            sx = np.cos(t) * (x - cx) - np.sin(t) * (y - cy) + cx
            sy = np.sin(t) * (x - cx) + np.cos(t) * (y - cy) + cy
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - x0, sy - y0
            for k in range(c):
                def at(yy, xx, k=k):
                    return img[k, yy, xx] if 0 <= yy < h and 0 <= xx < w else fill[k]
                out[k, y, x] = ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                                + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))
    return out


@pytest.mark.parametrize("shape, degrees", [((1, 9, 9), [8.0, -8.0, 3.5]),
                                            ((3, 6, 10), [30.0, -45.0, 0.0]),
                                            ((2, 7, 5), [170.0, -120.0, 90.0])])
def test_rotation_equals_a_pixel_by_pixel_reference(shape, degrees):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((len(degrees), *shape)).astype(np.float32)
    fill = np.arange(shape[0], dtype=np.float64) - 2.5
    a = Augmenter(aug(rotate={"degrees": 180}), shape, 0, 1)
    got = a.rotate(x, np.array(degrees), fill)
    for i, deg in enumerate(degrees):
        want = reference_rotate(x[i], deg, fill)
        assert np.allclose(got[i], want, atol=1e-5), (shape, deg)
        assert not np.allclose(got[i], reference_rotate(x[i], -deg, fill), atol=1e-5) or deg == 0


def test_fills_are_converted_to_normalised_values_per_channel():
    norm = Normalization("standardize", (0.5, 0.25, 0.0), (0.5, 0.25, 1.0), 255.0)
    a = Augmenter(aug(crop={"padding": 1, "fill": [255, 0, 51]}), (3, 2, 2), 0, 1, norm)
    assert np.allclose(a.fills["crop"], [(1 - 0.5) / 0.5, (0 - 0.25) / 0.25, 0.2])


def test_a_samples_draws_do_not_depend_on_the_batch_it_is_in():
    x = np.random.default_rng(0).random((6, 3 * 8 * 8)).astype(np.float32)
    a = Augmenter(aug(crop={"padding": 2}, horizontal_flip=0.5, rotate={"degrees": 15}),
                  (3, 8, 8), 1, 4)
    whole = x.copy()
    a(whole, np.arange(6), step=9)
    part = x[[4, 1]].copy()
    a(part, np.array([4, 1]), step=9)
    assert np.array_equal(part, whole[[4, 1]])
    later = x.copy()
    a(later, np.arange(6), step=13)  # another epoch: other draws
    assert not np.array_equal(later, whole)


def spec_text(**kw):
    text = tiny_conv_spec(**kw)
    return text.replace("data: {dataset:", "data: {augment: {crop: {padding: 2, mode: reflect}, "
                        "horizontal_flip: 0.5, rotate: {degrees: 8}}, dataset:")


@pytest.fixture(scope="module")
def splits():
    return prepare(load_dataset(str(TINY)))


def test_training_with_augmentation_agrees_across_worker_counts(splits):
    spec = netspec.loads(spec_text(epochs=1), "aug.yaml")
    results = []
    for workers in (1, 2):
        trainer = Trainer(spec, splits, dtype="float64", workers=workers)
        try:
            stats = trainer.train_epoch()
        finally:
            trainer.close()
        results.append((stats.loss, trainer.plan.state_dict()))
    (l1, s1), (l2, s2) = results
    assert math.isclose(l1, l2, rel_tol=1e-12)
    for k in s1:
        assert np.allclose(s1[k], s2[k], rtol=1e-9, atol=1e-12), k
    plain = Trainer(netspec.loads(tiny_conv_spec(epochs=1), "plain.yaml"), splits,
                    dtype="float64", workers=1)
    assert not math.isclose(plain.train_epoch().loss, l1, rel_tol=1e-3)  # it did augment


def test_a_resumed_run_with_augmentation_is_bit_identical(tmp_path, splits):
    small = {k: (x[:96], y[:96]) for k, (x, y) in splits.items()}

    def spec():
        return netspec.loads(spec_text(epochs=2, batch_size=16), "aug.yaml")

    whole = finished_run(spec(), small, tmp_path / "a")
    stopped_run(spec(), small, tmp_path / "b", 9)  # mid second epoch
    resumed = resumed_run(spec(), small, tmp_path / "b")
    a, b = (checkpoint.load(r.last_path).state for r in (whole, resumed))
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    timing = ("train_seconds", "eval_seconds", "images_per_second")
    for r, s in zip(whole.history, resumed.history, strict=True):
        assert {k: v for k, v in r.items() if k not in timing} == \
            {k: v for k, v in s.items() if k not in timing}


def test_evaluation_is_never_augmented(splits):
    spec = netspec.loads(spec_text(epochs=1), "aug.yaml")
    trainer = Trainer(spec, splits, dtype="float64", workers=1)
    x, y = splits["test"]
    first = trainer.evaluate(x, y)
    trainer.plan.noise.step = 123  # another "epoch": evaluation must not change
    second = trainer.evaluate(x, y)
    assert first.loss == second.loss and np.array_equal(first.predictions, second.predictions)


def test_augmenting_a_table_or_rgb_fill_on_gray_is_a_located_spec_error():
    from netspec.errors import SpecError
    from netspec.train.inputs import load_splits

    text = spec_text(epochs=1).replace("rotate: {degrees: 8}", "rotate: {degrees: 8, fill: "
                                       "[1, 2, 3]}")
    spec = netspec.loads(text, "aug.yaml")
    with pytest.raises(SpecError, match=r"data\.augment\.rotate\.fill: \[R, G, B\] fills an RGB"):
        load_splits(spec)
