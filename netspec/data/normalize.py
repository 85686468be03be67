"""Preparing arrays for training: the validation split and the normalisation of samples.

Normalisation is per channel for images and per feature for tables, with statistics of the
training split only (after the validation split is taken out):

    standardize  x = (v / unit - mean_c) / std_c    unit 255 for uint8 pixels, else 1
    scale        x = v / 255                        uint8 pixels only
    none         x = v

`prepare` returns the statistics with the arrays (`Prepared.norm`, also `.mean` and `.std`:
a float for one channel, a tuple per channel or feature otherwise); `apply_norm` (or, for
uint8 images, `normalize_images`) treats new samples the same way. Checkpoints store
`Normalization.record()`, so predict, eval and export never recompute it.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.data.dataset import Dataset, stratified_split
from netspec.errors import DataError, Problem, did_you_mean

NORMALIZE = ("standardize", "scale", "none")
# Prepared arrays of a memory-mapped (decoded) dataset larger than this go to a memory-mapped
# file beside the decoded pixels instead of into memory.
IN_MEMORY_LIMIT = 1 << 31
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Normalization:
    """x = (v / unit - mean) / std, per channel (axis 1) or feature; mode 'none' is identity."""

    mode: str
    mean: tuple = ()
    std: tuple = ()
    unit: float = 255.0

    def record(self) -> dict:
        """JSON values for a checkpoint or ONNX metadata (one channel: plain floats)."""
        def one(v):
            return None if not v else float(v[0]) if len(v) == 1 else [float(a) for a in v]
        return {"normalize": self.mode, "mean": one(self.mean), "std": one(self.std),
                "unit": self.unit}

    @classmethod
    def from_record(cls, record: dict) -> Normalization:
        def many(v):
            return () if v is None else tuple(float(a) for a in np.atleast_1d(v))
        mode = record.get("normalize", "standardize")
        unit = float(record.get("unit", 255.0))
        if mode == "scale":
            return cls("scale", (0.0,), (1.0,), 255.0)
        return cls(mode, many(record.get("mean")), many(record.get("std")), unit)

    def coefficients(self, channels: int, dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """(a, b) of x = v * a - b, each (channels,) in `dtype`; None for 'none'."""
        if self.mode == "none":
            return None
        mean = np.broadcast_to(np.asarray(self.mean, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(self.std, np.float64), (channels,))
        a, b = 1.0 / (self.unit * std), mean / std
        return a.astype(dtype), b.astype(dtype)


class Prepared(dict):
    """{"train": (x, y), ["val": (x, y),] "test": (x, y)} plus how x was normalised.

    x is float (N, C, H, W) or (N, D), y int64 (N,). `norm` is the Normalization; `normalize`,
    `mean` and `std` repeat it (mean and std: a float for one channel, a tuple otherwise, None
    for 'none'). `dataset` is the Dataset it came from (None when built by hand).
    """

    def __init__(self, splits, normalize: str, mean, std, norm: Normalization | None = None,
                 dataset: Dataset | None = None):
        super().__init__(splits)
        self.normalize = normalize
        self.mean = mean
        self.std = std
        self.norm = norm or Normalization.from_record(
            {"normalize": normalize, "mean": mean, "std": std})
        self.dataset = dataset

    def record(self) -> dict:
        return self.norm.record()


def stats(images: np.ndarray) -> tuple[float, float]:
    """(mean, std) over all pixels of `images` / 255, computed in float64 (exactly for uint8)."""
    images = np.asarray(images)
    if images.size == 0:
        raise DataError("cannot compute the mean and std of an empty set of images")
    if images.dtype != np.uint8:
        x = images.astype(np.float64) / 255.0
        return float(x.mean()), float(x.std())
    (mean,), (std,) = _uint8_stats(images.reshape(len(images), 1, -1))
    return mean, std


def channel_stats(x: np.ndarray) -> tuple[tuple, tuple]:
    """Per-channel (axis 1 of (N, C, ...)) or per-feature ((N, D)) mean and std, in units of
    v / unit: exact integer sums for uint8 pixels (/255), float64 otherwise, read in chunks."""
    if len(x) == 0:
        raise DataError("cannot compute the mean and std of an empty training split")
    if x.dtype == np.uint8:
        shaped = x.reshape(len(x), 1, -1) if x.ndim == 3 else x.reshape(len(x), x.shape[1], -1)
        return _uint8_stats(shaped)
    flat = x.reshape(len(x), x.shape[1], -1) if x.ndim > 2 else x[:, :, None]
    total = np.zeros(flat.shape[1])
    for lo in range(0, len(x), CHUNK_ROWS):
        total += flat[lo:lo + CHUNK_ROWS].astype(np.float64).sum(axis=(0, 2))
    count = len(x) * flat.shape[2]
    mean = total / count
    var = np.zeros(flat.shape[1])
    for lo in range(0, len(x), CHUNK_ROWS):
        d = flat[lo:lo + CHUNK_ROWS].astype(np.float64) - mean[None, :, None]
        var += np.square(d).sum(axis=(0, 2))
    std = np.sqrt(var / count)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _uint8_stats(x: np.ndarray) -> tuple[tuple, tuple]:
    """x uint8 (N, C, P): exact per-channel sums of pixels and squared pixels (Python ints)."""
    channels = x.shape[1]
    total = [0] * channels
    total_sq = [0] * channels
    for lo in range(0, len(x), CHUNK_ROWS):
        part = x[lo:lo + CHUNK_ROWS]
        for c in range(channels):
            plane = part[:, c]
            total[c] += int(plane.sum(dtype=np.uint64))
            total_sq[c] += int(np.square(plane, dtype=np.uint16).sum(dtype=np.uint64))
    n = len(x) * x.shape[2]
    mean = tuple(t / (255 * n) for t in total)
    std = tuple(math.sqrt(max(n * s - t * t, 0)) / (255 * n) for t, s in zip(total, total_sq))
    return mean, std


def _check_normalize(normalize) -> None:
    if normalize not in NORMALIZE:
        raise DataError([Problem(f"unknown normalize '{normalize}'"
                                 f"{did_you_mean(normalize, NORMALIZE)}; use one of "
                                 f"{', '.join(NORMALIZE)}", path="normalize")])


def _float_dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out is None or out.kind != "f":
        raise DataError([Problem(f"dtype '{dtype}' is not a floating-point type; use float32 "
                                 "or float64", path="dtype")])
    return out


def normalize_images(images: np.ndarray, normalize: str = "standardize", mean=None, std=None,
                     dtype="float32") -> np.ndarray:
    """uint8 images (N, H, W) or (N, C, H, W), pixels 0..255 -> float (N, C, H, W) in `dtype`.

    "standardize" needs the training split's `mean` and `std` (units of pixels/255; a float, or
    one per channel, see `prepare`); "scale" maps to [0, 1]; "none" keeps 0..255.
    """
    _check_normalize(normalize)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"images must be (N, H, W) or (N, C, H, W), got shape {images.shape}")
    if normalize == "standardize" and (mean is None or std is None):
        raise DataError("normalize 'standardize' needs the training mean and std")
    norm = Normalization.from_record({"normalize": normalize, "mean": mean, "std": std})
    return apply_norm(images, norm, dtype)


def apply_norm(x: np.ndarray, norm: Normalization, dtype="float32", out=None) -> np.ndarray:
    """x (N, C, ...) or (N, D) -> float `dtype` of the same shape: v * a_c - b_c per channel
    (a = 1 / (unit * std), b = mean / std), computed in `dtype`, chunk by chunk into `out`."""
    dtype = _float_dtype(dtype)
    channels = x.shape[1]
    if norm.mode == "standardize":
        bad = [c for c, s in enumerate(norm.std) if not s > 0]
        if bad and x.ndim > 2:
            raise DataError(f"cannot standardize: the training pixels' std is {norm.std[bad[0]]}"
                            f" in channel {bad[0]} (all its pixels are equal); use normalize: "
                            "scale")
        if bad:  # a constant table column: centred, not scaled (as scikit-learn does)
            norm = Normalization(norm.mode, norm.mean, tuple(s if s > 0 else 1.0
                                                             for s in norm.std), norm.unit)
    coef = norm.coefficients(channels, dtype)
    out = np.empty(x.shape, dtype) if out is None else out
    view = (slice(None),) + (None,) * (x.ndim - 2)  # (C,) broadcast along axis 1
    if x.dtype != np.uint8 and coef is not None:  # values: (v - mean) / std in float64
        coef = norm.coefficients(channels, np.float64)
    for lo in range(0, len(x), CHUNK_ROWS):
        part = out[lo:lo + CHUNK_ROWS]
        if x.dtype == np.uint8 or coef is None:
            part[...] = x[lo:lo + CHUNK_ROWS]
            if coef is not None:
                a, b = coef
                if np.any(a != 1):
                    part *= a[view]
                if np.any(b != 0):
                    part -= b[view]
        else:
            a, b = coef
            part[...] = x[lo:lo + CHUNK_ROWS].astype(np.float64) * a[view] - b[view]
    return out


def _validation_count(validation, n: int) -> int:
    """How many of the `n` training samples `validation` asks for.

    A float is a fraction in [0, 1): round(n * fraction) samples; an int is a count. A float
    of 1 or more is an error, not a count: 1.0 is not one sample.
    """
    fix = (f"use a fraction in (0, 1) such as 0.1, or a whole number of samples from 1 to "
           f"{n - 1} (0 = no validation split)")
    if isinstance(validation, bool) or not isinstance(validation, (int, float, np.number)):
        raise DataError([Problem(f"{validation!r} is not a number; {fix}", path="validation")])
    if isinstance(validation, (int, np.integer)):
        k = int(validation)
        if not 0 <= k < n:
            raise DataError([Problem(f"{k} samples is out of range for a training set of {n}; "
                                     f"{fix}", path="validation")])
        return k
    frac = float(validation)
    if frac == 0:
        return 0
    if frac >= 1:
        count = int(frac) if frac.is_integer() else max(1, round(frac))
        raise DataError([Problem(f"got {validation!r}: a float is a fraction of the training "
                                 f"set and must be below 1; pass the int {count} for {count} "
                                 f"sample{'s' * (count != 1)}, or a fraction such as 0.1",
                                 path="validation")])
    if not 0 < frac < 1:
        raise DataError([Problem(f"{validation} is out of range; {fix}", path="validation")])
    k = round(n * frac)
    if not 0 < k < n:
        raise DataError([Problem(f"fraction {frac} of {n} training samples gives {k} "
                                 f"validation samples; {fix}", path="validation")])
    return k


def prepare(ds: Dataset, normalize: str = "standardize", validation: float = 0,
            dtype="float32", in_memory_limit: int | None = None,
            norm: Normalization | None = None) -> Prepared:
    """Float arrays for training: {"train": (x, y), ["val": (x, y),] "test": (x, y)}.

    x is `dtype` (N, C, H, W) for images ((N, 1, H, W) for MNIST) or (N, D) for tables, y int64
    (N,). `validation` (a float fraction in [0, 1), or an int count) moves k training samples
    into "val": the LAST k for datasets that come as arrays (IDX, CIFAR, .npz), deterministically;
    a stratified pick seeded by the dataset's split_seed for datasets stored class by class
    (image folders, CSV tables). `normalize` is "standardize" (per channel or feature, with the
    statistics of the training split after the validation split is taken out), "scale" (uint8
    pixels / 255) or "none". Arrays of a memory-mapped dataset larger than `in_memory_limit`
    bytes are written to memory-mapped files beside it. `norm` (a checkpoint's Normalization)
    is used instead of statistics of this data: a trained network sees what it was trained on.
    """
    _check_normalize(normalize)
    x_train, y_train = ds.train.images, ds.train.labels
    n = len(ds.train)
    k = _validation_count(validation, n)
    if k and ds.ordered:
        kept, held = stratified_split(y_train, k, ds.split_seed)
        parts = {"train": (x_train[kept], y_train[kept]), "val": (x_train[held], y_train[held])}
    else:
        parts = {"train": (x_train[: n - k], y_train[: n - k])}
        if k:
            parts["val"] = (x_train[n - k:], y_train[n - k:])
    parts["test"] = (ds.test.images, ds.test.labels)
    pixels = x_train.dtype == np.uint8
    if normalize == "scale" and not pixels:
        raise DataError([Problem(
            f"normalize 'scale' divides uint8 pixels by 255, but {ds.name} holds "
            f"{x_train.dtype} values; use standardize (per "
            f"{'feature' if ds.is_table else 'channel'}) or none", path="normalize")])
    unit = 255.0 if pixels else 1.0
    if norm is not None:  # a trained network's own statistics (eval, report, predict)
        if norm.mode != normalize or (normalize == "standardize" and len(norm.mean) not in (
                1, parts["train"][0].shape[1] if parts["train"][0].ndim > 1 else 1)):
            raise DataError(f"the stored normalisation ({norm.mode}, {len(norm.mean)} "
                            f"channel(s)) does not fit {ds.name}")
        mean, std = norm.mean, norm.std
    elif normalize == "standardize":
        mean, std = channel_stats(parts["train"][0])
    elif normalize == "scale":
        mean, std = (0.0,), (1.0,)
    else:
        mean = std = ()
    norm = Normalization(normalize, mean, std, unit)
    limit = IN_MEMORY_LIMIT if in_memory_limit is None else in_memory_limit
    dtype = _float_dtype(dtype)
    out = {}
    for key, (x, y) in parts.items():
        shaped = x[:, None] if x.ndim == 3 else x  # MNIST's (N, H, W): one channel
        out[key] = (_normalized(shaped, dtype, key, norm, ds, limit),
                    np.asarray(y, dtype=np.int64))
    rec = norm.record()
    return Prepared(out, normalize, rec["mean"], rec["std"], norm, ds)


def _normalized(x, dtype, key, norm, ds, limit) -> np.ndarray:
    """apply_norm(x), in memory; or, for a memory-mapped dataset larger than `limit` bytes, in
    a memory-mapped file beside it (reused by later runs with the same split and statistics)."""
    base = getattr(ds.train.images, "filename", None)
    if base is None or x.size * dtype.itemsize <= limit:
        return apply_norm(x, norm, dtype)
    tag = hashlib.sha256(repr((key, x.shape, norm, str(dtype), ds.split_seed)).encode()
                         ).hexdigest()[:16]
    path = Path(base).parent / f"{key}-{tag}.npy"
    try:
        done = np.load(path, mmap_mode="r")
        if done.shape == x.shape and done.dtype == dtype:
            return done
    except (OSError, ValueError):
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, "w+", dtype, x.shape)
    apply_norm(x, norm, dtype, out)
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
