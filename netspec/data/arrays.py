"""NumPy .npz archives as datasets, read with allow_pickle=False (an object array is refused).

    np.savez("data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
             class_names=np.array(["cat", "dog"]))       # x_test/y_test, class_names optional

x: uint8 images (N, H, W), (N, C, H, W), or channels-last (N, H, W, C) with C = 1 or 3 (moved
to channels-first); any other real dtype: (N, D) features, or image-shaped values used as
they are (normalised per channel with unit 1). y: integers 0..K-1 ((N,) or (N, 1)), or text
labels, mapped to their sorted values. Without x_test and y_test a seeded, stratified test
fraction is held out.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from netspec.data.dataset import Dataset, Split, stratified_split
from netspec.data.options import LoadOptions
from netspec.errors import DataError, Problem

KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


def load_npz(path: Path, options: LoadOptions) -> Dataset:
    arrays, problems = _read(path)
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing.append("y_test" if "x_test" in arrays else "x_test")
    if missing:
        problems.append(Problem(f"no {', '.join(missing)}: a dataset archive holds x_train and "
                                f"y_train, and optionally x_test and y_test (it holds "
                                f"{', '.join(arrays) or 'nothing readable'})", file=str(path)))
    if problems:
        raise DataError(problems)
    x = {k: _samples(arrays[k], k, path) for k in ("x_train", "x_test") if k in arrays}
    raw_y = {k: _labels(arrays[k], k, path) for k in ("y_train", "y_test") if k in arrays}
    for split in ("train", "test"):
        if f"x_{split}" in x and len(x[f"x_{split}"]) != len(raw_y[f"y_{split}"]):
            problems.append(Problem(f"x_{split} holds {len(x[f'x_{split}'])} samples but "
                                    f"y_{split} {len(raw_y[f'y_{split}'])} labels",
                                    file=str(path)))
    if "x_test" in x and x["x_test"].shape[1:] != x["x_train"].shape[1:]:
        problems.append(Problem(f"x_test samples are {x['x_test'].shape[1:]} but x_train's are "
                                f"{x['x_train'].shape[1:]}", file=str(path)))
    if problems:
        raise DataError(problems)
    names, y = _classes(raw_y, arrays.get("class_names"), options.classes, path)
    held_out = None
    if "x_test" in x:
        train, test = Split(x["x_train"], y["y_train"]), Split(x["x_test"], y["y_test"])
    else:
        kept, held = stratified_split(y["y_train"], round(options.test_fraction * len(
            y["y_train"])), options.split_seed)
        train = Split(x["x_train"][kept], y["y_train"][kept])
        test = Split(x["x_train"][held], y["y_train"][held])
        held_out = {"fraction": options.test_fraction, "seed": options.split_seed,
                    "count": len(held)}
    num_classes = len(names) if names else int(max(y["y_train"].max(), test.labels.max(
        initial=0))) + 1
    return Dataset(name=str(path), train=train, test=test, num_classes=num_classes, path=path,
                   kind="npz", class_names=names, held_out=held_out,
                   split_seed=options.split_seed)


def _read(path: Path) -> tuple[dict, list]:
    arrays, problems = {}, []
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError([Problem(f"not a readable .npz archive ({type(e).__name__}: {e})",
                                 file=str(path))]) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError([Problem("a single .npy array, not an .npz archive of named arrays "
                                 "(np.savez(path, x_train=..., y_train=...))", file=str(path))])
    with archive:
        for key in archive.files:
            if key not in KEYS:
                continue
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                why = ("it holds Python objects (dtype=object), which could only be read by "
                       "unpickling, and netspec never unpickles: save plain numeric (or text) "
                       "arrays, e.g. np.asarray(x, dtype=np.uint8)" if "pickle" in str(e)
                       else str(e))
                problems.append(Problem(f"{key}: {why}", file=str(path)))
            except (OSError, zipfile.BadZipFile, EOFError) as e:
                problems.append(Problem(f"{key}: cannot be read ({e})", file=str(path)))
    return arrays, problems


def _samples(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DataError([Problem(f"{key} has dtype {x.dtype}; samples are numbers (uint8 "
                                 "pixels, or floats)", file=str(path))])
    if x.dtype == np.uint8:
        if x.ndim == 3:
            return x
        if x.ndim == 4 and x.shape[1] in (1, 3):
            return x
        if x.ndim == 4 and x.shape[3] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, H, W, C) -> NCHW
        raise DataError([Problem(
            f"{key} is uint8 with shape {x.shape}: images are (N, H, W), (N, C, H, W) or "
            "(N, H, W, C) with 1 or 3 channels", file=str(path))])
    if x.ndim not in (2, 4):
        raise DataError([Problem(f"{key} is {x.dtype} with shape {x.shape}: features are "
                                 "(N, D), image values (N, C, H, W)", file=str(path))])
    values = x if x.dtype.kind == "f" else x.astype(np.float64)
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise DataError([Problem(f"{key}{list(bad)} is {values[tuple(bad)]}: every value must "
                                 "be a finite number", file=str(path))])
    return values


def _labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError([Problem(f"{key} has shape {y.shape}; labels are (N,), one class per "
                                 "sample (not one-hot)", file=str(path))])
    if y.dtype.kind in "US":
        return y.astype(str)
    if y.dtype.kind not in "ui" or y.dtype == np.bool_:
        if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError([Problem(f"{key} has dtype {y.dtype}; labels are whole numbers "
                                     "0..K-1, or text", file=str(path))])
    if len(y) and y.min() < 0:
        raise DataError([Problem(f"{key} holds the label {int(y.min())}; labels are 0..K-1",
                                 file=str(path))])
    return y.astype(np.int64)


def _classes(raw: dict, stored, fixed, path: Path):
    """(class names or None, {"y_train": int64, "y_test": int64})."""
    texts = [v.dtype.kind == "U" for v in raw.values()]
    if any(texts) and not all(texts):
        raise DataError([Problem("y_train and y_test mix numbers and text labels",
                                 file=str(path))])
    if stored is not None and (stored.ndim != 1 or stored.dtype.kind not in "US"):
        raise DataError([Problem("class_names must be a 1-D array of text", file=str(path))])
    names = tuple(fixed) if fixed is not None else (
        tuple(str(s) for s in stored) if stored is not None else None)
    if texts and texts[0]:
        names = names or tuple(sorted(set(raw["y_train"])))
        index = {n: i for i, n in enumerate(names)}
        out = {}
        for key, y in raw.items():
            unknown = sorted(set(y) - set(index))
            if unknown:
                raise DataError([Problem(f"{key} has labels {', '.join(map(repr, unknown[:10]))}"
                                         f" that are not classes ({', '.join(names)})",
                                         file=str(path))])
            out[key] = np.array([index[v] for v in y], np.int64)
        return names, out
    if names is not None:
        for key, y in raw.items():
            if len(y) and y.max() >= len(names):
                raise DataError([Problem(f"{key} holds the label {int(y.max())} but there are "
                                         f"{len(names)} class names", file=str(path))])
    return names, raw
