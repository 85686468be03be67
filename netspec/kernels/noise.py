"""Keyed dropout noise: each draw is a function of what it is for, not of a stream.

    noise = Noise(seed); noise.step = s         # training step s (counted over all epochs)
    noise.offset = lo                           # this process's slice starts at batch row lo
    noise.stream(layer).uniform(u)              # u (B, D) float32 := U[0, 1), sample j in row j

Sample j of a slice is batch position offset + j, and its values come from the layer's stream,
keyed by (seed, layer), at the place reserved for (step, position). So a sample's dropout mask
does not depend on how the batch is split between worker processes, and a resumed run draws the
same masks again from (seed, step).

Initialisation and the epoch shuffles still use the plan's own Generator (`default_rng(seed)`),
as before keyed dropout: so runs without dropout give exactly the results, and resume the
checkpoints, of earlier versions. The tag below keeps the dropout streams apart from it.
"""

from __future__ import annotations

import numpy as np

DROPOUT = 2  # stream tag


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
    """One layer's draws. Its stream (seed, DROPOUT, layer) is cut into spans of STEP_SPAN
    64-bit outputs, one span per step; in a span, batch position p's D values are float32
    draws p*D .. p*D + D - 1 (two per 64-bit output). PCG64 jumps there in O(log n)."""

    STEP_SPAN = 2**64

    def __init__(self, noise: Noise, key: int):
        self.noise = noise
        self._bits = np.random.PCG64(np.random.SeedSequence([noise.seed, DROPOUT, key]))
        self._start = self._bits.state
        self._draw = np.random.Generator(self._bits)

    def uniform(self, out: np.ndarray) -> np.ndarray:
        """Fill `out`, float32 (B, D), with U[0, 1): row j for batch position offset + j."""
        first = self.noise.offset * out.shape[1]  # float32 draws of the earlier positions
        self._bits.state = self._start
        self._bits.advance(self.noise.step * self.STEP_SPAN + first // 2)
        if first % 2:
            self._draw.random(dtype=np.float32)  # the low half of a shared 64-bit output
        return self._draw.random(dtype=np.float32, out=out)
