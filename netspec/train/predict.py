"""Predicting with a trained network: files, rows or arrays in, class names and probabilities
out, preprocessed exactly as training was, from what the checkpoint stores.

    predictor = Predictor.from_checkpoint("runs/x/checkpoints/best.npz")
    predictor.predict(["cat.png", "photos/"], top_k=3)      # [Prediction, ...]
    predictor.predict(uint8_images)                          # (N, H, W), (N, C, H, W), (N, H, W, C)
    predictor.predict(["measurements.csv"])                  # a table network: one per row

What the checkpoint records (Run.save: meta["normalize"], meta["data"]) decides the input:
the image settings the training files were decoded with (channels, resize, background), the
sample shape, the normalisation, the class names, and for tables the feature columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec import checkpoint
from netspec.data.images import BadFile, decode, is_image_name
from netspec.data.normalize import Normalization, apply_norm
from netspec.data.options import INTERPOLATIONS
from netspec.errors import DataError, Problem


@dataclass
class Prediction:
    """One input's prediction: the class (its name and number) and its probability; `top_k`
    lists (name, number, probability) best first when more than one is asked for."""

    file: str | None  # the file (with ":LINE" for a table row), None for an array
    name: str
    index: int
    probability: float
    top_k: list = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"file": self.file, "class": self.name, "index": self.index,
               "probability": self.probability}
        if self.top_k:
            out["top_k"] = [{"class": n, "index": i, "probability": p} for n, i, p in self.top_k]
        return out


class Predictor:
    """A network with its weights and the preprocessing of its training data."""

    def __init__(self, spec, state: dict, meta: dict, source: str = "state",
                 resize: str | None = None):
        """`resize` overrides the stored image resize (none) for files of another size."""
        from netspec.plan.compiler import compile

        self.spec, self.meta, self.source = spec, meta, source
        self.plan = compile(spec)
        self.plan.load_state_dict(state, source)
        data = meta.get("data") or {}
        self.data = data
        record = data.get("normalization") or meta.get("normalize") or {}
        if spec.data.normalize == "standardize" and record.get("mean") is None:
            raise DataError(f"{source} does not record the training data's mean and std (it "
                            "was not written by `netspec train`); predict needs a trained "
                            "checkpoint")
        self.norm = Normalization.from_record(
            {"normalize": spec.data.normalize, **record} if record else
            {"normalize": spec.data.normalize})
        k = math.prod(spec.infos[-1].out_shape)
        names = spec.data.classes or data.get("classes")
        self.classes = [str(c) for c in names] if names and len(names) == k else [
            str(i) for i in range(k)]
        self.sample_shape = tuple(data.get("input_shape") or _known_shape(spec))
        self.table = data.get("kind") == "csv" or (len(self.sample_shape) == 1 and
                                                   bool(data.get("columns")))
        image = dict(data.get("image") or {})
        if not image:  # trained on arrays (IDX, CIFAR, .npz): files must match their shape
            image = {"resize": "none", "crop_to_aspect_ratio": False,
                     "background": [255, 255, 255], "max_pixels": 89_478_485}
        if resize is not None:
            if resize not in INTERPOLATIONS:
                raise DataError(f"unknown resize '{resize}'; use one of "
                                f"{', '.join(INTERPOLATIONS)}")
            image["resize"] = resize
        self.image = image

    @classmethod
    def from_checkpoint(cls, path, resize: str | None = None) -> Predictor:
        from netspec.train.inputs import stored_spec_object

        ckpt = checkpoint.load(path)
        spec = stored_spec_object(ckpt, path)
        return cls(spec, ckpt.state, ckpt.meta, str(path), resize)

    # ---------------------------------------------------------------- inputs

    def files(self, args) -> list[Path]:
        """The files that arguments name: a directory means its image files (or, for a table
        network, its .csv files), by extension, sorted; other files in it are skipped."""
        out, problems = [], []
        for arg in args:
            path = Path(arg)
            if path.is_dir():
                try:
                    names = sorted(p.name for p in path.iterdir() if p.is_file())
                except OSError as e:
                    problems.append(Problem(f"cannot list: {e.strerror or e}", file=str(path)))
                    continue
                keep = [n for n in names if (n.lower().endswith(".csv") if self.table
                                             else is_image_name(n))]
                if not keep:
                    problems.append(Problem(f"holds no {'.csv' if self.table else 'image'} "
                                            "files", file=str(path)))
                out += [path / n for n in keep]
            elif path.is_file():
                out.append(path)
            else:
                problems.append(Problem("no such file or directory", file=str(path)))
        if problems:
            raise DataError(problems)
        return out

    def images(self, paths: list[Path]) -> np.ndarray:
        """uint8 (N, C, H, W) of image files, decoded as the training files were; every bad
        file is listed in one DataError."""
        from netspec.data.images import pixel_limit

        shape = self._image_shape()
        if self.norm.unit != 255.0 and self.norm.mode == "standardize":
            raise DataError("this network was trained on float values (an .npz of floats), not "
                            "on pixels: give it an array of such values, not image files")
        settings = {**self.image, "size": list(shape[1:])}
        out = np.empty((len(paths), *shape), np.uint8)
        bad = []
        with pixel_limit(settings.get("max_pixels", 89_478_485)):
            for i, path in enumerate(paths):
                try:
                    out[i] = decode(path, settings, shape)
                except BadFile as e:
                    reason = str(e)
                    if "data.image.resize" in reason:
                        reason = (reason.split(":")[0] + f", but the network takes "
                                  f"{shape[2]}x{shape[1]} images: pass --resize bilinear "
                                  "(Model.predict(..., resize='bilinear')) to resize them")
                    bad.append(Problem(reason, file=str(path)))
        if bad:
            raise DataError([Problem(f"{len(bad)} of the {len(paths)} files cannot be read; "
                                     "nothing was predicted"), *bad])
        return out

    def _image_shape(self) -> tuple[int, int, int]:
        shape = self.sample_shape
        if len(shape) != 3:
            raise DataError(f"this network takes {shape[0]} feature values, not images: give "
                            "it .csv files with its feature columns")
        return tuple(shape)

    def arrays(self, x) -> np.ndarray:
        """Raw uint8 images as the network's samples: (H, W), (N, H, W), (N, C, H, W) or
        (N, H, W, C) -> (N, C, H, W), without resizing."""
        x = np.asarray(x)
        if self.table:
            if x.ndim == 1:
                x = x[None]
            if x.ndim != 2 or x.shape[1] != self.sample_shape[0]:
                raise DataError(f"a table network takes rows of {self.sample_shape[0]} values, "
                                f"got an array of shape {x.shape}")
            return x.astype(np.float64)
        pixels = self.norm.unit == 255.0 or self.norm.mode == "scale"
        if pixels and x.dtype != np.uint8:
            raise DataError(f"images are uint8 pixels (0..255), got {x.dtype}; "
                            "convert with np.asarray(x, np.uint8)")
        if not pixels and x.dtype.kind not in "fiu":
            raise DataError(f"the network was trained on numeric values, got {x.dtype}")
        c, h, w = self._image_shape()
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3:
            x = x[:, None] if x.shape[1:] == (h, w) else x[None]
        if x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise DataError(f"the network takes {c}x{h}x{w} images (C x H x W), got an array "
                            f"of shape {x.shape}")
        return x

    def rows(self, paths: list[Path]) -> tuple[np.ndarray, list[str]]:
        """The feature rows of CSV files, by the training columns' names, and "FILE:LINE" of
        each; any other column (such as the label) is ignored."""
        from netspec.data.tables import read_features

        columns = self.data.get("columns") or []
        xs, where = [], []
        for path in paths:
            x, lines = read_features(path, columns)
            xs.append(x)
            where += [f"{path}:{line}" for line in lines]
        return np.concatenate(xs), where

    # ---------------------------------------------------------------- predicting

    def probabilities(self, samples: np.ndarray, batch: int = 256) -> np.ndarray:
        """Class probabilities, float64 (N, K), for raw samples (uint8 pixels or values): the
        softmax of the network's scores, or its own output when it ends in a softmax or
        log_softmax (as the loss says)."""
        out = []
        for lo in range(0, len(samples), batch):
            part = apply_norm(samples[lo:lo + batch], self.norm, self.plan.dtype)
            y = self.plan.forward(part.reshape(len(part), -1), train=False)
            out.append(self.spec.loss.probabilities(y.astype(np.float64)))
        k = len(self.classes)
        return np.concatenate(out) if out else np.empty((0, k))

    def predict(self, inputs, top_k: int = 1) -> list[Prediction]:
        """Predictions for file paths and directories (a list), or for an array of raw
        samples. `top_k` > 1 also lists the k most probable classes."""
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        if isinstance(inputs, np.ndarray):
            samples, names = self.arrays(inputs), [None] * len(inputs)
        else:
            paths = self.files(inputs)
            if self.table:
                samples, names = self.rows(paths)
            else:
                samples, names = self.images(paths), [str(p) for p in paths]
        probs = self.probabilities(samples)
        k = max(1, min(int(top_k), probs.shape[1]))
        out = []
        for name, p in zip(names, probs):
            order = np.argsort(-p, kind="stable")[:k]
            best = int(order[0])
            top = [(self.classes[i], int(i), float(p[i])) for i in order] if k > 1 else []
            out.append(Prediction(name, self.classes[best], best, float(p[best]), top))
        return out


def _known_shape(spec) -> tuple:
    from netspec.data.known import NAMES

    info = NAMES.get(spec.data.dataset)
    if info is not None:
        return info.image_shape
    return tuple(spec.input.shape)
