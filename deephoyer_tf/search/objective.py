"""One search trial: regularize a dense model, prune, fine-tune, measure.

`train_trial` runs the package's three stages on a copy of a trained dense
model with one set of parameters (strength, std ratio or per-layer std
ratios; target sparsity for magnitude pruning) and returns the final
model with its validation accuracy, nonzero weights and MACs. It knows
nothing of Optuna: `study` calls it from the objective and passes `report`,
which receives the validation accuracy after every epoch (Optuna's
``trial.report`` / ``should_prune`` behind it). Every epoch is backed up in
`backup_dir` when given (`reproduce.fit_resumable`), so a trial interrupted
mid-way and run again with the same parameters continues from its last
epoch.

Data are arrays ``(x, y)`` or `tf.data.Dataset` objects of ``(x, y)``
batches; labels are integer classes (or one-hot), and the model outputs
logits or probabilities: accuracy is ``argmax(output) == label`` unless an
`evaluate` function is given.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import TYPE_CHECKING

import keras
import numpy as np

from deephoyer_tf._internal import validation
from deephoyer_tf.callbacks.magnitude_pruning import MagnitudePruning
from deephoyer_tf.callbacks.strength_schedule import StrengthSchedule
from deephoyer_tf.paper import reproduce
from deephoyer_tf.pruning.schedules import PolynomialDecay
from deephoyer_tf.regularizers import regularizers
from deephoyer_tf.regularizers.regularize_model import regularize
from deephoyer_tf.sparsity.fixed_zeros import fix_zeros
from deephoyer_tf.sparsity.fixed_zeros import strip_zero_masks
from deephoyer_tf.sparsity.thresholding import prune
from deephoyer_tf.structure import report as report_lib

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable

#: Methods the search trains: the package's regularizers, L1, magnitude pruning on Keras 3
#: (`MagnitudePruning`, any backend) and TFMOT's on tf_keras (the cross-check).
METHODS = ("hs", "hoyer", "group-hs", "l1", "group-lasso", "magnitude", "tfmot-magnitude")
#: Methods that prune by magnitude to a `target_sparsity` (no regularizer).
MAGNITUDE_METHODS = ("magnitude", "tfmot-magnitude")
#: Methods whose size is counted in MACs (they remove whole units).
STRUCTURAL = ("group-hs", "group-lasso")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Epochs and optimizer of every trial (Adam; cosine-decayed learning rates).

    Attributes:
        regularize_epochs: epochs of training with the regularizer (for
            ``magnitude``: epochs of TFMOT's polynomial pruning schedule).
        finetune_epochs: epochs of fine-tuning with the penalty off and the
            zeros held fixed (``magnitude``: epochs at the final sparsity).
        warmup_epochs: linear warm-up of DeepHoyer strengths (0: none).
        learning_rate: Adam's learning rate while regularizing (constant).
        finetune_learning_rate: Adam's learning rate when fine-tuning,
            cosine-decayed to 0 (constant if the epoch length is unknown).
        batch_size: batch size for arrays (datasets come batched).
    """

    regularize_epochs: int = 30
    finetune_epochs: int = 15
    warmup_epochs: int = 5
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-3
    batch_size: int = 128

    def __post_init__(self):
        validation.check_int(self.regularize_epochs, "regularize_epochs", minimum=1)
        validation.check_int(self.finetune_epochs, "finetune_epochs", minimum=0)
        validation.check_int(self.warmup_epochs, "warmup_epochs", minimum=0)
        validation.check_float(self.learning_rate, "learning_rate", greater_than=0.0)
        validation.check_float(self.finetune_learning_rate, "finetune_learning_rate", greater_than=0.0)
        validation.check_int(self.batch_size, "batch_size", minimum=1)

    @classmethod
    def from_recipe(cls, recipe, regularize_epochs=None, finetune_epochs=None, warmup_epochs=None):
        """The schedule of a `reproduce` recipe; an epoch count given (0 included) replaces the recipe's."""
        return cls(
            regularize_epochs=recipe.regularize_epochs if regularize_epochs is None else regularize_epochs,
            finetune_epochs=recipe.finetune_epochs if finetune_epochs is None else finetune_epochs,
            warmup_epochs=recipe.warmup_epochs if warmup_epochs is None else warmup_epochs,
            learning_rate=recipe.learning_rate, finetune_learning_rate=recipe.finetune_learning_rate,
            batch_size=recipe.batch_size)


