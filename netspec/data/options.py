"""The settings a dataset is loaded with, as plain values (the spec's `data:` section makes them,
see netspec/spec/data.py; the Python API may build them directly)."""

from __future__ import annotations

from dataclasses import dataclass

# Pillow's resampling filters, by the name a spec gives them
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# How a shift or crop fills the border it uncovers (torchvision's padding_mode names)
PAD_MODES = ("constant", "edge", "reflect", "symmetric")


@dataclass(frozen=True)
class LoadOptions:
    """How to read a dataset for a network with input `input_shape`.

    input_shape   (C, H, W) or (D,): images are resized to H x W when `resize` names an
                  interpolation; their channels follow `color`
    test          a separate test set (path) for a dataset without its own
    classes       class names in label order; None: sorted folder names or label values
    coarse        cifar100: the 20 coarse labels instead of the 100 fine ones
    label_column  CSV: the label column; None: `label` if present, else the last
    test_fraction, split_seed   the stratified held-out test split of a dataset without one
    color         auto, grayscale or rgb
    resize        none or one of INTERPOLATIONS
    background    (R, G, B) that transparent pixels are composited on
    max_pixels    larger images are refused (decompression bombs)
    skip_bad      leave out bad image files (listed in Dataset.skipped) instead of failing
    workers       processes that decode images (0: one per core)
    """

    input_shape: tuple = ()
    test: str | None = None
    classes: list | None = None
    coarse: bool = False
    label_column: str | None = None
    test_fraction: float = 0.2
    split_seed: int = 0
    color: str = "auto"
    resize: str = "none"
    crop_to_aspect_ratio: bool = False
    background: tuple = (255, 255, 255)
    max_pixels: int = 89_478_485
    skip_bad: bool = False
    workers: int = 0

    def image_settings(self) -> dict:
        """What decides how a file becomes pixels (the decode cache is keyed by it; checkpoints
        store it so that predict decodes new files the same way)."""
        return {"color": self.color, "resize": self.resize,
                "size": list(self.input_shape[1:]) if self.resize != "none" else None,
                "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
                "background": list(self.background), "max_pixels": self.max_pixels}
