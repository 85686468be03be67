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
                workers: int = 0, norm=None) -> Prepared:
    """The spec's dataset, checked against the network and prepared (normalised, with its
    validation split). `norm`: a trained network's normalisation (stored_norm) to use instead
    of the training split's statistics. Raises DataError or SpecError."""
    options = spec.data.options(spec.input.shape)
    if workers:
        from dataclasses import replace

        options = replace(options, workers=workers)
    ds = load_dataset(spec.data.dataset, data_dir=data_dir, download_missing=download_missing,
                      progress=progress, options=options,
                      check_shape=lambda shape, kind: check_shape(spec, shape, kind))
    check_dataset(spec, ds)
    _check_augment(spec, ds)
    return prepare(ds, spec.data.normalize, spec.data.validation, norm=norm)


def stored_norm(meta: dict, spec):
    """The Normalization a checkpoint's meta records for `spec`'s normalize mode, or None
    (an older checkpoint, or a spec that normalises otherwise)."""
    from netspec.data.normalize import Normalization

    record = (meta.get("data") or {}).get("normalization") or meta.get("normalize")
    if not record or record.get("normalize") != spec.data.normalize or (
            spec.data.normalize == "standardize" and record.get("mean") is None):
        return None
    return Normalization.from_record(record)


def _check_augment(spec, ds) -> None:
    """SpecError at data.augment when it cannot apply to this data."""
    a = spec.data.augment
    if a is None:
        return
    if ds.is_table:
        raise SpecError([spec.source.problem(("data", "augment"), (
            "augmentation moves pixels, and this dataset is a table of features; remove "
            "data.augment"))])
    channels = ds.input_shape[0]
    for name in ("crop", "translate", "rotate"):
        op = getattr(a, name)
        if op is not None and isinstance(op.fill, tuple) and channels != 3:
            raise SpecError([spec.source.problem(("data", "augment", name, "fill"), (
                f"[R, G, B] fills an RGB image, and these images have {channels} channel"
                f"{'s' * (channels != 1)}; give one gray level (0..255)"))])


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


def with_stored_classes(spec, classes: list):
    """`spec` with data.classes set (a checkpoint's classes, for a spec that names none)."""
    data = spec.data.model_copy(update={"classes": list(classes)})
    return spec.model_copy(update={"data": data})


def describe_data(spec) -> tuple[list[str], list]:
    """(lines, warnings): what `netspec validate` says about the spec's data, read without
    decoding or training (where it is, its kind, classes with a table's label mapping, how the
    test split is made), and a located Problem for each data path that does not exist (training
    needs it; a spec may be checked before its data is there). Data that is there but cannot
    be read is a DataError."""
    from netspec.data.known import NAMES
    from netspec.data.locate import find_data_dir

    d = spec.data
    if d.known:
        info = NAMES[d.dataset]
        where = find_data_dir(d.dataset) if d.dataset in ("mnist", "fashion-mnist") else None
        return [f"{d.dataset}: a known dataset, {'x'.join(map(str, info.image_shape))}, "
                f"{d.class_count} classes; "
                + (f"found in {where}" if where else "found or downloaded when training starts")
                ], []
    missing = [spec.source.problem(("data", key), _missing(getattr(d, key), spec))
               for key in ("dataset", "test")
               if getattr(d, key) is not None and not Path(getattr(d, key)).exists()]
    if missing:
        return [], missing
    path = Path(d.dataset)
    options = d.options(spec.input.shape)
    if path.suffix.lower() in (".csv", ".txt") or (path / "train.csv").is_file():
        return _describe_table(spec, path, options), []
    if path.is_dir() and not _other_dir_kind(path):
        return _describe_folder(path, options), []
    return [f"{path}: read when training starts"], []


def _missing(value: str, spec) -> str:
    import os

    src = spec.source.file
    rel = ""
    if src and not os.path.isabs(src) and os.path.exists(os.path.basename(value)):
        rel = f"; ./{os.path.basename(value)} exists in the working directory"
    return (f"no such file or directory: {value} (a relative path in a spec file is resolved "
            f"against the spec's folder{rel}); training needs it")


def _other_dir_kind(path: Path) -> bool:
    from netspec.data.cifar import layout_of
    from netspec.data.known import FILES
    from netspec.data.locate import missing_files

    return not missing_files(path, FILES) or layout_of(path) is not None


def _describe_folder(path: Path, options) -> list[str]:
    from netspec.data.folder import scan

    found = scan(path, options)
    counts = {}
    for f in found["splits"]["train"] + found["splits"]["test"]:
        counts[f.label] = counts.get(f.label, 0) + 1
    names = found["classes"]
    shown = ", ".join(f"{n} ({counts.get(i, 0)})" for i, n in enumerate(names[:20]))
    more = f", ... ({len(names) - 20} more)" if len(names) > 20 else ""
    split = ("the train/ and test/ folders" if found["held_out"] is None else
             f"{found['held_out']['count']} images held out (test_fraction "
             f"{options.test_fraction:g}, stratified, split_seed {options.split_seed})")
    lines = [f"{path}: an image folder, {len(names)} classes: {shown}{more}",
             (f"train {len(found['splits']['train']):,} images, test "
             f"{len(found['splits']['test']):,}: {split}; color {options.color}, resize "
             f"{options.resize}")]
    lines += found["notes"]
    if found["problems"]:
        lines.append(f"{len(found['problems'])} entries cannot be read (listed when training "
                     "starts)")
    return lines


def _describe_table(spec, path: Path, options) -> list[str]:
    from netspec.data.tables import load_table

    ds = load_table(path, options)
    mapping = ", ".join(f"{n}={i}" for i, n in enumerate(ds.class_names))
    split = ("its test table" if ds.held_out is None else
             f"{ds.held_out['count']} rows held out (test_fraction {options.test_fraction:g}, "
             f"stratified, split_seed {options.split_seed})")
    return [(f"{path}: a table, {len(ds.train) + len(ds.test):,} rows, {len(ds.columns)} "
            f"feature columns ({', '.join(ds.columns)})"),
            f"labels: column '{ds.label_column}', classes {mapping}",
            f"train {len(ds.train):,} rows, test {len(ds.test):,}: {split}"]


def stored_spec_object(ckpt, source):
    """The NetSpec a checkpoint was trained with; CheckpointError when it has none."""
    import yaml

    from netspec.errors import CheckpointError
    from netspec.spec.model import loads

    if not ckpt.spec_data:
        raise CheckpointError(f"{source} holds no spec; it was not written by `netspec train`")
    return loads(yaml.safe_dump(ckpt.spec_data), f"{source}:spec")


def run_norm(run_dir: Path, spec):
    """stored_norm of a run's best (else last) checkpoint, or None."""
    from netspec import checkpoint
    from netspec.errors import CheckpointError

    for name in ("best.npz", "last.npz"):
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            try:
                return stored_norm(checkpoint.load(path).meta, spec)
            except CheckpointError:
                continue
    return None
