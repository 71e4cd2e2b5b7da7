"""`StrengthSchedule`: warm up, anneal or switch off the DeepHoyer penalties."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deephoyer_tf._internal import validation
from deephoyer_tf.callbacks.base import Callback
from deephoyer_tf.regularizers.strengths import strength_variables

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable


class StrengthSchedule(Callback):
    """Sets every DeepHoyer strength to ``base * schedule(epoch)`` at each epoch start.

    ``base`` is each strength variable's value when training of a model first
    begins (`deephoyer_tf.strength_variables(model)`; taken again when the
    callback is handed to another model's `fit`), so a regularizer built with
    ``HoyerSquare(1e-4)`` and ``schedule=lambda e: min(1, (e + 1) / 5)`` runs at
    2e-5, 4e-5, ..., 1e-4 from the fifth epoch on. The strengths are variables:
    nothing is retraced.

    Put it before `deephoyer_tf.ThresholdPruning` in the callback list: that
    callback switches the penalties off when pruning, and must act last.

    Args:
        schedule: a callable ``epoch -> float >= 0`` (0-based epoch).
        verbose: 0 (default) is silent; 1 prints the factor at each epoch,
            through Keras' messaging.

    Example::

        model.fit(..., callbacks=[deephoyer_tf.StrengthSchedule.linear_warmup(5)])
    """

    def __init__(self, schedule: Callable[[int], float], verbose: int = 0) -> None:
        super().__init__(verbose)
        self.schedule = validation.check_callable(
            schedule, "schedule", "a callable epoch -> float"
        )
        self._base = None
        self._for_model = None

    @classmethod
    def linear_warmup(cls, epochs: int, verbose: int = 0) -> StrengthSchedule:
        """Linear warm-up: factor ``(epoch + 1) / epochs`` up to 1."""
        epochs = validation.check_int(epochs, "epochs", minimum=1)
        return cls(lambda epoch: min(1.0, (epoch + 1) / epochs), verbose)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._for_model is not self.model:
            # First fit of this model: its strengths now are the bases (a
            # later fit of the same model keeps them, as they may have been
            # scheduled or switched off since).
            self._for_model = self.model
            self._base = [
                (variable, float(variable.numpy())) for variable in strength_variables(self.model)
            ]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        factor = float(self.schedule(epoch))
        if not factor >= 0.0:
            raise ValueError(
                f"The strength schedule returned {factor} at epoch {epoch}; "
                "expected a float >= 0."
            )
        for variable, base in self._base:
            variable.assign(base * factor)
        self._message(f"StrengthSchedule: epoch {epoch}: strength factor {factor:.4g}")
