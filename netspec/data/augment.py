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
from numpy.lib.stride_tricks import sliding_window_view

M64 = (1 << 64) - 1
SLOTS = {"crop_y": 0, "crop_x": 1, "shift_y": 2, "shift_x": 3, "flip": 4, "angle": 5}


def _mix(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the per-key base)."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def keyed_uniforms(seed: int, epoch: int, index: np.ndarray, slots: int) -> np.ndarray:
    """float64 (B, slots) in [0, 1): draw [j, s] is a function of (seed, epoch, index[j], s)
    only (SplitMix64 over a counter)."""
    base = np.array([_mix(_mix(_mix(seed & M64) ^ (epoch & M64)) ^ s) for s in range(slots)],
                    np.uint64)
    with np.errstate(over="ignore"):
        z = np.asarray(index, np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15) + base
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def keyed_uniform(seed: int, epoch: int, index: np.ndarray, slot: int) -> np.ndarray:
    """float64 (B,): draw `slot` of keyed_uniforms."""
    return keyed_uniforms(seed, epoch, index, slot + 1)[:, slot]


def window(x: np.ndarray, pad: int, mode: str, fill: np.ndarray, dy: np.ndarray,
           dx: np.ndarray) -> np.ndarray:
    """(B, C, H, W): for each sample b, the H x W window at offset (dy[b], dx[b]) of x[b]
    padded by `pad` on each side (mode as torchvision's padding_mode; constant: `fill` per
    channel). One strided gather: no per-pixel index arithmetic."""
    b, c, h, w = x.shape
    if mode == "constant":
        padded = np.empty((b, c, h + 2 * pad, w + 2 * pad), x.dtype)
        padded[...] = fill.astype(x.dtype)[None, :, None, None]
        padded[:, :, pad:pad + h, pad:pad + w] = x
    else:
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    views = sliding_window_view(padded, (h, w), axis=(2, 3))  # (B, C, 2p+1, 2p+1, H, W)
    return views[np.arange(b), :, dy, dx]


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
        u = keyed_uniforms(self.seed, epoch, idx, len(SLOTS))  # (B, slots)
        if a.rotate is not None:
            angle = (2 * u[:, SLOTS["angle"]] - 1) * a.rotate.degrees
            x[...] = self.rotate(x, angle, self.fills["rotate"])
        if a.crop is not None:  # out(y) = padded(y + d): d in 0..2p
            n = 2 * a.crop.padding + 1
            dy = np.floor(u[:, SLOTS["crop_y"]] * n).astype(np.int64)
            dx = np.floor(u[:, SLOTS["crop_x"]] * n).astype(np.int64)
            x[...] = window(x, a.crop.padding, a.crop.mode, self.fills["crop"], dy, dx)
        if a.translate is not None:  # out(y) = in(y - t) = padded(y + pixels - t)
            t = a.translate.pixels
            ty = np.floor(u[:, SLOTS["shift_y"]] * (2 * t + 1)).astype(np.int64) - t
            tx = np.floor(u[:, SLOTS["shift_x"]] * (2 * t + 1)).astype(np.int64) - t
            x[...] = window(x, t, a.translate.mode, self.fills["translate"], t - ty, t - tx)
        if a.horizontal_flip:
            flip = u[:, SLOTS["flip"]] < a.horizontal_flip
            x[flip] = x[flip, ..., ::-1]

    def rotate(self, x: np.ndarray, degrees: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """Each sample turned by its angle (degrees, counter-clockwise as displayed) about the
        centre, bilinear, in float32; taps that fall outside the image read `fill` (per
        channel) from a frame around it."""
        b, c, h, w = x.shape
        theta = np.radians(degrees)[:, None]
        cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
        yy, xx = np.meshgrid(np.arange(h, dtype=np.float32) - np.float32((h - 1) / 2),
                             np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2),
                             indexing="ij")
        yy, xx = yy.reshape(-1), xx.reshape(-1)  # (H*W,)
        # the source of output (y, x): the inverse turn, in (x right, y down) coordinates
        sx = cos * xx - sin * yy + np.float32((w - 1) / 2)  # (B, H*W)
        sy = sin * xx + cos * yy + np.float32((h - 1) / 2)
        x0, y0 = np.floor(sx), np.floor(sy)
        fx, fy = sx - x0, sy - y0
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        # a frame of fill wide enough that both taps of every pixel land in it (1 px for small
        # turns), so no tap needs a clip: taps at x0 and x0 + 1, -pad <= x0, x0 + 1 < w + pad
        pad = max(1, -int(x0.min()), int(x0.max()) + 2 - w, -int(y0.min()), int(y0.max()) + 2 - h)
        hp, wp = h + 2 * pad, w + 2 * pad
        framed = np.empty((b, c, hp, wp), np.float32)  # (B, C, H + 2 pad, W + 2 pad)
        framed[...] = fill.astype(np.float32)[None, :, None, None]
        framed[:, :, pad:pad + h, pad:pad + w] = x
        flat = framed.reshape(-1)
        base = (np.arange(b * c, dtype=np.int64) * (hp * wp)).reshape(b, c, 1)
        top_left = base + ((y0 + pad) * wp + (x0 + pad))[:, None, :]  # (B, C, H*W) flat index
        out = np.zeros((b, c, h * w), np.float32)
        for offset, weight in ((0, (1 - fy) * (1 - fx)), (1, (1 - fy) * fx),
                               (wp, fy * (1 - fx)), (wp + 1, fy * fx)):
            out += weight[:, None, :] * np.take(flat, top_left + offset)
        return out.reshape(b, c, h, w).astype(x.dtype, copy=False)


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
