"""What every loader returns: a `Dataset` of two `Split`s, and what it knows about itself (kind,
class names, how the test split was made, which files were left out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("idx", "cifar", "images", "npz", "csv")


@dataclass(frozen=True, eq=False)
class Split:
    """One part of a dataset: samples `images` and their labels.

    images: uint8 (N, H, W) or (N, C, H, W) pixels, or float (N, D) features (tables; the name
    is MNIST's), or float (N, C, H, W) values (.npz). labels: int64 (N,), class numbers
    0..K-1. files: the file of each sample (image folders), else None.
    """

    images: np.ndarray
    labels: np.ndarray
    files: tuple | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images ((1, H, W) when stored (N, H, W)), (D,) for features."""
        shape = self.images.shape[1:]
        return (1, *shape) if len(shape) == 2 else tuple(shape)

    def take(self, index: np.ndarray) -> Split:
        """The samples at `index` (an int array), in that order."""
        files = tuple(self.files[i] for i in index) if self.files is not None else None
        return Split(self.images[index], self.labels[index], files)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: train and test splits, classes, and where they came from.

    kind        idx, cifar, images, npz or csv
    class_names the name of each class, in label order (None: the classes are 0..K-1)
    held_out    {"fraction", "seed", "count"} when the test split was held out of the data
    ordered     samples are stored class by class (image folders, many tables): a validation
                split is then a seeded stratified pick, not the last samples
    columns     the feature columns of a table, in order
    image       the image settings the files were decoded with (see LoadOptions)
    skipped     (file, reason) of each bad file left out (bad_files: skip)
    notes       what the user should be told (printed by the CLI)
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    path: Path | None = field(default=None)  # the directory or file it was read from
    kind: str = "idx"
    class_names: tuple[str, ...] | None = None
    held_out: dict | None = None
    ordered: bool = False
    split_seed: int = 0
    columns: tuple[str, ...] | None = None
    label_column: str | None = None
    image: dict | None = None
    skipped: tuple = ()
    notes: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample as the network gets it: (C, H, W) or (D,)."""
        return self.train.sample_shape

    @property
    def is_table(self) -> bool:
        """Samples are feature vectors (normalised per feature, never augmented)."""
        return self.train.images.ndim == 2

    def summary(self) -> dict:
        """What a run records about its data (data.json, the checkpoint): JSON values only."""
        out = {"dataset": self.name, "kind": self.kind,
               "path": str(self.path) if self.path is not None else None,
               "input_shape": list(self.input_shape), "num_classes": self.num_classes,
               "classes": list(self.class_names) if self.class_names else None,
               "train": len(self.train), "test": len(self.test)}
        if self.held_out:
            out["held_out"] = dict(self.held_out)
        if self.columns is not None:
            out["columns"] = list(self.columns)
            out["label_column"] = self.label_column
        if self.image is not None:
            out["image"] = dict(self.image)
        if self.skipped:
            out["skipped"] = len(self.skipped)
        return out


def stratified_split(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray,
                                                                      np.ndarray]:
    """(kept, held out) sample indices, each ascending, with exactly `count` held out (capped
    so that every class of 2 or more samples keeps one), spread over the classes in proportion
    to their sizes (largest remainders first, ties to the lower class), each class's share
    chosen by one Generator seeded with `seed`."""
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    room = np.maximum(sizes - 1, 0)  # a class keeps at least one sample for training
    count = int(min(count, room.sum()))
    exact = count * sizes / max(len(labels), 1)
    take = np.minimum(np.floor(exact).astype(np.int64), room)
    for c in np.argsort(-(exact - take), kind="stable"):  # largest remainders first
        if take.sum() >= count:
            break
        if take[c] < room[c]:
            take[c] += 1
    while take.sum() < count:  # a capped class left some over: give it to the others in order
        c = int(np.flatnonzero(take < room)[0])
        take[c] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    held = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held, assume_unique=True)
    return kept, held.astype(np.int64)
