"""The spec's `data:` section: which dataset, how its images or rows become inputs, how a test
split is held out, and how training batches are augmented.

    data:
      dataset: photos/              # a known name (mnist, fashion-mnist, cifar10, cifar100) or
                                    # a path: an IDX or image directory, a .npz or a .csv file
      image: {color: rgb, resize: bilinear}
      augment:
        crop: {padding: 4, mode: reflect}
        horizontal_flip: 0.5

A relative path in a spec file is resolved against the spec's folder; one given with `--set`
against the working directory (`resolve_paths`). The loading itself is netspec/data's job;
`DataSpec.options` hands it the settings as plain values.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from netspec.data.known import NAMES
from netspec.data.options import INTERPOLATIONS, PAD_MODES, LoadOptions


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Level = typing.Annotated[int, Field(ge=0, le=255)]
# a gray level, or one level per channel (R, G, B), in pixel units 0..255
Fill = Level | tuple[Level, Level, Level]
PadMode = typing.Literal[PAD_MODES]  # type: ignore[valid-type]
Interpolation = typing.Literal[("none", *INTERPOLATIONS)]  # type: ignore[valid-type]


class ImageSpec(Strict):
    """How image files become input arrays (image folders; predict uses the same rules)."""

    color: typing.Literal["auto", "grayscale", "rgb"] = Field(
        "auto", description="Channels: grayscale (1) or rgb (3); auto: grayscale when every "
                            "image is, else rgb.")
    resize: Interpolation = Field(
        "none", description="Resize every image to input.shape's height and width with this "
                            "interpolation; none: a size that differs is an error.")
    crop_to_aspect_ratio: bool = Field(
        False, description="Before resizing, crop the centre to input.shape's aspect ratio "
                           "(else the image is stretched).")
    background: Fill = Field(
        255, description="Transparent pixels are composited on this gray level or [R, G, B].")
    max_pixels: PositiveInt = Field(
        89_478_485, description="Larger images are refused as decompression bombs "
                                "(Pillow's limit).")


class CropSpec(Strict):
    """Pad each side, then crop a random window of the input's size (torchvision RandomCrop)."""

    padding: PositiveInt = Field(4, description="Pixels added on each side before cropping.")
    mode: PadMode = Field("constant", description="Padding: constant, edge, reflect or "
                                                  "symmetric (as torchvision's padding_mode).")
    fill: Fill = Field(0, description="The constant padding, in pixels (0..255).")


class TranslateSpec(Strict):
    """Shift each image by a random whole number of pixels in -pixels..pixels on each axis."""

    pixels: PositiveInt = Field(description="Largest shift, in pixels, on each axis.")
    mode: PadMode = Field("constant", description="What fills the uncovered border: constant, "
                                                  "edge, reflect or symmetric.")
    fill: Fill = Field(0, description="The constant fill, in pixels (0..255).")


class RotateSpec(Strict):
    """Rotate each image about its centre by a random angle, bilinear."""

    degrees: typing.Annotated[float, Field(gt=0, le=180)] = Field(
        description="Largest angle, in degrees, either way (counter-clockwise positive).")
    fill: Fill = Field(0, description="Where the rotated image does not reach, in pixels.")


class AugmentSpec(Strict):
    """Random changes to training images, redrawn every epoch; never applied to evaluation.
    Order: rotate, crop, translate, flip."""

    crop: CropSpec | None = None
    translate: TranslateSpec | None = None
    rotate: RotateSpec | None = None
    horizontal_flip: typing.Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="Probability of mirroring an image left to right (0.5 is usual).")


