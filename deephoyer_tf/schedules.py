"""`StrengthSchedule`: warm up, anneal or switch off the DeepHoyer penalties."""

from deephoyer_tf import _compat
from deephoyer_tf import regularizers


class StrengthSchedule(_compat.Callback):
    """Sets every DeepHoyer strength to ``base * schedule(epoch)`` at each epoch start.

    ``base`` is each strength variable's value when training first begins
    (`deephoyer_tf.strength_variables(model)`), so a regularizer built with
    ``HoyerSquare(1e-4)`` and ``schedule=lambda e: min(1, (e + 1) / 5)`` runs at
    2e-5, 4e-5, ..., 1e-4 from the fifth epoch on. The strengths are variables:
    nothing is retraced.

    Put it before `deephoyer_tf.ThresholdPruning` in the callback list: that
    callback switches the penalties off when pruning, and must act last.

    Args:
        schedule: a callable ``epoch -> float >= 0`` (0-based epoch).
        verbose: 1 prints the factor at each epoch, 0 is silent.

    Example::

        model.fit(..., callbacks=[deephoyer_tf.StrengthSchedule.linear_warmup(5)])
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "Invalid type for argument `schedule`. Expected a callable "
                f"epoch -> float. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.verbose = verbose
        self._base = None

    @classmethod
    def linear_warmup(cls, epochs, verbose=0):
        """Linear warm-up: factor ``(epoch + 1) / epochs`` up to 1."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                "Invalid value for argument `epochs`. Expected an int >= 1. "
                f"Received: epochs={epochs!r}"
            )
        return cls(lambda epoch: min(1.0, (epoch + 1) / epochs), verbose)

    def on_train_begin(self, logs=None):
        if self._base is None:
            self._base = [
                (variable, float(variable.numpy()))
                for variable in regularizers.strength_variables(self.model)
            ]

    def on_epoch_begin(self, epoch, logs=None):
        factor = float(self.schedule(epoch))
        if not factor >= 0.0:
            raise ValueError(
                f"The strength schedule returned {factor} at epoch {epoch}; "
                "expected a float >= 0."
            )
        for variable, base in self._base:
            variable.assign(base * factor)
        if self.verbose:
            print(f"StrengthSchedule: epoch {epoch}: strength factor {factor:.4g}")
