"""Datasets: find, download, verify, read and normalise MNIST-format (IDX) image data.

netspec trains on image-classification data stored as four IDX files, the format of MNIST:

    train-images-idx3-ubyte  uint8 (N, H, W)     train-labels-idx1-ubyte  uint8 (N,)
    t10k-images-idx3-ubyte   uint8 (M, H, W)     t10k-labels-idx1-ubyte   uint8 (M,)

each gzipped (`NAME.gz`) or not (`NAME`, also `train-images.idx3-ubyte` style). A dataset is
either a known name (`mnist`, `fashion-mnist`: see `KNOWN`), found on disk or downloaded and
checked against SHA-256 sums of the decompressed content, or a path to a directory holding the
four files (read as they are, no checksum).

Flow: `load_dataset` -> `find_data_dir` (else `download`) -> `read_idx` x4 -> `Dataset`, then
`prepare` turns a `Dataset` into float arrays (N, 1, H, W) for training.

The package, one job per module:

    known.py      the datasets known by name: files, SHA-256 sums, mirrors, shapes, classes
    idx.py        reading and checking IDX files (`read_idx`), streaming verification
    locate.py     where to look on disk (`candidate_dirs`, `find_data_dir`, `cache_dir`)
    download.py   fetching from mirrors (`download`), streamed, hashed and capped
    load.py       `load_dataset` -> `Dataset` (train and test `Split`s)
    normalize.py  `prepare`, `normalize_images`, `stats`: float arrays for training
    checks.py     does the data fit the spec (`check_dataset`, `check_labels`, `check_batches`)

Like all of netspec this package never prints: progress goes to an optional callback, and every
problem is a `DataError` that names the file or directory and says how to fix it.
"""

from netspec.data.download import download
from netspec.data.idx import read_idx
from netspec.data.known import ENV_VAR, FILES, KNOWN, DatasetInfo
from netspec.data.load import Dataset, Split, load_dataset
from netspec.data.locate import cache_dir, candidate_dirs, find_data_dir
from netspec.data.normalize import NORMALIZE, Prepared, normalize_images, prepare, stats

__all__ = [
    "ENV_VAR",
    "FILES",
    "KNOWN",
    "NORMALIZE",
    "Dataset",
    "DatasetInfo",
    "Prepared",
    "Split",
    "cache_dir",
    "candidate_dirs",
    "download",
    "find_data_dir",
    "load_dataset",
    "normalize_images",
    "prepare",
    "read_idx",
    "stats",
]
