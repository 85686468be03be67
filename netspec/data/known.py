"""The datasets netspec knows by name: MNIST and Fashion-MNIST (four IDX files each), CIFAR-10
and CIFAR-100 (one binary archive each): files, checksums, mirrors, shapes, classes.

These tables are the one source of these facts; the spec's checks (input shape, classes) read
them too, through `NAMES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The four files of a dataset, by base name, in this order: train images, train labels,
# test images, test labels. On disk each may be NAME.gz or NAME.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILES

ENV_VAR = "NETSPEC_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What netspec knows about a downloadable dataset. Tests may construct their own."""

    name: str
    # base file name -> SHA-256 (hex) of its DECOMPRESSED content; a missing entry or None
    # means that file is only checked for being well-formed IDX
    sha256: Mapping[str, str | None]
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order; file URL = mirror + NAME.gz
    num_classes: int = 10
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (channels, height, width) of one sample
    system_dirs: tuple[str, ...] = ()  # directories an OS package installs the files into
    files: tuple[str, ...] = FILES
    # Caps on one file, downloaded (compressed) and decompressed: MNIST's largest file is
    # 9.9 MB gzipped and 47 MB decompressed. A mirror serving more is refused mid-stream.
    max_download_bytes: int = 64 << 20
    max_content_bytes: int = 256 << 20


KNOWN: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        # LeCun, Cortes, Burges; CC BY-SA 3.0. Hashes of the decompressed files, so a mirror
        # that recompressed the gzip still verifies.
        sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        # Zalando Research; MIT. Hashes of the decompressed files of Debian's
        # dataset-fashion-mnist 0.0~git20200523.55506a9-1 (whose gzips are recompressed,
        # the content is upstream's).
        sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian: dataset-fashion-mnist
    ),
}


@dataclass(frozen=True)
class ArchiveInfo:
    """A dataset shipped as one .tar.gz archive of CIFAR-format binary files (never pickles).

    Each record is `label_bytes` label bytes (CIFAR-100: coarse, then fine) and then the
    image's 3 x 32 x 32 pixels: 1,024 R, 1,024 G and 1,024 B bytes, each plane row-major.
    """

    name: str
    archive: str  # the archive's file name
    size: int  # its size in bytes and its SHA-256, as published (tensorflow-datasets pins them)
    sha256: str
    urls: tuple[str, ...]
    folder: str  # the folder inside the archive that holds the files below
    train: tuple[str, ...]  # files of the training split, in order
    test: tuple[str, ...]
    records: dict[str, int]  # file -> the number of records it holds
    label_bytes: int
    names: str  # the file of class names, one a line (fine names for CIFAR-100)
    num_classes: int
    coarse_names: str | None = None
    coarse_classes: int | None = None
    image_shape: tuple[int, int, int] = (3, 32, 32)

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + 3 * 32 * 32

    @property
    def files(self) -> tuple[str, ...]:
        return self.train + self.test


ARCHIVES: dict[str, ArchiveInfo] = {
    "cifar10": ArchiveInfo(
        name="cifar10", archive="cifar-10-binary.tar.gz", size=170_052_171,
        sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
        folder="cifar-10-batches-bin",
        train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test=("test_batch.bin",),
        records={**{f"data_batch_{i}.bin": 10_000 for i in range(1, 6)},
                 "test_batch.bin": 10_000},
        label_bytes=1, names="batches.meta.txt", num_classes=10),
    "cifar100": ArchiveInfo(
        name="cifar100", archive="cifar-100-binary.tar.gz", size=168_513_733,
        sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
        folder="cifar-100-binary", train=("train.bin",), test=("test.bin",),
        records={"train.bin": 50_000, "test.bin": 10_000},
        label_bytes=2, names="fine_label_names.txt", num_classes=100,
        coarse_names="coarse_label_names.txt", coarse_classes=20),
}

# every dataset known by name, IDX or archive
NAMES: dict[str, DatasetInfo | ArchiveInfo] = {**KNOWN, **ARCHIVES}


def dataset_info(dataset) -> DatasetInfo | None:
    """The DatasetInfo of a known name (or the DatasetInfo itself); None for a path dataset."""
    if isinstance(dataset, DatasetInfo):
        return dataset
    return KNOWN.get(str(dataset))

