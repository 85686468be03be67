"""Does the data fit the spec? Checks run before training, each a DataError saying how to fix it.

    check_dataset(spec, ds)      # sample shape vs input.shape, class count vs the last layer
    check_labels(spec, splits)   # every label is a class the network outputs (0..K-1)
    check_batches(spec, batch, n)  # every training batch is usable (batchnorm: > 1 value)
"""

from __future__ import annotations

import math

import numpy as np

from netspec.errors import DataError


def check_dataset(spec, ds) -> None:
    """DataError unless the dataset's samples and classes fit the spec's input and output."""
    sample, shape = ds.input_shape, tuple(spec.input.shape)
    if math.prod(sample) != math.prod(shape) or (len(shape) == 3 and shape != sample):
        raise DataError(f"{ds.name} samples have shape {list(sample)} but input.shape is "
                        f"{list(shape)}; set input.shape to {list(sample)}")
    classes = spec.infos[-1].out_shape
    if spec.data.classes is None and classes != (ds.num_classes,):
        raise DataError(f"{ds.name} has {ds.num_classes} classes but the network ends with "
                        f"shape {tuple(classes)}; set out_features: {ds.num_classes} on the "
                        "last layer (or data.num_classes)")


def check_labels(spec, splits: dict) -> None:
    """DataError unless every label of every split is a class the network outputs (0..K-1)."""
    last = spec.infos[-1]
    k = math.prod(last.out_shape)
    for split, (_, y) in splits.items():
        bad = np.unique(y[(y < 0) | (y >= k)])
        if bad.size == 0:
            continue
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        count = int(np.count_nonzero((y < 0) | (y >= k)))
        need = int(max(bad.max() + 1, k))
        given = (f"data.num_classes is {spec.data.num_classes} and " if spec.data.num_classes
                 else "")
        raise DataError(
            f"{spec.data.dataset}: the {split} split has labels {shown} ({count:,} samples), but "
            f"{given}the network ends with {k} outputs (its last layer, {last.type} "
            f"'{last.name}'), for classes 0..{k - 1}; "
            + (f"set data.num_classes and the last layer's width to {need}" if bad.min() >= 0
               else "negative labels are never valid: fix the dataset's labels"))


def check_batches(spec, batch: int, n: int) -> None:
    """DataError unless every training batch (`batch` of `n` samples) is usable: the batch size
    is at most the training set, and each batchnorm sees more than one value per channel in
    every batch (the last one included), as PyTorch requires."""
    if batch > n:
        raise DataError(f"train.batch_size {batch:,} is larger than the training set "
                        f"({n:,} samples), so each epoch would be a single step of {n:,}; "
                        f"set train.batch_size to at most {n:,}")
    smallest = min(batch, n % batch or batch)  # the last batch may be smaller
    for info in spec.infos:
        if not info.layer.couples_batch:
            continue
        positions = math.prod(info.in_shape[1:]) if len(info.in_shape) == 3 else 1
        if smallest * positions <= 1:
            which = ("each batch holds" if smallest == batch else
                     f"the last training batch would hold {smallest} of {n:,} samples, so it "
                     "holds")
            raise DataError(
                f"{which} a single value per channel at {info.type} '{info.name}' "
                f"(input {tuple(info.in_shape)}), and batchnorm "
                "needs more than one to normalise; change train.batch_size "
                f"(e.g. to {batch + 1})")
