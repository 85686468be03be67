"""Checkpoints: one .npz file per snapshot, written atomically, readable without pickle.

Layout of the archive:
    "conv1.weight", "bn1.running_mean", ...   parameters and buffers under PyTorch names, so
                                              {k: torch.from_numpy(v)} loads into torch by name
    "optim/<slot>.<param name>", "optim/steps" optimizer state (momentum, Adam moments)
    "__meta__"                                 JSON: format, epoch, step, metrics so far,
                                              the resolved spec and its SHA-256, netspec version
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec.errors import CheckpointError
from netspec.fsio import atomic_write, make_dirs

META = "__meta__"
OPTIM = "optim/"
# Checkpoint format, in meta["format"] (absent: 1). A resume needs the same format: what the
# training state means changed between formats, and FORMAT_CHANGES says how.
FORMAT = 2
FORMAT_CHANGES = {
    1: "In format 1 dropout masks came from the run's random generator; from format 2 each "
       "sample's mask derives from (seed, step, position in the batch), so a run with dropout "
       "would continue with other masks than it started with (runs without dropout resume "
       "from format 1 unchanged).",
}


@dataclass
class Checkpoint:
    state: dict  # parameters and buffers by name
    optimizer: dict  # optimizer state_dict
    meta: dict = field(default_factory=dict)

    @property
    def spec_data(self) -> dict:
        return self.meta.get("spec", {})


def save(path: str | Path, state: dict, optimizer: dict, meta: dict) -> Path:
    """Write a checkpoint atomically (fsio.atomic_write: a temp file beside it, fsync, rename).

    If writing fails (disk full, no permission) the previous file at `path` is left intact and
    the error is an OutputError naming `path`.
    """
    path = Path(path)
    make_dirs(path.parent)
    arrays = dict(state)
    arrays.update({OPTIM + k: v for k, v in optimizer.items()})
    arrays[META] = np.array(json.dumps({"format": FORMAT, **meta}))
    return atomic_write(path, lambda f: np.savez(f, **arrays), "write the checkpoint")


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint; any damage is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        what = ("is a directory; give the .npz file in it, e.g. checkpoints/last.npz"
                if path.is_dir() else "is not a regular file (a device or pipe)"
                if path.exists() else "does not exist")
        raise CheckpointError(f"no checkpoint at {path}: it {what}")

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt or not a netspec checkpoint ({why}); use "
                               "checkpoints/best.npz, or start a new run")

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
                raise corrupt("it is not a zip archive, as an .npz written by netspec is")
        check_expansion(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(str(arrays.pop(META)))
        if not isinstance(meta, dict):
            raise corrupt("its metadata is not a JSON object")
    except KeyError:
        raise CheckpointError(f"{path} is not a netspec checkpoint (no {META} record)") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied; make the file readable") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        # numpy's own message suggests allow_pickle, which is never the fix here
        raise corrupt("an archive member holds objects" if "pickle" in str(e) else
                      f"{type(e).__name__}: {e}") from None
    optimizer = {k[len(OPTIM):]: v for k, v in arrays.items() if k.startswith(OPTIM)}
    state = {k: v for k, v in arrays.items() if not k.startswith(OPTIM)}
    check_finite(state, str(path))
    return Checkpoint(state, optimizer, meta)


def check_finite(state: dict, source: str) -> None:
    """CheckpointError naming the first parameter or buffer that holds NaN or infinity: such
    weights make every output NaN, so evaluating, exporting or resuming them is no use."""
    for name, value in state.items():
        value = np.asarray(value)
        if value.dtype.kind != "f" or np.isfinite(value).all():
            continue
        bad = ~np.isfinite(value)
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), value.shape))
        what = " and ".join(w for w, n in (("NaN", np.isnan(value).sum()),
                                           ("infinity", np.isinf(value).sum())) if n)
        raise CheckpointError(
            f"{source}: {name} holds {what} ({int(bad.sum())} of {value.size} entries, the "
            f"first at index {first}); weights that are not finite numbers give NaN for every "
            "input. Use an earlier checkpoint (checkpoints/best.npz keeps the best epoch), or "
            "train again")


def check_expansion(path: Path) -> None:
    """Refuse an archive whose members would expand far beyond their stored size (a
    decompression bomb) before anything is decompressed. netspec stores members uncompressed."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.file_size > MAX_EXPANSION * info.compress_size + EXPANSION_SLACK:
                raise CheckpointError(
                    f"{path}: member {info.filename!r} would expand to {info.file_size:,} bytes "
                    f"from {info.compress_size:,} stored (over {MAX_EXPANSION}x): refused as a "
                    "decompression bomb; netspec writes checkpoints uncompressed, so this file "
                    "was not written by netspec")


