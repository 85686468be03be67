"""The spec's data, loaded for training: found (or downloaded), checked against the network
(located spec errors when the spec is what to change), decoded, and normalised.

    splits = load_splits(spec, data_dir)      # Prepared: {"train", ["val",] "test"} + norm
    spec = with_classes(spec, splits.dataset) # data.classes filled in from the data
    record = data_record(splits)              # what a run and a checkpoint remember

Nothing here prints: `progress(name, done, total)` reports downloads and decoding.
"""

from __future__ import annotations

from pathlib import Path

from netspec.data.checks import check_dataset, check_shape
from netspec.data.load import load_dataset
from netspec.data.normalize import Prepared, prepare
from netspec.errors import SpecError


def load_splits(spec, data_dir=None, progress=None, download_missing: bool = True,
                workers: int = 0) -> Prepared:
    """The spec's dataset, checked against the network and prepared (normalised, with its
    validation split). Raises DataError or SpecError."""
    options = spec.data.options(spec.input.shape)
    if workers:
        from dataclasses import replace

        options = replace(options, workers=workers)
    ds = load_dataset(spec.data.dataset, data_dir=data_dir, download_missing=download_missing,
                      progress=progress, options=options,
                      check_shape=lambda shape: check_shape(spec, shape, _kind(spec)))
    check_dataset(spec, ds)
    if ds.is_table and spec.data.augment is not None:
        raise SpecError([spec.source.problem(("data", "augment"), (
            "augmentation moves pixels, and this dataset is a table of features; remove "
            "data.augment"))])
    return prepare(ds, spec.data.normalize, spec.data.validation)


def _kind(spec) -> str:
    path = Path(spec.data.dataset)
    return "images" if not spec.data.known and path.is_dir() else ""


def with_classes(spec, ds):
    """`spec` with data.classes set to the dataset's class names, when the dataset has names
    of its own and the spec gave none (so spec.yaml and checkpoints carry them); else `spec`."""
    if spec.data.classes is not None or not ds.class_names or spec.data.known:
        return spec
    return with_stored_classes(spec, ds.class_names)


def data_record(splits) -> dict:
    """What a run records about its data: the dataset's summary and the normalisation."""
    ds = getattr(splits, "dataset", None)
    out = ds.summary() if ds is not None else {}
    if hasattr(splits, "record"):
        out["normalization"] = splits.record()
    out["splits"] = {k: len(v[1]) for k, v in splits.items()}
    return out


DATA_RECORD = "data.json"
SKIPPED = "skipped-files.txt"


def write_data_record(run_dir: Path, splits) -> None:
    """RUN/data.json (data_record) and, when bad files were left out, RUN/skipped-files.txt."""
    import json

    from netspec.fsio import atomic_write

    atomic_write(Path(run_dir) / DATA_RECORD, json.dumps(data_record(splits), indent=1) + "\n")
    ds = getattr(splits, "dataset", None)
    if ds is not None and ds.skipped:
        atomic_write(Path(run_dir) / SKIPPED, "".join(f"{f}\t{why}\n" for f, why in ds.skipped))


def recorded_data_dir(run_dir: Path) -> Path | None:
    """Where a run found its data (data.json), for a known dataset found on disk; else None
    (a path dataset is in the run's spec.yaml, absolute)."""
    import json

    try:
        record = json.loads((Path(run_dir) / DATA_RECORD).read_text())
        path = record.get("path") if isinstance(record, dict) else None
        kind = record.get("kind")
    except (OSError, ValueError):
        return None
    if not isinstance(path, str) or kind not in ("idx", "cifar"):
        return None
    path = Path(path)
    return path.parent if path.is_file() else path


def stored_spec(ckpt, source) -> dict:
    """A checkpoint's spec, resolved by today's schema (keys added since it was written take
    their defaults), as a dict; the stored dict itself when it no longer validates."""
    import yaml

    from netspec.spec.model import loads

    if not ckpt.spec_data:
        return {}
    try:
        return loads(yaml.safe_dump(ckpt.spec_data), f"{source}:spec").model_dump(mode="json")
    except SpecError:
        return dict(ckpt.spec_data)


def with_stored_classes(spec, classes: list):
    """`spec` with data.classes set (a checkpoint's classes, for a spec that names none)."""
    data = spec.data.model_copy(update={"classes": list(classes)})
    return spec.model_copy(update={"data": data})