@dataclasses.dataclass
class Data:
    """Training or validation data: arrays ``(x, y)`` or a batched `tf.data.Dataset`."""

    x: Any = None
    y: Any = None
    dataset: Any = None

    @classmethod
    def of(cls, value, name):
        """`value` as `Data`: a ``(x, y)`` pair of arrays or a `tf.data.Dataset`."""
        import tensorflow as tf

        if isinstance(value, tf.data.Dataset):
            return cls(dataset=value)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            x, y = np.asarray(value[0]), np.asarray(value[1])
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected (x, y) arrays of the same "
                    f"nonzero length. Received lengths {len(x)} and {len(y)}."
                )
            return cls(x=x, y=y)
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a pair (x, y) of arrays or a "
            f"tf.data.Dataset of (x, y) batches. Received: {type(value).__name__}"
        )

    def steps_per_epoch(self, batch_size):
        """Batches per epoch, or None if the dataset's cardinality is unknown."""
        if self.dataset is None:
            return int(math.ceil(len(self.x) / batch_size))
        cardinality = int(self.dataset.cardinality())
        return cardinality if cardinality > 0 else None

    def fit_arguments(self, batch_size):
        if self.dataset is None:
            return {"x": self.x, "y": self.y, "batch_size": batch_size, "shuffle": True}
        return {"x": self.dataset, "shuffle": False}  # a dataset shuffles itself, if it should

    def validation_data(self):
        return self.dataset if self.dataset is not None else (self.x, self.y)


def accuracy(model, data: Data) -> float:
    """Fraction of examples with ``argmax(model(x)) == label`` (labels: classes or one-hot)."""

    def labels(y):
        y = np.asarray(y)
        return np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(-1)

    if data.dataset is None:
        outputs = model.predict(data.x, batch_size=1000, verbose=0)
        return float(np.mean(np.argmax(outputs, axis=-1) == labels(data.y)))
    hits = total = 0
    for x, y in data.dataset:
        outputs = model(x, training=False)
        hits += int(np.sum(np.argmax(np.asarray(outputs), axis=-1) == labels(y)))
        total += len(labels(y))
    if total == 0:
        raise ValueError("The validation dataset is empty.")
    return hits / total


def make_regularizer(method, strength):
    """The regularizer of `method` (one of `METHODS` but ``magnitude``) at `strength`."""
    validation.check_choice(method, "method", METHODS[:-1])
    return reproduce.make_regularizer(method, strength)


class _Report(keras.callbacks.Callback):
    """Calls ``report(step, validation accuracy)`` after every epoch (step = epoch + offset)."""

    def __init__(self, report, evaluate, validation_data, offset):
        super().__init__()
        self._report, self._evaluate, self._validation, self._offset = report, evaluate, validation_data, offset

    def on_epoch_end(self, epoch, logs=None):
        self._report(self._offset + epoch, self._evaluate(self.model, self._validation))


def kernel_layer_names(model) -> list[str]:
    """Names of the layers `prune` thresholds by default (those `sparsity_report` lists)."""
    return [layer.name for layer in report_lib.sparsity_report(model).layers]


def train_trial(
    dense,
    train: Data,
    val: Data,
    method: str,
    params: dict,
    schedule: Schedule,
    *,
    evaluate: Callable | None = None,
    report: Callable[[int, float], None] | None = None,
    backup_dir: str | pathlib.Path | None = None,
    callbacks=(),
    build_tf_keras: Callable | None = None,
    log=print,
) -> tuple[Any, dict]:
    """Trains one trial from the dense model and measures it on the validation data.

    Args:
        dense: the trained dense Keras 3 model (left unchanged).
        train, val: `Data`.
        method: one of `METHODS`.
        params: ``strength`` and ``std_ratio`` (a float, or a dict
            {layer name: ratio}); for ``magnitude``, ``target_sparsity``.
        schedule: a `Schedule`.
        evaluate: ``evaluate(model, val) -> float`` (default: `accuracy`).
        report: called with ``(step, validation accuracy)`` after every
            epoch; may raise (Optuna's ``TrialPruned``) to stop the trial.
        backup_dir: per-epoch backups of each stage (resumed when present).
        callbacks: extra Keras callbacks for every `fit`.
        build_tf_keras: ``tfmot-magnitude`` only: builds the same architecture
            in tf_keras (TFMOT works on tf_keras models only).
        log: where progress lines go.

    Returns:
        ``(model, info)``: the final Keras 3 model (zeros in its kernels, no
        penalties, uncompiled state irrelevant) and a dict with
        ``validation_accuracy``, ``nonzero_weights``, ``total_weights``,
        ``macs``, ``dense_macs``, ``structure`` and ``per_layer`` (nonzero
        weights per layer).
    """
    evaluate = evaluate or accuracy
    report_cb = (lambda offset: [_Report(report, evaluate, val, offset)]) if report else (lambda offset: [])
    backup = (lambda name: pathlib.Path(backup_dir) / name) if backup_dir else (lambda name: None)
    steps = train.steps_per_epoch(schedule.batch_size)
    start = time.time()
    if method == "magnitude":
        model = _magnitude_keras(dense, train, params, schedule, report_cb, callbacks, backup, log)
    elif method == "tfmot-magnitude":
        model = _magnitude(dense, train, val, params, schedule, report_cb, callbacks, build_tf_keras, backup)
    else:
        regularizer = make_regularizer(method, params["strength"])
        model = regularize(dense, regularizer)
        reproduce.compile_classifier(model, schedule.learning_rate)
        fit_callbacks = [*report_cb(0), *callbacks]
        if isinstance(regularizer, regularizers.DeepHoyerRegularizer) and schedule.warmup_epochs:
            fit_callbacks.insert(0, StrengthSchedule.linear_warmup(schedule.warmup_epochs))
        reproduce.fit_resumable(
            model, **train.fit_arguments(schedule.batch_size), epochs=schedule.regularize_epochs,
            backup_dir=backup("regularize"), done_path=backup("regularized.npz"), log=log,
            stage="regularize", callbacks=fit_callbacks, verbose=0)
        prune(model, std_ratio=params["std_ratio"])
        plain = keras.models.clone_model(model, clone_function=reproduce._without_regularizers)
        plain.set_weights(model.get_weights())
        decay = schedule.finetune_epochs * steps if steps else None
        reproduce.compile_classifier(plain, schedule.finetune_learning_rate, decay_steps=decay)
        fix_zeros(plain)
        if schedule.finetune_epochs:
            reproduce.fit_resumable(
                plain, **train.fit_arguments(schedule.batch_size), epochs=schedule.finetune_epochs,
                backup_dir=backup("finetune"), log=log, stage="finetune",
                callbacks=[*report_cb(schedule.regularize_epochs), *callbacks], verbose=0)
        model = strip_zero_masks(plain)
    sparsity = report_lib.sparsity_report(model)
    info = {
        "validation_accuracy": float(evaluate(model, val)),
        "nonzero_weights": int(sparsity.nonzero_weights),
        "total_weights": int(sparsity.total_weights),
        "macs": int(sparsity.macs),
        "dense_macs": int(sparsity.dense_macs),
        "structure": sparsity.structure,
        "per_layer": {row.name: int(row.nonzero_weights) for row in sparsity.layers},
        "train_seconds": round(time.time() - start, 1),
    }
    return model, info


