"""Image folders as datasets: `root/train/<class>/...` and `root/test/<class>/...`, or
`root/<class>/...` with a seeded, stratified test fraction held out (or `LoadOptions.test`, a
second folder of the same classes).

    ds = load_folder(root, options, progress, check_shape)

Everything is checked before a single step trains: the folders (classes, empty classes, symlink
loops, unreadable entries), then every file's header (format against extension, size, pixel
count), then every file's pixels as they are decoded into the cache (netspec/data/cache.py).
All bad files are raised as one DataError listing each with its reason, or, with
`skip_bad`, left out and listed in `Dataset.skipped`. `check_shape((C, H, W), "images")` is
called once the sample shape is known and before any pixel is decoded.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from netspec.data import cache
from netspec.data.dataset import Dataset, Split, stratified_split
from netspec.data.images import EXTENSIONS, stat_files, walk_images
from netspec.data.options import LoadOptions
from netspec.errors import DataError, Problem

MAX_LISTED = 50  # bad files named in one error (the rest are counted)


def is_image_folder(path: Path) -> bool:
    """Whether `path` is a directory with at least one non-hidden subfolder (a class, or
    train/)."""
    try:
        return path.is_dir() and any(e.is_dir() and not e.name.startswith(".")
                                     for e in path.iterdir())
    except OSError:
        return False


def scan(root: Path, options: LoadOptions) -> dict:
    """The folders of a dataset, without opening a file: {"splits": {"train": files, "test":
    files}, "classes": names, "held_out": {...} | None, "problems": [(path, reason)],
    "notes": [...]}. Raises DataError for what no setting can skip (no classes, an empty
    class, a test class that training lacks)."""
    problems, notes = [], []
    has_split = all(_visible_dir(root / s) for s in ("train", "test"))
    train_root = root / "train" if has_split else root
    classes = _classes(train_root, options.classes)
    splits = {"train": _files(train_root, classes, problems, notes)}
    test_root = (root / "test") if has_split else (Path(options.test) if options.test else None)
    held_out = None
    if test_root is not None:
        if not _visible_dir(test_root):
            raise DataError([Problem("the test folder (data.test) is not a directory",
                                     file=str(test_root))])
        extra = [c for c in _classes(test_root, None) if c not in classes]
        if extra:
            raise DataError([Problem(
                f"the test split has classes that training lacks: {', '.join(extra)} (training "
                f"has {', '.join(classes)}); add them to {train_root} or remove them here",
                file=str(test_root))])
        present = [c for c in classes if _visible_dir(test_root / c)]
        splits["test"] = _files(test_root, classes, problems, notes, only=present,
                                allow_empty=True)
    else:
        everything = splits["train"]
        labels = np.array([f.label for f in everything], np.int64)
        kept, held = stratified_split(labels, round(options.test_fraction * len(labels)),
                                      options.split_seed)
        splits = {"train": [everything[i] for i in kept], "test": [everything[i] for i in held]}
        held_out = {"fraction": options.test_fraction, "seed": options.split_seed,
                    "count": len(held)}
    return {"splits": splits, "classes": classes, "held_out": held_out,
            "problems": problems, "notes": notes, "root": root}


def _visible_dir(path: Path) -> bool:
    return not path.name.startswith(".") and path.is_dir()


def _classes(folder: Path, fixed) -> list[str]:
    try:
        found = sorted(e.name for e in folder.iterdir() if _visible_dir(e))
    except OSError as e:
        raise DataError([Problem(f"cannot list the folder: {e.strerror or e}",
                                 file=str(folder))]) from None
    if fixed is not None:
        missing = [c for c in fixed if c not in found]
        if missing:
            raise DataError([Problem(
                f"data.classes names {', '.join(map(repr, missing))}, but there is no such "
                f"folder here (the class folders are {', '.join(found) or 'none'})",
                file=str(folder))])
        return list(fixed)
    if not found:
        raise DataError([Problem(
            "no class folders: an image dataset is a folder with one subfolder of images per "
            "class (or train/ and test/ folders, each with one subfolder per class)",
            file=str(folder))])
    return found


def _files(folder: Path, classes, problems, notes, only=None, allow_empty=False) -> list:
    """The image files of each class folder, label by label."""
    out, empty, others = [], [], 0
    for label, name in enumerate(classes):
        if only is not None and name not in only:
            continue
        paths, more = walk_images(folder / name, problems)
        others += more
        if not paths and not allow_empty:
            empty.append(name)
        out += stat_files(paths, label, problems)
    if empty:
        raise DataError([Problem(
            f"class folder{'s' * (len(empty) > 1)} {', '.join(map(repr, empty))} "
            f"hold{'s' * (len(empty) == 1)} no images (files ending in "
            f"{' '.join(sorted(EXTENSIONS))}); add images, or remove the folder (or list the "
            "classes to use in data.classes)", file=str(folder))])
    if others:
        notes.append(f"{others} file{'s' * (others > 1)} in {folder} "
                     f"{'are' if others > 1 else 'is'} not an image by extension and "
                     f"{'were' if others > 1 else 'was'} left out")
    return out


def load_folder(root: Path, options: LoadOptions, progress=None, check_shape=None) -> Dataset:
    found = scan(root, options)
    ordered = found["splits"]["train"] + found["splits"]["test"]
    n_train = len(found["splits"]["train"])
    settings = options.image_settings()
    key = cache.cache_key(ordered, settings, options.input_shape[1:])
    bad: dict[int, str] = {}  # file index -> reason
    problems = list(found["problems"])
    entry = cache.cached(key)
    if entry is None:
        workers = cache.workers_for(options.workers, len(ordered))
        heads = cache.read_headers(ordered, options.max_pixels, workers, progress, root.name)
        shape = _shape(heads, options, bad)
        if check_shape is not None:
            check_shape(shape, "images")
        pending, failed = cache.decode_into_cache(key, ordered, settings, shape, set(bad),
                                                  workers, progress, root.name)
        bad.update(dict(failed))
        listed = problems + [(str(ordered[i].path), r) for i, r in sorted(bad.items())]
        if listed and not options.skip_bad:
            pending.discard()
            raise _bad_files(root, listed)
        entry = pending.store(key, listed)
    else:  # the files that were bad when it was stored, and any the folders show now
        said = {path for path, _ in entry.bad}
        listed = list(entry.bad) + [(p, r) for p, r in problems if p not in said]
        if listed and not options.skip_bad:
            raise _bad_files(root, listed)
        if check_shape is not None:
            check_shape(tuple(entry.pixels.shape[1:]), "images")
    labels = np.array([f.label for f in ordered], np.int64)[entry.kept]
    files = tuple(str(ordered[i].path) for i in entry.kept)
    k = int(np.searchsorted(entry.kept, n_train))  # rows below k are training files
    held_out = found["held_out"]
    return Dataset(
        name=str(root), path=root, kind="images",
        train=Split(entry.pixels[:k], labels[:k], files[:k]),
        test=Split(entry.pixels[k:], labels[k:], files[k:]),
        num_classes=len(found["classes"]), class_names=tuple(found["classes"]),
        held_out=held_out, ordered=True, split_seed=options.split_seed,
        image={**settings, "shape": list(entry.pixels.shape[1:])},
        skipped=tuple(tuple(b) for b in listed), notes=tuple(found["notes"]))


def _shape(heads: list, options: LoadOptions, bad: dict) -> tuple[int, int, int]:
    """(C, H, W) of the decoded images; files that cannot be used go to `bad`."""
    for i, (w, h, reason) in enumerate(heads):
        if w is None:
            bad[i] = reason
    good = [(i, w, h, gray) for i, (w, h, gray) in enumerate(heads) if w is not None]
    if options.color == "auto":
        channels = 1 if all(gray for *_, gray in good) else 3
    else:
        channels = 1 if options.color == "grayscale" else 3
    if options.resize != "none":
        _, height, width = _target(options.input_shape)
        return channels, height, width
    sizes = Counter((h, w) for _, w, h, _ in good)
    if not sizes:
        return channels, *_target(options.input_shape)[1:]
    # the size most images have (input.shape's on a tie): the others are the bad files, and
    # a spec that asks for another size gets a located error from check_shape
    wanted = tuple(_target(options.input_shape)[1:])
    top = sizes.most_common(1)[0][1]
    height, width = wanted if sizes.get(wanted) == top else sizes.most_common(1)[0][0]
    for i, w, h, _ in good:
        if (h, w) != (height, width):
            bad[i] = (f"{w}x{h} pixels, but the images are {width}x{height}: set "
                      "data.image.resize (e.g. bilinear) to resize every image to "
                      "input.shape, or fix the file")
    return channels, height, width


def _target(input_shape) -> tuple:
    return tuple(input_shape) if len(input_shape) == 3 else (0, 0, 0)


def _bad_files(root: Path, listed: list) -> DataError:
    shown = [Problem(reason, file=path) for path, reason in listed[:MAX_LISTED]]
    more = len(listed) - len(shown)
    return DataError([Problem(
        f"{len(listed)} bad image file{'s' * (len(listed) > 1)} in {root}; nothing was "
        "trained. Fix or remove them, or set data.bad_files: skip to leave them out (they are "
        "then listed in the run directory's skipped-files.txt)"), *shown,
        *([Problem(f"... and {more} more")] if more else [])])
