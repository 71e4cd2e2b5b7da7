"""A custom training loop for Keras 3 models on any `tf.distribute` strategy.

Keras 3 `Model.fit` does not support `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras issue 20585; it fails with TF 2.21 and Keras 3.15). tf_keras
`fit` does, and Keras 3 `fit` supports `MirroredStrategy`. For Keras 3 on
several workers, `fit_custom` is a small, documented loop that trains with the
same loss as `fit`:

    per replica:  loss = sum_i l(y_i, f(x_i)) / B  +  sum(model.losses) / R

with ``B`` the global batch size and ``R`` the number of replicas in sync, so
that summing the replicas' gradients (the optimizer all-reduces them) gives the
gradient of ``mean_i l(y_i, f(x_i)) + sum(model.losses)``: the DeepHoyer
penalties counted once, as on one device. Updates go through
``optimizer.apply``, which applies the variable constraints, so zeros held by
`fix_zeros` or `ThresholdPruning` stay exactly zero after every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import validation

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable
    from typing import Sequence
    from typing import Union

    # A Keras loss: a name, a `keras.losses.Loss` or ``(y_true, y_pred) -> values``.
    LossLike = Union[str, keras.losses.Loss, Callable[[Any, Any], Any]]


# What to do on JAX or PyTorch instead of fit_custom.
_DISTRIBUTE_INSTEAD = (
    "On JAX, train with model.fit under keras.distribution (for example "
    "keras.distribution.set_distribution(keras.distribution.DataParallel())); "
    "the DeepHoyer regularizers, ThresholdPruning and fix_zeros work there. "
    "Or run this in a process started with KERAS_BACKEND=tensorflow."
)


def _per_example(loss_fn, y_true, y_pred):
    if isinstance(loss_fn, keras.losses.Loss):
        values = loss_fn.call(y_true, y_pred)  # unreduced
    else:
        values = loss_fn(y_true, y_pred)
    values = tf.cast(values, tf.float32)
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss: LossLike,
    strategy: tf.distribute.Strategy | None = None,
    *,
    jit_compile: bool = False,
) -> Callable[[Any], tf.Tensor]:
    """Returns ``step(batch) -> loss``, one distributed training step.

    ``batch`` is an element ``(x, y)`` of a dataset distributed by
    ``strategy.experimental_distribute_dataset`` (global batches). Each replica
    computes ``sum_i l(y_i, f(x_i)) / B + sum(model.losses) / R`` (``B`` the
    global batch size, ``R`` the replicas in sync), scales it with
    ``optimizer.scale_loss`` (loss scaling under mixed precision), and calls
    ``optimizer.apply``, which all-reduces the gradients and applies the
    variable constraints (the masks of `fix_zeros`). Returns the loss summed
    over replicas: ``mean_i l + sum(model.losses)``, what `fit` reports.

    The variable constraints are read when the step is traced: build a new
    step after `fix_zeros` (`fit_custom` does this by itself).

    Args:
        model: a built Keras 3 model, created under `strategy`'s scope.
        optimizer: a Keras 3 optimizer created under `strategy`'s scope (a
            `keras.optimizers.LossScaleOptimizer` for ``mixed_float16``).
        loss: a Keras loss: name, `keras.losses.Loss` or function
            ``(y_true, y_pred) -> per-example values``.
        strategy: a `tf.distribute.Strategy`; default the model's.
        jit_compile: compile the step with XLA.

    Returns:
        A `tf.function`.

    Example::

        with strategy.scope():
            model = make_model(); optimizer = keras.optimizers.SGD(0.1)
        step = make_train_step(model, optimizer, "mse", strategy)
        for batch in strategy.experimental_distribute_dataset(dataset):
            loss = step(batch)
    """
    backend.require_tensorflow(
        "deephoyer_tf.make_train_step (a tf.distribute train step)",
        _DISTRIBUTE_INSTEAD,
    )
    strategy = strategy or model.distribute_strategy
    loss_fn = keras.losses.get(loss)
    variables = model.trainable_variables
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(variables)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            total = tf.nn.compute_average_loss(_per_example(loss_fn, y, y_pred))
            penalties = [tf.cast(value, tf.float32) for value in model.losses]
            if penalties:
                total += tf.nn.scale_regularization_loss(tf.add_n(penalties))
            scaled = optimizer.scale_loss(total)
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return total

    @tf.function(jit_compile=jit_compile)
    def step(batch):
        x, y = batch
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return step


def _constraints_signature(model):
    return tuple(id(v.constraint) for v in model.trainable_variables)


def fit_custom(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    optimizer: keras.optimizers.Optimizer,
    loss: LossLike,
    epochs: int = 1,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    jit_compile: bool = False,
) -> keras.callbacks.History:
    """Trains a Keras 3 model with `make_train_step`, on any strategy.

    A minimal `fit` for what Keras 3 `fit` cannot run, above all
    `MultiWorkerMirroredStrategy`: each epoch iterates `dataset` (global
    batches) distributed by `strategy`, calling the Keras callbacks' train,
    epoch and batch hooks (so `ThresholdPruning` works: the step is rebuilt
    whenever the kernels' constraints change). Under a ``mixed_float16`` model
    policy the optimizer is wrapped in `keras.optimizers.LossScaleOptimizer`,
    as `compile` does. `BackupAndRestore` is not supported (it relies on
    `fit`'s initial epoch); save weights from a callback instead.

    Args:
        model: a built Keras 3 model, created under `strategy`'s scope.
        dataset: a `tf.data.Dataset` of ``(x, y)`` global batches (use
            ``drop_remainder=True`` with several workers).
        optimizer: a Keras 3 optimizer created under `strategy`'s scope.
        loss: a Keras loss (name, `keras.losses.Loss` or function).
        epochs: int >= 1, the index of the last epoch plus one (as in `fit`).
        initial_epoch: int in ``[0, epochs)``, the epoch to start at (as in
            `fit`: to resume a run; callbacks see the true epoch indices).
        steps_per_epoch: int >= 1 or None (the whole dataset).
        strategy: default the model's (``model.distribute_strategy``).
        callbacks: Keras 3 callbacks.
        jit_compile: compile the step with XLA.

    Returns:
        A `keras.callbacks.History`, as `fit` returns: ``history.history``
        is ``{"loss": [mean loss of each epoch run]}`` and ``history.epoch``
        the epoch indices run.

    Raises:
        TypeError: `model` is not a Keras 3 model.
        TypeError: `epochs`, `initial_epoch` or `steps_per_epoch` is not an int.
        ValueError: `epochs` or `steps_per_epoch` < 1, or `initial_epoch`
            outside ``[0, epochs)``.

    Example (on each worker, with ``TF_CONFIG`` set)::

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = deephoyer_tf.regularize(make_model(), deephoyer_tf.HoyerSquare(1e-4))
            optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        history = deephoyer_tf.fit_custom(
            model, dataset, optimizer=optimizer, loss="sparse_categorical_crossentropy",
            epochs=10, strategy=strategy,
            callbacks=[deephoyer_tf.ThresholdPruning(at_epoch=6, std_ratio=0.5)])
    """
    backend.require_tensorflow("deephoyer_tf.fit_custom (tf.distribute)", _DISTRIBUTE_INSTEAD)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`. Expected a Keras 3 model "
            "(tf_keras models run on any strategy with their own `fit`). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    epochs = validation.check_int(epochs, "epochs", minimum=1)
    initial_epoch = validation.check_int(
        initial_epoch, "initial_epoch", minimum=0, maximum=epochs - 1
    )
    if steps_per_epoch is not None:
        steps_per_epoch = validation.check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
    strategy = strategy or model.distribute_strategy
    if model.dtype_policy.name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        with strategy.scope():
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    distributed = strategy.experimental_distribute_dataset(dataset)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        list(callbacks or []) + [history],
        model=model,
        epochs=epochs,
        steps=steps_per_epoch,
        verbose=0,
    )
    step, signature = None, None
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        total, count = 0.0, 0
        iterator = iter(distributed)
        while steps_per_epoch is None or count < steps_per_epoch:
            if signature != _constraints_signature(model):
                step = make_train_step(
                    model, optimizer, loss, strategy, jit_compile=jit_compile
                )
                signature = _constraints_signature(model)
            try:
                batch = next(iterator)
            except StopIteration:
                break
            callback_list.on_train_batch_begin(count)
            value = float(step(batch))
            callback_list.on_train_batch_end(count, {"loss": value})
            total += value
            count += 1
        logs = {"loss": total / max(count, 1)}
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history
