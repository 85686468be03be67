"""Does the data fit the spec? Checks run before training, each an error saying how to fix it
(a SpecError located in the spec where the spec is what to change).

    check_shape(spec, sample)    # a sample's shape vs input.shape
    check_dataset(spec, ds)      # the same, and the class count vs the last layer
    check_labels(spec, splits)   # every label is a class the network outputs (0..K-1)
    check_batches(spec, batch, n)  # every training batch is usable (batchnorm: > 1 value)
"""

from __future__ import annotations

import math

import numpy as np

from netspec.errors import DataError, SpecError


def check_shape(spec, sample: tuple, ds_kind: str = "", what: str = "") -> None:
    """SpecError at input.shape unless samples of shape `sample` fit the network: the same
    (C, H, W), or as many values for a flat input ([784] for 1x28x28)."""
    shape = tuple(spec.input.shape)
    sample = tuple(sample)
    if math.prod(sample) == math.prod(shape) and (len(shape) == 1 or shape == sample):
        return
    name = what or spec.data.dataset
    if len(sample) == 1:
        fix = f"set input.shape to [{sample[0]}] (one value per feature column)"
        said = f"{name} has {sample[0]} feature columns"
    else:
        c, h, w = sample
        said = (f"{name} gives samples of {c}x{h}x{w} (C x H x W"
                + (f": {'grayscale' if c == 1 else 'RGB'}, {w}x{h} pixels" if ds_kind == "images"
                   else "") + ")")
        fix = f"set input.shape to {list(sample)}"
        if ds_kind == "images" and len(shape) == 3:
            parts = []
            if shape[0] != c:
                parts.append(f"data.image.color: {'grayscale' if shape[0] == 1 else 'rgb'}")
            if shape[1:] != sample[1:]:
                parts.append("data.image.resize: bilinear (or another interpolation)")
            if parts:
                fix += f", or set {' and '.join(parts)} to make them {list(shape)}"
        elif len(shape) == 1:
            fix += f" (or [{math.prod(sample)}] for a flat input)"
    raise SpecError([spec.source.problem(("input", "shape"), (
        f"{said}, but input.shape is {list(shape)}; {fix}"))])


def check_dataset(spec, ds) -> None:
    """SpecError unless the dataset's samples and classes fit the spec's input and output."""
    check_shape(spec, ds.input_shape, ds.kind, ds.name)
    out = spec.infos[-1].out_shape
    if spec.data.class_count is None and out != (ds.num_classes,):
        last = len(spec.layers) - 1
        named = (f" ({', '.join(ds.class_names[:5])}{', ...' if ds.num_classes > 5 else ''})"
                 if ds.class_names else "")
        key = ("layers", last, "out_features") if hasattr(spec.layers[last],
                                                           "out_features") else ("layers", last)
        raise SpecError([spec.source.problem(key, (
            f"{ds.name} has {ds.num_classes} classes{named} but the network ends with shape "
            f"{tuple(out)}; set out_features: {ds.num_classes} on the last layer"))])


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
