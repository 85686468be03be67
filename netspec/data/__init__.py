"""Datasets: find, download, verify, read, decode, cache and normalise training data.

`data.dataset` is a known name or a path, and the kind of a path is told by what it is:

    mnist, fashion-mnist     four IDX files, found on disk or downloaded, SHA-256 checked
    cifar10, cifar100        the binary archive, found or downloaded, size and SHA-256 checked
    DIR of IDX files         train-images-idx3-ubyte(.gz) ... read as they are
    DIR of CIFAR .bin files  data_batch_N.bin + test_batch.bin, or train.bin + test.bin
    DIR of images            DIR/train/<class>/..., DIR/test/<class>/...; or DIR/<class>/...
                             with a seeded, stratified test fraction held out
    FILE.npz                 x_train, y_train[, x_test, y_test][, class_names]; no pickles
    FILE.csv (or DIR with train.csv and test.csv)   numeric features and a label column

Flow: `load_dataset` -> a `Dataset` (train and test `Split`s of uint8 pixels or float32
features, class names, how the test split was made), then `prepare` turns it into float arrays
normalised per channel (or feature) with the training split's statistics.

The package, one job per module:

    known.py      the datasets known by name: files, checksums, mirrors, shapes, classes
    options.py    LoadOptions: the spec's data settings as plain values
    dataset.py    Dataset, Split, stratified_split
    idx.py        reading and checking IDX files (`read_idx`), streaming verification
    locate.py     where to look on disk (`candidate_dirs`, `find_data_dir`, `cache_dir`)
    download.py   fetching IDX files from mirrors (`download`), streamed, hashed and capped
    cifar.py      CIFAR-10/100 binary archives and files, downloaded and checked
    images.py     image files: finding, headers, decoding with Pillow (modes, EXIF, resize)
    cache.py      decoding in parallel into a memory-mapped cache keyed by files and settings
    folder.py     image folders as datasets: classes, splits, every bad file listed at once
    arrays.py     .npz archives
    tables.py     CSV tables
    load.py       `load_dataset`: tells the kind and dispatches; IDX directories
    normalize.py  `prepare`, `apply_norm`, `normalize_images`, `channel_stats`
    checks.py     does the data fit the spec (`check_dataset`, `check_labels`, `check_batches`)
    augment.py    random crops, shifts, flips and rotations of training batches, keyed draws

Like all of netspec this package never prints: progress goes to an optional callback, and every
problem is a `DataError` that names the file or directory and says how to fix it.
"""

from netspec.data.dataset import Dataset, Split
from netspec.data.download import download
from netspec.data.idx import read_idx
from netspec.data.known import ARCHIVES, ENV_VAR, FILES, KNOWN, NAMES, DatasetInfo
from netspec.data.load import load_dataset
from netspec.data.locate import cache_dir, candidate_dirs, find_data_dir
from netspec.data.normalize import (
    NORMALIZE,
    Normalization,
    Prepared,
    apply_norm,
    channel_stats,
    normalize_images,
    prepare,
    stats,
)
from netspec.data.options import LoadOptions

__all__ = [
    "ARCHIVES",
    "ENV_VAR",
    "FILES",
    "KNOWN",
    "NAMES",
    "NORMALIZE",
    "Dataset",
    "DatasetInfo",
    "LoadOptions",
    "Normalization",
    "Prepared",
    "Split",
    "apply_norm",
    "cache_dir",
    "candidate_dirs",
    "channel_stats",
    "download",
    "find_data_dir",
    "load_dataset",
    "normalize_images",
    "prepare",
    "read_idx",
    "stats",
]