def _magnitude_schedule(steps, schedule, target):
    """PolynomialDecay arguments: 0 to `target` over `regularize_epochs`, updates 4 times an epoch."""
    frequency = max(steps // 4, 1)
    end_step = max(frequency * ((steps * schedule.regularize_epochs) // frequency), frequency)
    return dict(initial_sparsity=0.0, final_sparsity=float(target), begin_step=0,
                end_step=end_step, frequency=frequency)


def _magnitude_keras(dense, train, params, schedule, report_cb, callbacks, backup, log):
    """`MagnitudePruning` (Keras 3, any backend) with a polynomial schedule to `target_sparsity`."""
    steps = train.steps_per_epoch(schedule.batch_size) or 1
    model = keras.models.clone_model(dense)
    model.set_weights(dense.get_weights())
    reproduce.compile_classifier(model, schedule.learning_rate)
    pruning = MagnitudePruning(PolynomialDecay(**_magnitude_schedule(steps, schedule, params["target_sparsity"])))
    reproduce.fit_resumable(
        model, **train.fit_arguments(schedule.batch_size),
        epochs=schedule.regularize_epochs + schedule.finetune_epochs,
        backup_dir=backup("magnitude"), log=log, stage="magnitude",
        callbacks=[pruning, *report_cb(0), *callbacks], verbose=0)
    return strip_zero_masks(model)


def _magnitude(dense, train, val, params, schedule, report_cb, callbacks, build_tf_keras, backup):
    """TFMOT `prune_low_magnitude` (tf_keras) with the same schedule to `target_sparsity`."""
    if build_tf_keras is None:
        raise ValueError(
            "Invalid value for argument `build_tf_keras`. Method 'tfmot-magnitude' needs a function "
            "that builds the same architecture in tf_keras (TFMOT prunes tf_keras models only). "
            "Received: None"
        )
    import tensorflow_model_optimization as tfmot  # lazy: switches tf.keras to Keras 2
    import tf_keras

    steps = train.steps_per_epoch(schedule.batch_size) or 1
    model = build_tf_keras()
    model.set_weights(dense.get_weights())
    pruning = tfmot.sparsity.keras.PolynomialDecay(
        **_magnitude_schedule(steps, schedule, params["target_sparsity"]))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=pruning)
    reproduce.compile_classifier(pruned, schedule.learning_rate, module=tf_keras)
    epochs = schedule.regularize_epochs + schedule.finetune_epochs

    class _Keras2Report(tf_keras.callbacks.Callback):
        def __init__(self, inner):
            super().__init__()
            self._inner = inner

        def on_epoch_end(self, epoch, logs=None):
            stripped = tfmot.sparsity.keras.strip_pruning(self.model)
            copy = keras.models.clone_model(dense)
            copy.set_weights(stripped.get_weights())
            self._inner._report(self._inner._offset + epoch, self._inner._evaluate(copy, self._inner._validation))

    fit_callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    fit_callbacks += [_Keras2Report(cb) for cb in report_cb(0)] + list(callbacks)
    fit_args = train.fit_arguments(schedule.batch_size)
    pruned.fit(**fit_args, epochs=epochs, callbacks=fit_callbacks, verbose=0)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    final = keras.models.clone_model(dense)
    final.set_weights(stripped.get_weights())
    return final
