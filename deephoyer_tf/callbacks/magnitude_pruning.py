"""`MagnitudePruning`: gradual magnitude pruning during `fit`, on every Keras backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from keras import ops

from deephoyer_tf._internal import backend
from deephoyer_tf.callbacks.base import Callback
from deephoyer_tf.pruning import magnitude
from deephoyer_tf.pruning.schedules import ConstantSparsity
from deephoyer_tf.pruning.schedules import PruningSchedule
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.report import sparsity_report

if TYPE_CHECKING:
    from typing import Any
    from typing import Sequence

_DEFAULT_FREQUENCY = 100


class MagnitudePruning(Callback):
    """Prunes the smallest weights (or blocks, or N:M groups) on a schedule; holds the zeros.

    Keras 3's missing ``tfmot.sparsity.keras.prune_low_magnitude``, as a
    callback: no wrapper layers, the model keeps its own layers, and it runs
    under `fit` on TensorFlow, JAX and PyTorch (and tf_keras).

    At each update step ``t`` of `schedule` (``t`` is the optimizer's
    iteration count, so it survives saving, loading and `initial_epoch`), it
    keeps the ``max(1, round(n * (1 - s)))`` largest-magnitude weights of
    each kernel's ``n`` (``s = schedule.sparsity(t)``) and sets the others to
    0; between updates and after the last one, every zero is held at exactly
    0 after every optimizer step by the same masking constraint as
    `deephoyer_tf.fix_zeros` (so after the schedule ends the model is as after
    ``fix_zeros``). A pruned weight is never revived (unlike TFMOT, whose
    masked weights are updated by the optimizer between mask updates).

    Patterns, in TFLite's orientation ``(outputs, inputs)`` (a Dense kernel
    ``(in, out)`` read transposed, a Conv kernel per kernel position):

    * ``block_size=(r, c)``: blocks of r outputs by c consecutive inputs,
      ranked by mean ``|w|``; ``(1, 4)`` for TFLite's float and ``(1, 16)``
      for its int8 sparse fully connected kernels.
    * ``m_by_n=(m, n)``: the ``n - m`` largest of every ``n`` consecutive
      inputs kept (TFMOT's ``sparsity_m_by_n``; ``(2, 4)``: 2:4). The
      schedule then gives only the update steps; the sparsity is ``m / n``.

    Timing. The update for step ``t`` is applied before the optimizer step
    ``t`` (as TFMOT's ``UpdatePruningStep``). With ``steps_per_execution=N``
    the callback runs every N steps, so an update falls on the first
    execution that starts at or after ``t`` (up to N - 1 steps late); an
    update due at the end of training is applied in ``on_train_end``.
    Updates that would not change the masks (a constant sparsity already
    reached) are skipped, so on JAX (where the masks are frozen into the
    compiled step) the step is retraced only when masks change.

    Resuming. After loading a model saved mid-schedule, a new callback with
    the same schedule prunes again to the sparsity of the latest update step
    at or before the optimizer's iteration count: the zeros are the smallest
    weights, so the masks are the loaded zero pattern, and the schedule goes on.

    The masks stay on the model after `fit`; `deephoyer_tf.strip_zero_masks`
    removes them (TFMOT's ``strip_pruning``).

    Args:
        schedule: a `ConstantSparsity` or `PolynomialDecay` (or another
            `PruningSchedule`), or a float: ``ConstantSparsity(schedule,
            begin_step=0, frequency=frequency)``.
        layer_types: layer types pruned (default: Dense, Conv and registered
            custom layers, as `deephoyer_tf.prune`).
        scope: ``"layer"`` (default; each kernel to the sparsity) or
            ``"global"`` (one magnitude ranking over all kernels).
        block_size: ``(rows, cols)``, default ``(1, 1)`` (single weights).
        m_by_n: ``(m, n)`` or None.
        frequency: only with a float `schedule`: steps between updates
            (default 100). A schedule object has its own.
        verbose: 0 (default) silent; 1 prints each update.

    Attributes:
        step: the step of the last batch seen.
        applied_step: the schedule step whose sparsity was applied last (None before).
        sparsity: the sparsity applied last.
        report: the `SparsityReport` after the last update (with ``verbose=1``).

    Example::

        schedule = deephoyer_tf.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000)
        model.fit(x, y, epochs=10, callbacks=[deephoyer_tf.MagnitudePruning(schedule)])
        deephoyer_tf.strip_zero_masks(model)
    """

    def __init__(
        self,
        schedule: PruningSchedule | float,
        *,
        layer_types: Sequence[str] | str | None = None,
        scope: str = "layer",
        block_size: Sequence[int] = (1, 1),
        m_by_n: Sequence[int] | None = None,
        frequency: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if isinstance(schedule, PruningSchedule):
            if frequency is not None:
                raise ValueError(
                    "Argument `frequency` applies only to a float `schedule`; the "
                    f"schedule's own frequency={schedule.frequency} rules. Received: "
                    f"frequency={frequency!r} with schedule={schedule!r}"
                )
        elif isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
            every = _DEFAULT_FREQUENCY if frequency is None else frequency
            schedule = ConstantSparsity(schedule, begin_step=0, frequency=every)
        else:
            raise TypeError(
                "Invalid type for argument `schedule`. Expected a PruningSchedule "
                "(deephoyer_tf.ConstantSparsity, deephoyer_tf.PolynomialDecay) or a float "
                f"sparsity. Received: schedule={schedule!r} of type {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.pattern = magnitude.PruningPattern(
            scope, tuple(block_size) if isinstance(block_size, list) else block_size,
            tuple(m_by_n) if isinstance(m_by_n, list) else m_by_n,
        )
        self.scope = self.pattern.scope
        self.block_size = self.pattern.block_size
        self.m_by_n = self.pattern.m_by_n
        self.types = registry.check_layer_types(layer_types)
        self.layer_types = layer_types
        self._for_model = None
        self._reset()

    def _reset(self):
        self.step = None
        self.applied_step = None
        self.sparsity = None
        self.report = None
        self._epoch_base = 0

    @property
    def finished(self) -> bool:
        """True once the schedule's last update is applied (the masks are then fixed)."""
        last = self.schedule.final_update()
        return last is not None and self.applied_step == last

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._for_model is not self.model:
            self._for_model = self.model
            self._reset()
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError(
                "MagnitudePruning needs a compiled model: its step is the optimizer's "
                f"iteration count. Model {self.model.name!r} has no optimizer; call compile() first."
            )
        magnitude.collect(self.model, self.types, self.pattern)  # errors now, not mid-fit

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Synced with the model at every epoch start (JAX included).
        self._epoch_base = self._iterations()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # `batch` counts the steps of this epoch (the first of the execution
        # with steps_per_execution > 1).
        self._update(self._epoch_base + int(batch))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._sync()
        self._update(self._iterations())

    def _iterations(self):
        return int(np.asarray(ops.convert_to_numpy(backend.to_tensor(self.model.optimizer.iterations))))

    def _sync(self):
        # JAX keeps the training state outside the variables during an epoch.
        if backend.is_jax() and hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()

    def _update(self, step):
        self.step = step
        due = self.schedule.last_update(step)
        if due is None or due == self.applied_step:
            return
        sparsity = self.schedule.sparsity(due)
        model = self.model
        self._sync()
        kernels = magnitude.collect(model, self.types, self.pattern)
        held = all(zero_mask.is_fixed(k.ref.variable) for k in kernels)
        unchanged = self.pattern.m_by_n is not None or sparsity == self.sparsity
        if not (held and unchanged and self.sparsity is not None):
            masks = magnitude.magnitude_masks(kernels, sparsity, self.pattern)
            magnitude.apply_masks(model, self.types, kernels, masks)
        if self.pattern.m_by_n is not None:
            sparsity = self.pattern.m_by_n[0] / self.pattern.m_by_n[1]
        self.applied_step, self.sparsity = due, sparsity
        if self.verbose:
            self.report = sparsity_report(model)
            end = " (last update: masks fixed from now on)" if self.finished else ""
            self._message(
                f"MagnitudePruning: step {step}: {self.pattern.describe()} pruned to "
                f"sparsity {sparsity:.4f} (schedule step {due}){end}.\n{self.report}"
            )
