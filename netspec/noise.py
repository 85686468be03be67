"""Keyed randomness for training: each draw is a function of what it is for, not of a stream.

    order = shuffle(seed, epoch, n)            # epoch's permutation of the training set
    noise = Noise(seed); noise.step = s         # training step s (counted over all epochs)
    noise.offset = lo                           # this process's slice starts at batch row lo
    noise.stream(layer).uniform((D, B))         # U[0, 1): sample j's D values in column j

Sample j of a slice is batch position offset + j, and its values come from the stream keyed by
(seed, step, layer) at the place reserved for that position, so a sample's dropout mask does not
depend on how the batch is split between worker processes, and a resumed run needs no saved
generator state: (seed, epoch) and (seed, step) give the same draws again.

Initialisation still uses the plan's own Generator (`default_rng(seed)`); the tags below keep
these streams apart from it and from each other.
"""

from __future__ import annotations

import math

import numpy as np

SHUFFLE, DROPOUT = 1, 2  # stream tags


def shuffle(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training samples in epoch `epoch` (from 0)."""
    return np.random.default_rng([seed, SHUFFLE, epoch]).permutation(n)


class Noise:
    """The draws of one plan: keyed by its seed, the current step and the slice's offset."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.step = 0  # training step; Plan.forward(train=True) advances it after each call
        self.offset = 0  # batch position of this process's first sample

    def stream(self, key: int) -> LayerNoise:
        """The draws of one layer (key: its index in the plan)."""
        return LayerNoise(self, key)


class LayerNoise:
    def __init__(self, noise: Noise, key: int):
        self.noise, self.key = noise, key

    def uniform(self, shape: tuple) -> np.ndarray:
        """U[0, 1) float64 of `shape` (*features, B), batch innermost; a view, not contiguous."""
        n, d = shape[-1], math.prod(shape[:-1])
        bits = np.random.PCG64(np.random.SeedSequence(
            [self.noise.seed, DROPOUT, self.noise.step, self.key]))
        bits.advance(self.noise.offset * d)  # one 64-bit draw per float64: skip earlier samples
        u = np.random.Generator(bits).random((n, d))  # (B, D): sample j's values in row j
        return u.T.reshape(shape)  # (D, B) -> (*features, B), a view