class DataSpec(Strict):
    dataset: str = Field(
        "mnist", description="mnist, fashion-mnist, cifar10, cifar100, or a path: a directory "
                             "of IDX files or of images (one folder per class, or train/ and "
                             "test/), a .npz or a .csv file.")
    test: str | None = Field(
        None, description="A separate test set of the same kind (for a dataset without one).")
    normalize: typing.Literal["standardize", "scale", "none"] = Field(
        "standardize", description="standardize: per-channel (per-feature) train mean/std; "
                                   "scale: pixels 0-1; none: raw values.")
    validation: NonNegativeInt | NonNegativeFloat = Field(
        0.0, description="Hold out part of the training set: a fraction below 1 (0.1), or a "
                         "whole count (5000).")
    num_classes: PositiveInt | None = Field(
        None, description="Classes of a custom dataset (known datasets have theirs).")
    classes: list[str] | None = Field(
        None, description="Class names in label order (image folders: which folders, in "
                          "this order; tables: the label values). Default: sorted.")
    labels: typing.Literal["fine", "coarse"] = Field(
        "fine", description="cifar100: the 100 fine classes or the 20 coarse ones.")
    label_column: str | None = Field(
        None, description="CSV: the label column (default: 'label' if present, else the last).")
    test_fraction: typing.Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2, description="Held out, stratified, as the test split when a dataset has none.")
    split_seed: typing.Annotated[int, Field(ge=0, lt=2**63)] = Field(
        0, description="Seeds the held-out splits (not spec.seed: runs of other seeds keep "
                       "the same test set).")
    image: ImageSpec = ImageSpec()
    bad_files: typing.Literal["error", "skip"] = Field(
        "error", description="Unreadable or invalid images: error lists them all; skip leaves "
                             "them out and lists them in the run directory.")
    augment: AugmentSpec | None = Field(None, description="Augmentation of training batches.")

    @field_validator("validation")
    @classmethod
    def _fraction_or_count(cls, v):
        if isinstance(v, float) and v >= 1:
            count = int(v) if v.is_integer() else max(1, round(v))
            raise ValueError(f"got {v!r}: a number with a point is a fraction of the training "
                             f"set and must be below 1; write {count} (no point) for "
                             f"{count} sample{'s' * (count != 1)}, or a fraction such as 0.1")
        return 0.0 if v == 0 else v  # 0 and 0.0 alike (the spec's hash stays the same)

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v):
        if v is not None:
            if not v:
                raise ValueError("an empty list; leave classes out to take them from the data")
            seen = {c for c in v if v.count(c) > 1}
            if seen:
                raise ValueError(f"{', '.join(map(repr, sorted(seen)))} appear more than once; "
                                 "each class is named once")
            if any(not c for c in v):
                raise ValueError("a class name is empty")
        return v

    @model_validator(mode="after")
    def _counts_agree(self):
        if self.classes is not None and self.num_classes not in (None, len(self.classes)):
            raise ValueError(f"num_classes is {self.num_classes} but classes names "
                             f"{len(self.classes)}; give one of them")
        return self

    @property
    def class_count(self) -> int | None:
        """The number of classes the spec states, or a known dataset has; else None."""
        if self.num_classes:
            return self.num_classes
        if self.classes:
            return len(self.classes)
        info = NAMES.get(self.dataset)
        if info is None:
            return None
        return info.coarse_classes if self.labels == "coarse" and hasattr(
            info, "coarse_classes") else info.num_classes

    @property
    def known(self) -> bool:
        return self.dataset in NAMES

    def options(self, input_shape) -> LoadOptions:
        """The settings netspec/data needs to load this dataset for a network whose input is
        `input_shape` ((C, H, W) or (D,))."""
        img = self.image
        background = img.background if isinstance(img.background, tuple) else (
            img.background,) * 3
        return LoadOptions(
            input_shape=tuple(input_shape), test=self.test, classes=self.classes,
            coarse=self.labels == "coarse", label_column=self.label_column,
            test_fraction=self.test_fraction, split_seed=self.split_seed, color=img.color,
            resize=img.resize, crop_to_aspect_ratio=img.crop_to_aspect_ratio,
            background=tuple(background), max_pixels=img.max_pixels,
            skip_bad=self.bad_files == "skip")


# Keys added to `data:` after runs were first recorded: left out of a spec's digest while they
# hold their defaults, so checkpoints written before them still resume.
ADDED_KEYS = ("test", "classes", "labels", "label_column", "test_fraction", "split_seed",
              "image", "bad_files", "augment")


# Keys whose null means "not given" (no separate test set, classes from the data, the default
# label column, no augmentation or no such operation): the resolved spec leaves them out.
OPTIONAL_KEYS = ("test", "classes", "label_column", "augment")


def written_out(data: dict) -> dict:
    """The dumped `data:` section as NetSpec.resolved writes it: the OPTIONAL_KEYS and
    augmentation operations that are not given are left out rather than written as null."""
    out = {k: v for k, v in data.items() if not (k in OPTIONAL_KEYS and v is None)}
    if isinstance(out.get("augment"), dict):
        out["augment"] = {k: v for k, v in out["augment"].items() if v is not None}
    return out


def digest_view(data: dict) -> dict:
    """The dumped `data:` section without the ADDED_KEYS that hold their defaults."""
    defaults = written_out(DataSpec().model_dump(mode="json"))
    return {k: v for k, v in data.items() if not (k in ADDED_KEYS and v == defaults.get(k))}


def resolve_paths(src, base_dir) -> None:
    """Make data.dataset and data.test absolute in the loaded YAML data, in place.

    A path written in the spec file is relative to the spec's folder (`base_dir`); one given by
    `--set` to the working directory. Known dataset names are left alone, and so is a path in a
    spec read from text (`base_dir` None) unless `--set` gave it.
    """
    data = src.data.get("data") if isinstance(src.data, dict) else None
    if not isinstance(data, dict):
        return
    for key in ("dataset", "test"):
        value = data.get(key)
        if not isinstance(value, str) or not value or (key == "dataset" and value in NAMES):
            continue
        path = Path(os.path.expanduser(value))
        if path.is_absolute():
            data[key] = os.path.normpath(path)
            continue
        if src.origin(("data", key)):
            data[key] = os.path.abspath(path)
        elif base_dir is not None:
            data[key] = os.path.normpath(os.path.join(os.path.abspath(base_dir), path))
