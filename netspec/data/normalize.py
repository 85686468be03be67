"""Preparing arrays for training: validation split and normalisation of uint8 images.

Inputs to a trained network must be normalised as its training set was: `prepare` returns the
training split's `mean` and `std`, and `normalize_images` applies them to new images.
"""

from __future__ import annotations

import math

import numpy as np

from netspec.data.load import Dataset
from netspec.errors import DataError, Problem, did_you_mean

NORMALIZE = ("standardize", "scale", "none")


class Prepared(dict):
    """{"train": (x, y), ["val": (x, y),] "test": (x, y)} plus how x was normalised.

    x is float (N, 1, H, W), y int64 (N,). `normalize` is the mode; for "standardize"
    x = (pixels/255 - mean) / std with the float `mean` and `std` of the training split; for
    "scale" mean = 0.0 and std = 1.0; for "none" both are None (x = raw pixels). Pass them to
    `normalize_images` to treat new images the same way.
    """

    def __init__(self, splits, normalize: str, mean: float | None, std: float | None):
        super().__init__(splits)
        self.normalize = normalize
        self.mean = mean
        self.std = std


def stats(images: np.ndarray) -> tuple[float, float]:
    """(mean, std) over all pixels of `images` / 255, computed in float64 (exactly for uint8)."""
    images = np.asarray(images)
    n = images.size
    if n == 0:
        raise DataError("cannot compute the mean and std of an empty set of images")
    if images.dtype != np.uint8:
        x = images.astype(np.float64) / 255.0
        return float(x.mean()), float(x.std())
    # exact integer sums of pixels and squared pixels (Python ints, no rounding)
    total = int(images.sum(dtype=np.uint64))
    total_sq = int(np.square(images, dtype=np.uint16).sum(dtype=np.uint64))
    mean = total / (255 * n)
    std = math.sqrt(n * total_sq - total * total) / (255 * n)
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


def normalize_images(images: np.ndarray, normalize: str = "standardize",
                     mean: float | None = None, std: float | None = None,
                     dtype="float32") -> np.ndarray:
    """Images (N, H, W) or (N, 1, H, W), pixels 0..255 -> float (N, 1, H, W) in `dtype`.

    "standardize" needs `mean` and `std` (in units of pixels/255, see `stats`); "scale" maps
    to [0, 1]; "none" keeps 0..255.
    """
    dtype = _float_dtype(dtype)
    _check_normalize(normalize)
    if normalize == "standardize":
        if mean is None or std is None:
            raise DataError("normalize 'standardize' needs the training mean and std")
        if not std > 0:
            raise DataError(f"cannot standardize: the training pixels' std is {std} (all "
                            "pixels are equal); use normalize: scale")
    else:
        mean, std = 0.0, 1.0
    scale = 1.0 if normalize == "none" else 255.0
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise DataError(f"images must be (N, H, W) or (N, 1, H, W), got shape {images.shape}")
    # x = pixels * a - b with a = 1/(scale*std), b = mean/std, in `dtype`
    x = images.astype(dtype)
    a, b = 1.0 / (scale * std), mean / std
    if a != 1.0:
        x *= dtype.type(a)
    if b != 0.0:
        x -= dtype.type(b)
    return x.reshape(len(x), 1, *x.shape[1:])  # (N, 1, H, W)


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
            dtype="float32") -> Prepared:
    """Float arrays for training: {"train": (x, y), ["val": (x, y),] "test": (x, y)}.

    x is `dtype` (N, 1, H, W), y int64 (N,). `validation` (a float fraction in [0, 1), or an
    int count) moves the LAST k training samples into "val", deterministically
    (no RNG). `normalize` is
    "standardize" ((x/255 - mean)/std, scalar mean and std over all pixels of the training
    split after the validation split is taken out), "scale" (x/255) or "none" (0..255).
    The returned dict also carries `.normalize`, `.mean` and `.std`.
    """
    n = len(ds.train)
    k = _validation_count(validation, n)
    _check_normalize(normalize)
    parts = {"train": (ds.train.images[: n - k], ds.train.labels[: n - k])}
    if k:
        parts["val"] = (ds.train.images[n - k :], ds.train.labels[n - k :])
    parts["test"] = (ds.test.images, ds.test.labels)
    mean = std = None
    if normalize == "standardize":
        mean, std = stats(parts["train"][0])
    elif normalize == "scale":
        mean, std = 0.0, 1.0
    out = {
        key: (normalize_images(x, normalize, mean, std, dtype), np.asarray(y, dtype=np.int64))
        for key, (x, y) in parts.items()
    }
    return Prepared(out, normalize, mean, std)
