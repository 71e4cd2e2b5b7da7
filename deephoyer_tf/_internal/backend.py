"""Which backend Keras 3 runs on, and what that means for deephoyer_tf.

Keras 3 computes with TensorFlow, JAX or PyTorch, chosen by ``KERAS_BACKEND``
before `keras` is first imported. The regularizers, `prune`, `fix_zeros`,
`sparsity_report`, `shrink`, `ThresholdPruning` and `StrengthSchedule`
compute with `keras.ops` and work on every backend; TFLite export,
`fit_custom` (`tf.distribute`), the tf_keras/TFMOT path and TensorBoard
summaries are TensorFlow programs and call `require_tensorflow` first.

State in the compiled step. TensorFlow reads a variable inside its compiled
train step at every step, and PyTorch runs eagerly, so assigning a strength or
a mask between steps takes effect there. JAX traces the step as a pure
function of the model's state: a variable the model does not track is read
once, when the step is traced, and frozen into it. `track_state` makes such a
variable (a regularizer's strength) part of a layer's non-weight state on
JAX, so that the compiled step takes it as an input; variables read by the
optimizer's constraints (the zero masks) are frozen on JAX whatever the
model tracks, so changing them goes with `sparsity.kernels.retrace`.

This module imports nothing from deephoyer_tf but `_internal.private_api`.
"""

from __future__ import annotations

import os

import keras

from deephoyer_tf._internal import private_api

_WHAT_TO_DO = (
    "Run this step in a process started with KERAS_BACKEND=tensorflow (set "
    "before keras is imported). A model saved as .keras (model.save('model.keras')) "
    "is backend-neutral: train on any backend, then load it there, for example "
    "`KERAS_BACKEND=tensorflow deephoyer-tf export model.keras model.tflite`."
)


class BackendError(RuntimeError):
    """A TensorFlow-only part of deephoyer_tf was called on another Keras backend."""


def name() -> str:
    """The backend of Keras 3: ``"tensorflow"``, ``"jax"``, ``"torch"`` or ``"numpy"``."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    """True when Keras 3 runs on TensorFlow (tf_keras always does)."""
    return name() == "tensorflow"


def is_jax() -> bool:
    """True when Keras 3 runs on JAX."""
    return name() == "jax"


def to_tensor(x):
    """`x` (a tensor, a variable of either Keras flavour, an array) as a backend tensor.

    On TensorFlow, `tf.convert_to_tensor`: it reads a variable (a Keras 3
    variable's `.value` would be the `tf.Variable` itself, which a
    `tf.custom_gradient` function must not read) and accepts tf_keras'
    variables; elsewhere `keras.ops.convert_to_tensor`.
    """
    if is_tensorflow():
        import tensorflow as tf

        return tf.convert_to_tensor(x)
    return keras.ops.convert_to_tensor(x)


def require_tensorflow(what: str, instead: str | None = None) -> None:
    """Raises `BackendError` unless Keras runs on TensorFlow.

    Args:
        what: the function or feature, as the user knows it
            (``"deephoyer_tf.export_tflite"``).
        instead: what to do instead, if there is something better to say than
            "use the TensorFlow backend".

    Raises:
        BackendError: Keras runs on another backend; the message names the
            backend, `what`, and what to do.
    """
    backend = name()
    if backend == "tensorflow":
        return
    setting = os.environ.get("KERAS_BACKEND")
    origin = (
        f"KERAS_BACKEND={setting}" if setting else "from ~/.keras/keras.json"
    )
    raise BackendError(
        f"{what} needs the TensorFlow backend of Keras, but Keras runs on the "
        f"{backend!r} backend here ({origin}). {instead or _WHAT_TO_DO}"
    )


def retrace(model) -> None:
    """Makes the next `fit` step (or the current one, mid-fit) retrace.

    Keras 3 and tf_keras both call ``model.train_function`` at each step, so a
    fresh function built by ``make_train_function(force=True)`` takes effect at
    the next batch, even from a callback inside `fit`. On JAX the test
    function is rebuilt too: under a `keras.distribution` its output layout
    lists the model's state, which `track_state` may have grown.
    """
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    if is_jax() and getattr(model, "test_function", None) is not None:
        model.make_test_function(force=True)


def is_traced(value) -> bool:
    """True when `value` is a JAX tracer (a function is being traced by `jax.jit`)."""
    if not is_jax():
        return False
    import jax

    return isinstance(value, jax.core.Tracer)


def track_state(layer, variables) -> bool:
    """Makes `variables` part of `layer`'s non-weight state, on JAX only.

    On JAX, `fit` passes the model's variables (`model.non_trainable_variables`
    among them) into its compiled step; a variable outside them would be
    frozen at its value when the step was traced. The variables are added as
    state that is not a weight: they are not in `layer.weights`, not in
    `get_weights`, not saved; `layer.non_trainable_variables` lists them.
    A variable already tracked by `layer` is not added again. Nothing is done
    on the other backends, which read variables at every step.

    Returns:
        True when a variable was added (a compiled step of a model holding
        `layer` must then be rebuilt: `retrace`).
    """
    if not is_jax():
        return False
    added = False
    for variable in variables:
        added = private_api.track_non_weight_state(layer, variable) or added
    return added