def check_fits(state: dict, shapes: dict, where: str, optional: tuple = ()) -> None:
    """Raise CheckpointError unless `state` has exactly the names and shapes in `shapes`.

    `optional` names (last dotted part) may be missing from `state`, e.g. torch-only buffers.
    """
    missing = [k for k in shapes if k not in state and k.rsplit(".", 1)[-1] not in optional]
    extra = [k for k in state if k not in shapes]
    wrong = [f"{k}: {tuple(np.shape(state[k]))} there, {tuple(shapes[k])} here"
             for k in shapes if k in state and tuple(np.shape(state[k])) != tuple(shapes[k])]
    not_numbers = [f"{k} ({np.asarray(state[k]).dtype})" for k in shapes
                   if k in state and np.asarray(state[k]).dtype.kind not in "fiu"]
    if missing or extra or wrong or not_numbers:
        parts = [f"{label}: {', '.join(items)}" for label, items in
                 (("missing", missing), ("unexpected", extra), ("shape mismatch", wrong),
                  ("not numbers", not_numbers)) if items]
        raise CheckpointError(f"{where} ({'; '.join(parts)})")


@dataclass
class Initial:
    """What `initial_state` takes from a weights file: names loaded, names left to the
    network's own initialisation, and names of the file that the network has no place for."""

    loaded: list
    fresh: list
    unused: list


def initial_state(state: dict, shapes: dict, source: str) -> Initial:
    """Match a weights file's tensors to a network's parameters and buffers (`shapes`, name ->
    shape) by name and shape, to start training from them (`netspec train --init`).

    A name in both with another shape is a mismatch; every mismatch is listed in one
    CheckpointError, and so is a file of which no name matches at all. Names of the network
    missing from the file start fresh; names of the file missing from the network are unused."""
    mismatched = [f"{k}: {tuple(np.shape(state[k]))} in {source}, {tuple(s)} in the network"
                  for k, s in shapes.items() if k in state
                  and tuple(np.shape(state[k])) != tuple(s)]
    not_numbers = [k for k, s in shapes.items() if k in state
                   and np.asarray(state[k]).dtype.kind not in "fiu"]
    if mismatched or not_numbers:
        parts = mismatched + [f"{k}: not numbers" for k in not_numbers]
        raise CheckpointError(
            f"{source} does not fit the network, {len(parts)} tensor"
            f"{'s' * (len(parts) != 1)} differ: {'; '.join(parts)}. Rename a layer whose "
            "shape changed (its weights then start fresh), or give weights of this network")
    loaded = [k for k in shapes if k in state]
    if not loaded:
        some = ", ".join(list(state)[:3]) or "nothing"
        mine = ", ".join(list(shapes)[:3])
        raise CheckpointError(f"no tensor of {source} matches a name of the network (the file "
                              f"holds {some}, ...; the network has {mine}, ...); give the "
                              "weights of this network, or name its layers as the file does")
    return Initial(loaded, [k for k in shapes if k not in state],
                   [k for k in state if k not in shapes])


# Spec keys that do not change what a trained network computes in evaluation: the run's name,
# the seed and init defaults (the weights come from the checkpoint), training and gradient-check
# settings (augmentation included), and which data it is evaluated on (the input, layers, loss,
# normalisation, classes and image decoding count).
NOT_IN_EVALUATION = ("name", "seed", "defaults", "train", "gradcheck", "data.dataset",
                     "data.validation", "data.test", "data.test_fraction", "data.split_seed",
                     "data.bad_files", "data.augment")


def evaluation_changes(stored: dict, spec: dict) -> list[str]:
    """spec_changes between a checkpoint's stored spec and `spec` (resolved dicts) that change
    evaluation: the input, layers, loss, data.normalize... ([] without a stored spec)."""
    if not stored:
        return []
    return spec_changes(_without(stored, NOT_IN_EVALUATION), _without(spec, NOT_IN_EVALUATION))


def _without(data: dict, dotted: tuple[str, ...]) -> dict:
    """A copy of a spec dict without the dotted keys (a nested dict is copied where cut)."""
    data = dict(data)
    for key in dotted:
        head, _, rest = key.partition(".")
        if rest and isinstance(data.get(head), dict):
            data[head] = _without(data[head], (rest,))
        elif not rest:
            data.pop(head, None)
    return data


def spec_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two resolved spec dicts ('train.lr: 0.1 -> 0.2'), at
    most MAX_CHANGES of them (a whole different network is not listed key by key)."""
    changes = _changes(old, new, "")
    more = len(changes) - MAX_CHANGES
    return changes[:MAX_CHANGES] + ([f"and {more} more changes"] if more > 0 else [])


def _changes(old, new, prefix: str) -> list[str]:
    changes = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                changes.append(f"{where} removed")
            elif key not in old:
                changes.append(f"{where} added")
            else:
                changes += _changes(old[key], new[key], where)
    elif (isinstance(old, list) and isinstance(new, list)
          and (len(old) == len(new) or len(_short(old)) + len(_short(new)) > 80)):
        if len(old) != len(new):  # the count, then the items both have (not two whole lists)
            changes.append(f"{prefix}: {len(old)} items -> {len(new)} items")
        for i, (a, b) in enumerate(zip(old, new)):
            changes += _changes(a, b, f"{prefix}[{i}]")
    elif old != new:
        changes.append(f"{prefix}: {_short(old)} -> {_short(new)}")
    return changes


# A member may expand to MAX_EXPANSION times its stored size plus EXPANSION_SLACK bytes (so
# that small compressed members, and any uncompressed ones, pass).
MAX_EXPANSION = 20
EXPANSION_SLACK = 1 << 20
MAX_CHANGES = 12  # listed in one message; a whole different network is not printed entire


def _short(value, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[:width - 3] + "..."
