"""Learning-rate schedules, stepped once per epoch or once per optimizer step, as
torch.optim.lr_scheduler is when its `step()` is called per epoch or per iteration.

Each schedule is a closed form `lr(t, base_lr, total)` where t counts from 0 in the schedule's
unit (`interval`: epochs by default, or optimizer steps) and total is the training length in
that unit. It equals what the matching torch scheduler reports after `t` calls to
`scheduler.step()`. With `interval: step` every count in the schedule is in steps too (step_size,
milestones, gamma per step), as for a torch scheduler stepped per iteration, except cosine's
`warmup_epochs`, which may then be fractional and becomes round(warmup_epochs * steps_per_epoch)
steps. `Trainer.lr` turns (epoch, step) into t with `position`.
"""

from __future__ import annotations

import bisect
import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # left out of dumps when it is the default, so that the digest of a spec written before
    # `interval` existed (and the checkpoints that record it) stays the same
    interval: Literal["epoch", "step"] = Field(
        "epoch", exclude_if=lambda v: v == "epoch",
        description="Update the learning rate after every epoch, or after every optimizer "
                    "step (counts in the schedule are then in steps).")

    def lr(self, t: int, base_lr: float, total: int, steps_per_epoch: int = 1) -> float:
        """The learning rate for unit t (0-based) of total; steps_per_epoch converts epoch
        counts (cosine's warmup) into steps when interval is 'step'."""
        raise NotImplementedError

    def position(self, epoch: int, step: int, steps_per_epoch: int,
                 epochs: int) -> tuple[int, int]:
        """(t, total) in the schedule's unit for batch `step` of epoch `epoch` (0-based)."""
        if self.interval == "step":
            return epoch * steps_per_epoch + step, epochs * steps_per_epoch
        return epoch, epochs

    def depends_on_length(self) -> bool:
        """True when the rate at some point depends on the total training length (cosine):
        then a run cannot resume with another train.epochs without bending its curve."""
        return False

    def check_length(self, epochs: int) -> None:
        """Raise ValueError when the schedule cannot run in `epochs` epochs."""


class Constant(_Schedule):
    type: Literal["constant"] = "constant"

    def lr(self, t, base_lr, total, steps_per_epoch=1):
        return base_lr


class Step(_Schedule):
    """StepLR: base * gamma ** (t // step_size)."""

    type: Literal["step"] = "step"
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1

    def lr(self, t, base_lr, total, steps_per_epoch=1):
        return base_lr * self.gamma ** (t // self.step_size)


class MultiStep(_Schedule):
    """MultiStepLR: base * gamma ** (number of milestones <= t)."""

    type: Literal["multistep"] = "multistep"
    milestones: list[PositiveInt] = Field(min_length=1)
    gamma: PositiveFloat = 0.1

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v):
        if list(v) != sorted(set(v)):
            raise ValueError(f"milestones must be strictly increasing, got {v}")
        return v

    def lr(self, t, base_lr, total, steps_per_epoch=1):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class Exponential(_Schedule):
    """ExponentialLR: base * gamma ** t."""

    type: Literal["exponential"] = "exponential"
    gamma: PositiveFloat

    def lr(self, t, base_lr, total, steps_per_epoch=1):
        return base_lr * self.gamma**t


class Cosine(_Schedule):
    """Optional linear warmup of w units, then CosineAnnealingLR from base to min_lr over the
    rest (torch's LinearLR then CosineAnnealingLR in a SequentialLR):

    warmup (t < w):  base * (t + 1) / (w + 1)
    then:            min_lr + (base - min_lr) * (1 + cos(pi * (t - w) / (total - w))) / 2

    w = warmup_epochs, or round(warmup_epochs * steps_per_epoch) steps with interval 'step'.
    """

    type: Literal["cosine"] = "cosine"
    # int | float: a whole number stays an int in dumps (and digests), as before fractions
    warmup_epochs: NonNegativeInt | NonNegativeFloat = Field(
        0, description="Linear warmup length in epochs; may be fractional with interval 'step'.")
    min_lr: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _whole_epochs(self):
        if self.interval == "epoch" and self.warmup_epochs != int(self.warmup_epochs):
            raise ValueError(f"warmup_epochs must be a whole number with interval 'epoch', got "
                             f"{self.warmup_epochs}; set interval: step for a fractional warmup")
        return self

    def warmup(self, steps_per_epoch: int = 1) -> int:
        """The warmup length in the schedule's unit."""
        if self.interval == "step":
            return round(self.warmup_epochs * steps_per_epoch)
        return int(self.warmup_epochs)

    def lr(self, t, base_lr, total, steps_per_epoch=1):
        w = self.warmup(steps_per_epoch)
        if t < w:
            return base_lr * (t + 1) / (w + 1)
        span = max(total - w, 1)
        cosine = (1 + math.cos(math.pi * (t - w) / span)) / 2  # 1 -> 0
        return self.min_lr + (base_lr - self.min_lr) * cosine

    def depends_on_length(self) -> bool:
        return True

    def check_length(self, epochs):
        if self.warmup_epochs >= epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs:g}) is not shorter than training "
                f"(train.epochs = {epochs}), so the cosine part would never run; shorten the "
                "warmup or train longer")


Schedule = Annotated[
    Constant | Step | MultiStep | Exponential | Cosine, Field(discriminator="type")
]
