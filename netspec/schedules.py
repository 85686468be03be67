"""Learning-rate schedules, stepped once per epoch like torch.optim.lr_scheduler.

Each schedule is a closed form `lr(epoch, base_lr, epochs)` with epoch counted from 0, which
equals what the matching torch scheduler reports after `epoch` calls to `scheduler.step()`.
"""

from __future__ import annotations

import bisect
import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def lr(self, epoch: int, base_lr: float, epochs: int) -> float:
        raise NotImplementedError

    def depends_on_length(self) -> bool:
        """True when the rate at some epoch depends on the total number of epochs (cosine):
        then a run cannot resume with another train.epochs without bending its curve. This
        default compares the rates for a few totals; a schedule may answer directly."""
        return any(self.lr(e, 1.0, n) != self.lr(e, 1.0, n + 1)
                   for n in (10, 100, 1000) for e in range(n))


class Constant(_Schedule):
    type: Literal["constant"] = "constant"

    def lr(self, epoch, base_lr, epochs):
        return base_lr


class Step(_Schedule):
    """StepLR: base * gamma ** (epoch // step_size)."""

    type: Literal["step"] = "step"
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1

    def lr(self, epoch, base_lr, epochs):
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStep(_Schedule):
    """MultiStepLR: base * gamma ** (number of milestones <= epoch)."""

    type: Literal["multistep"] = "multistep"
    milestones: list[PositiveInt] = Field(min_length=1)
    gamma: PositiveFloat = 0.1

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v):
        if list(v) != sorted(set(v)):
            raise ValueError(f"milestones must be strictly increasing, got {v}")
        return v

    def lr(self, epoch, base_lr, epochs):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class Exponential(_Schedule):
    """ExponentialLR: base * gamma ** epoch."""

    type: Literal["exponential"] = "exponential"
    gamma: PositiveFloat

    def lr(self, epoch, base_lr, epochs):
        return base_lr * self.gamma**epoch


class Cosine(_Schedule):
    """Optional linear warmup, then CosineAnnealingLR from base to min_lr over the rest.

    warmup (e < w):  base * (e + 1) / (w + 1)
    then:            min_lr + (base - min_lr) * (1 + cos(pi * (e - w) / (epochs - w))) / 2
    """

    type: Literal["cosine"] = "cosine"
    warmup_epochs: NonNegativeInt = 0
    min_lr: float = Field(0.0, ge=0.0)

    def depends_on_length(self):
        return True

    def lr(self, epoch, base_lr, epochs):
        w = self.warmup_epochs
        if epoch < w:
            return base_lr * (epoch + 1) / (w + 1)
        span = max(epochs - w, 1)
        cosine = (1 + math.cos(math.pi * (epoch - w) / span)) / 2  # 1 -> 0
        return self.min_lr + (base_lr - self.min_lr) * cosine


Schedule = Annotated[
    Constant | Step | MultiStep | Exponential | Cosine, Field(discriminator="type")
]
