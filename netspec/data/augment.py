"""Augmentation of training batches: random rotation, crop with padding, translation and
horizontal flip, applied in place to normalised rows inside every worker process.

    aug = Augmenter(spec.data.augment, (C, H, W), seed, steps_per_epoch, norm)
    aug(rows, idx, step)     # rows float (B, C*H*W), sample indices idx (B,), training step

Every random number is a function of (seed, epoch, sample index, what it is for): a
counter-based hash (SplitMix64), not a stream. So a sample gets the same crop in a resumed run,
and the same crop whichever worker process handles it (epoch = step // steps_per_epoch, the
step being the trainer's dropout key). Order: rotate, crop, translate, flip.

- crop: pad `padding` pixels on each side and take an H x W window at a random offset (0 to
  2 * padding on each axis), as torchvision's RandomCrop(size, padding, padding_mode);
- translate: shift the content by a random whole number of pixels in -pixels..pixels on each
  axis; the uncovered border is filled by the same padding modes;
- horizontal_flip: mirror left to right with probability p;
- rotate: turn about the centre by a random angle in -degrees..degrees (counter-clockwise
  positive as displayed), bilinear, with `fill` where the turned image does not reach.

Padding modes (torchvision's): constant (the fill), edge (repeat the border pixel), reflect
([1,2,3,4] -> 3 2 | 1 2 3 4 | 3 2), symmetric ([1,2,3,4] -> 2 1 | 1 2 3 4 | 4 3). Fills are
given in pixels (0..255) and converted to the normalised values the rows hold, per channel.
Crops, shifts and flips move pixels without arithmetic, so they commute exactly with the
normalisation; rotation interpolates linearly, which commutes with it up to rounding.
"""

from __future__ import annotations

import numpy as np

M64 = (1 << 64) - 1
SLOTS = {"crop_y": 0, "crop_x": 1, "shift_y": 2, "shift_x": 3, "flip": 4, "angle": 5}


