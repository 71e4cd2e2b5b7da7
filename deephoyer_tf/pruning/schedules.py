"""Pruning schedules: when to prune and to what sparsity, with TFMOT's semantics.

A schedule maps the training step ``t`` (the optimizer's iteration count: the
number of optimizer steps taken before this one) to a pair
``(should_prune, sparsity)``, as ``tfmot.sparsity.keras.PruningSchedule``:

* pruning updates happen at ``t = begin_step + k * frequency`` (``k >= 0``),
  up to ``end_step`` inclusive (``end_step = -1``: forever);
* `ConstantSparsity`: ``sparsity(t) = target_sparsity``;
* `PolynomialDecay`: ``p = clip((t - begin_step) / (end_step - begin_step), 0, 1)``,
  ``sparsity(t) = final + (initial - final) * (1 - p) ** power``
  (Zhu & Gupta, "To prune, or not to prune", 2017, eq. 1).

As in TFMOT, the last update is the last ``begin_step + k * frequency`` not
after ``end_step``: when ``end_step - begin_step`` is not a multiple of
`frequency`, `PolynomialDecay` stops short of ``final_sparsity``
(`PolynomialDecay` warns about it).
"""

from __future__ import annotations

import math
import warnings

import keras

from deephoyer_tf._internal import validation


def _check_sparsity(value, name):
    value = validation.check_float(value, name, minimum=0.0)
    if not value < 1.0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a float in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return value


class PruningSchedule:
    """Base of the schedules: TFMOT's update steps; subclasses give `sparsity`.

    Args:
        begin_step: first update step, int >= 0.
        end_step: last step at which an update may happen (inclusive), an int
            >= `begin_step`, or -1 (updates go on forever) where allowed.
        frequency: steps between updates, int >= 1.
    """

    _allow_endless = True

    def __init__(self, begin_step: int, end_step: int, frequency: int) -> None:
        self.begin_step = validation.check_int(begin_step, "begin_step", minimum=0)
        end_step = validation.check_int(end_step, "end_step")
        if end_step == -1 and not self._allow_endless:
            raise ValueError(
                f"Invalid value for argument `end_step`. {type(self).__name__} needs "
                "an end: expected an int > begin_step. Received: end_step=-1"
            )
        if end_step != -1 and end_step < self.begin_step:
            raise ValueError(
                "Invalid value for argument `end_step`. Expected -1 or an int >= "
                f"begin_step={self.begin_step}. Received: end_step={end_step}"
            )
        self.end_step = end_step
        self.frequency = validation.check_int(frequency, "frequency", minimum=1)

    def sparsity(self, step: int) -> float:
        """The target sparsity of the schedule's formula at `step`."""
        raise NotImplementedError

    def should_prune(self, step: int) -> bool:
        """Whether `step` is an update step (TFMOT's ``_should_prune_in_step``)."""
        in_range = step >= self.begin_step and (self.end_step < 0 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def __call__(self, step: int) -> tuple[bool, float]:
        """``(should_prune(step), sparsity(step))``, TFMOT's calling convention."""
        step = int(step)
        return self.should_prune(step), self.sparsity(step)

    def last_update(self, step: int) -> int | None:
        """The latest update step ``<= step``, or None before `begin_step`."""
        step = int(step)
        if step < self.begin_step:
            return None
        if self.end_step >= 0:
            step = min(step, self.end_step)
        return step - (step - self.begin_step) % self.frequency

    def final_update(self) -> int | None:
        """The last update step, or None when updates go on forever."""
        if self.end_step < 0:
            return None
        return self.last_update(self.end_step)

    def get_config(self) -> dict:
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config: dict) -> PruningSchedule:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    __hash__ = None


@keras.saving.register_keras_serializable(package="deephoyer_tf", name="ConstantSparsity")
class ConstantSparsity(PruningSchedule):
    """Prunes to `target_sparsity` every `frequency` steps from `begin_step` to `end_step`.

    ``sparsity(t) = target_sparsity`` at every update step
    ``t = begin_step + k * frequency <= end_step`` (TFMOT's
    ``ConstantSparsity``). With `MagnitudePruning` the zeros are held between
    updates, so the updates after the first change nothing and are skipped.

    Args:
        target_sparsity: fraction of zeros, in [0, 1).
        begin_step: first update step (optimizer iterations), >= 0.
        end_step: last step for updates (inclusive); -1 (default): no end.
        frequency: steps between updates, >= 1 (default 100).

    Example::

        ConstantSparsity(0.9, begin_step=0)(100)  # (True, 0.9)
    """

    def __init__(
        self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100
    ) -> None:
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")

    def sparsity(self, step: int) -> float:
        return self.target_sparsity

    def get_config(self) -> dict:
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="deephoyer_tf", name="PolynomialDecay")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` as a polynomial.

    ``p = min(1, max(0, (t - begin_step) / (end_step - begin_step)))`` and
    ``sparsity(t) = final + (initial - final) * (1 - p) ** power``, applied at
    ``t = begin_step + k * frequency <= end_step`` (TFMOT's
    ``PolynomialDecay``; Zhu & Gupta 2017, eq. 1).

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity at `end_step`, in [0, 1).
        begin_step: first update step, >= 0.
        end_step: last update step, > `begin_step`. Make
            ``end_step - begin_step`` a multiple of `frequency` to reach
            `final_sparsity` (a warning says otherwise).
        power: exponent, a float (default 3).
        frequency: steps between updates, >= 1 (default 100).

    Example: ``PolynomialDecay(0.0, 0.8, 0, 100, power=1).sparsity(50)`` is
    ``0.8 + (0 - 0.8) * 0.5 = 0.4``.
    """

    _allow_endless = False

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ) -> None:
        super().__init__(begin_step, end_step, frequency)
        if self.end_step == self.begin_step:
            raise ValueError(
                "Invalid value for argument `end_step`. PolynomialDecay needs "
                f"end_step > begin_step={self.begin_step}. Received: end_step={end_step} "
                "(for one update at a single step use ConstantSparsity)"
            )
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = _check_sparsity(final_sparsity, "final_sparsity")
        self.power = validation.check_float(power, "power", minimum=-math.inf)
        last = self.final_update()
        if last != self.end_step:
            warnings.warn(
                f"PolynomialDecay: end_step - begin_step = {self.end_step - self.begin_step} "
                f"is not a multiple of frequency={self.frequency}, so the last update is "
                f"at step {last}, to sparsity {self.sparsity(last):.4f}, not "
                f"final_sparsity={self.final_sparsity} (as in TFMOT).",
                UserWarning,
                stacklevel=2,
            )

    def sparsity(self, step: int) -> float:
        p = (int(step) - self.begin_step) / (self.end_step - self.begin_step)
        p = min(1.0, max(0.0, p))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "power": self.power,
            **super().get_config(),
        }