def _mix(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the per-key base)."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def keyed_uniform(seed: int, epoch: int, index: np.ndarray, slot: int) -> np.ndarray:
    """float64 (B,) in [0, 1): one draw per sample index, a function of (seed, epoch, index,
    slot) only."""
    base = _mix(_mix(_mix(seed & M64) ^ (epoch & M64)) ^ slot)
    with np.errstate(over="ignore"):
        z = np.asarray(index, np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(base)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def pad_index(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Source positions for positions `i` (any ints) of an axis of length n: -1 where the
    constant fill goes, else the index the padding mode reads."""
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if n == 1:
        return np.zeros_like(i)
    if mode == "reflect":  # period 2n - 2, the edge pixel not repeated
        j = np.mod(i, 2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    j = np.mod(i, 2 * n)  # symmetric: period 2n, the edge pixel repeated
    return np.where(j < n, j, 2 * n - 1 - j)


class Augmenter:
    """Applies a spec's `data.augment` to batches of rows (see the module docstring)."""

    def __init__(self, augment, shape: tuple, seed: int, steps_per_epoch: int, norm=None):
        """augment: the spec's AugmentSpec (crop, translate, rotate, horizontal_flip). shape:
        (C, H, W) of a sample. norm: the Normalization of the rows (None: raw pixels)."""
        if len(shape) != 3:
            raise ValueError(f"augmentation needs image samples (C, H, W), got {shape}")
        self.augment, self.shape, self.seed = augment, tuple(shape), int(seed)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.norm = norm
        c = shape[0]
        self.fills = {name: self._fill(getattr(augment, name).fill, c)
                      for name in ("crop", "translate", "rotate")
                      if getattr(augment, name, None) is not None}

    def _fill(self, fill, channels: int) -> np.ndarray:
        """A fill in pixels (a level or (R, G, B)) as the rows' values, float64 (C,)."""
        levels = np.asarray(fill if isinstance(fill, (tuple, list)) else [fill] * channels,
                            np.float64)
        if len(levels) != channels:
            raise ValueError(f"a fill of {len(levels)} values for {channels} channel(s)")
        norm = self.norm
        if norm is None or norm.mode == "none":
            return levels
        if norm.mode == "scale":
            return levels / 255.0
        mean = np.broadcast_to(np.asarray(norm.mean, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(norm.std, np.float64), (channels,))
        return (levels / norm.unit - mean) / std

    def __call__(self, rows: np.ndarray, idx: np.ndarray, step: int) -> None:
        """Augment rows (B, C*H*W) of samples idx (B,) in place, for training step `step`."""
        epoch = int(step) // self.steps_per_epoch
        b = len(idx)
        x = rows[:b].reshape(b, *self.shape)  # a view: (B, C, H, W)
        a = self.augment
        if a.rotate is not None:
            angle = (2 * self._draw(epoch, idx, "angle") - 1) * a.rotate.degrees
            x[...] = self.rotate(x, angle, self.fills["rotate"])
        rows_map, cols_map = self._maps(epoch, idx)
        if rows_map is not None:
            x[...] = self.remap(x, rows_map, cols_map)

    def _draw(self, epoch: int, idx: np.ndarray, slot: str) -> np.ndarray:
        return keyed_uniform(self.seed, epoch, idx, SLOTS[slot])

    def _maps(self, epoch: int, idx: np.ndarray):
        """Per-sample source rows (B, H) and columns (B, W) of the crop, shift and flip
        together (-1: fill), or (None, None) when none is asked for."""
        a = self.augment
        _, h, w = self.shape
        if a.crop is None and a.translate is None and not a.horizontal_flip:
            return None, None
        rows = np.broadcast_to(np.arange(h), (len(idx), h)).copy()
        cols = np.broadcast_to(np.arange(w), (len(idx), w)).copy()
        if a.translate is not None:  # out(y) = in(y - t): applied last, so mapped first
            t = a.translate.pixels
            ty = np.floor(self._draw(epoch, idx, "shift_y") * (2 * t + 1)).astype(np.int64) - t
            tx = np.floor(self._draw(epoch, idx, "shift_x") * (2 * t + 1)).astype(np.int64) - t
            rows = pad_index(rows - ty[:, None], h, a.translate.mode)
            cols = pad_index(cols - tx[:, None], w, a.translate.mode)
        if a.crop is not None:  # out(y) = padded(y + d) = in(y + d - padding); fill code -2
            p = a.crop.padding
            dy = np.floor(self._draw(epoch, idx, "crop_y") * (2 * p + 1)).astype(np.int64)
            dx = np.floor(self._draw(epoch, idx, "crop_x") * (2 * p + 1)).astype(np.int64)
            rows = np.where(rows < 0, rows, _crop_code(rows + dy[:, None] - p, h, a.crop.mode))
            cols = np.where(cols < 0, cols, _crop_code(cols + dx[:, None] - p, w, a.crop.mode))
        if a.horizontal_flip:
            flip = self._draw(epoch, idx, "flip") < a.horizontal_flip
            cols[flip] = cols[flip, ::-1]
        return rows, cols

    def remap(self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """out[b, c, y, x] = x[b, c, rows[b, y], cols[b, x]], the fill where either is -1."""
        b, c, h, w = x.shape
        flat = np.ascontiguousarray(x).reshape(-1)
        base = (np.arange(b) * (c * h * w))[:, None, None, None] + \
            (np.arange(c) * (h * w))[None, :, None, None]
        index = base + (np.maximum(rows, 0) * w)[:, None, :, None] + \
            np.maximum(cols, 0)[:, None, None, :]  # (B, C, H, W)
        out = np.take(flat, index)
        # a position uncovered by the shift (-1) takes its fill, else one the crop's padding
        # uncovered (-2) the crop's
        for code, name in ((-2, "crop"), (-1, "translate")):
            hit = (rows == code)[:, :, None] | (cols == code)[:, None, :]  # (B, H, W)
            if hit.any():
                fill = self.fills[name].astype(x.dtype)
                out = np.where(hit[:, None], fill[None, :, None, None], out)
        return out

    def rotate(self, x: np.ndarray, degrees: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """Each sample turned by its angle (degrees, counter-clockwise as displayed) about the
        centre, bilinear; positions whose taps fall outside take `fill` (per channel)."""
        b, c, h, w = x.shape
        theta = np.radians(degrees)[:, None, None]
        cos, sin = np.cos(theta), np.sin(theta)
        yy, xx = np.meshgrid(np.arange(h, dtype=np.float64) - (h - 1) / 2,
                             np.arange(w, dtype=np.float64) - (w - 1) / 2, indexing="ij")
        # the source of output (y, x): the inverse turn, in (x right, y down) coordinates
        sx = cos * xx - sin * yy + (w - 1) / 2  # (B, H, W)
        sy = sin * xx + cos * yy + (h - 1) / 2
        x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
        fx, fy = sx - x0, sy - y0
        padded = np.empty((b, c, h + 2, w + 2), np.float64)  # a 1-pixel frame of fill
        padded[...] = fill[None, :, None, None]
        padded[:, :, 1:-1, 1:-1] = x
        flat = padded.reshape(-1)
        base = (np.arange(b) * (c * (h + 2) * (w + 2)))[:, None, None, None] + \
            (np.arange(c) * ((h + 2) * (w + 2)))[None, :, None, None]
        out = np.zeros((b, c, h, w), np.float64)
        for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                               (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            ty = np.clip(y0 + dy + 1, 0, h + 1)  # +1: the frame; beyond it is fill as well
            tx = np.clip(x0 + dx + 1, 0, w + 1)
            out += weight[:, None] * np.take(flat, base + (ty * (w + 2) + tx)[:, None])
        return out.astype(x.dtype)


def _crop_code(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    """pad_index for the crop, its constant fill coded -2 (the shift's is -1)."""
    j = pad_index(i, n, mode)
    return np.where(j < 0, -2, j)


def describe(augment) -> str:
    """One line for `netspec train`: what augmentation runs."""
    parts = []
    if augment.rotate is not None:
        parts.append(f"rotate ±{augment.rotate.degrees:g}°")
    if augment.crop is not None:
        parts.append(f"crop with {augment.crop.padding} px {augment.crop.mode} padding")
    if augment.translate is not None:
        parts.append(f"shift ±{augment.translate.pixels} px ({augment.translate.mode})")
    if augment.horizontal_flip:
        parts.append(f"horizontal flip p={augment.horizontal_flip:g}")
    return ", ".join(parts) or "none"
