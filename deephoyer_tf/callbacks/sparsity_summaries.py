"""`SparsitySummaries`: per-layer sparsity in TensorBoard while a model trains."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation
from deephoyer_tf.callbacks.base import Callback
from deephoyer_tf.regularizers import measures
from deephoyer_tf.structure import attention
from deephoyer_tf.structure import graph as graph_lib
from deephoyer_tf.structure import liveness
from deephoyer_tf.structure import registry
from deephoyer_tf.structure import report as report_lib

if TYPE_CHECKING:
    import os
    from typing import Any

# What TensorBoard's scalar plugin writes with each value.
_SCALAR_METADATA = private_api.scalar_summary_metadata()


class SparsitySummaries(Callback):
    """Writes the sparsity of each kernel layer to TensorBoard during training.

    At the end of every epoch (or every `update_freq` training batches) it
    writes, with `tf.summary`, for each kernel layer ``L`` of
    `deephoyer_tf.sparsity_report` (Dense, Conv, ...; ``outer/inner`` for a
    layer of a nested model):

    * ``sparsity/L/density``: nonzero kernel weights / kernel weights;
    * ``sparsity/L/live_inputs``, ``sparsity/L/live_outputs``: live units
      (on a path of nonzero weights from the inputs to the outputs);
    * ``sparsity/L/hoyer_measure``: Hoyer's measure of the kernel,
      ``S(W) = (sqrt(N) - ||W||_1 / ||W||_2) / (sqrt(N) - 1)`` (eq. 1), from
      0 (all weights equal in magnitude) to 1 (a single nonzero weight);
      all the kernels of a layer with several (SeparableConv) together;
    * ``sparsity/L/penalty``: the layer's own kernel regularizer evaluated on
      its kernel (``strength * H_S(W)`` for `HoyerSquare`), summed over its
      kernels; 0 for a kernel without regularizer;

    and for the whole model:

    * ``sparsity/total_density``, ``sparsity/nonzero_weights``,
      ``sparsity/macs`` (MACs per example over live units);
    * ``regularization/total``: the sum of ``model.losses`` that can be
      evaluated between batches, i.e. the weight penalties of every
      regularizer (DeepHoyer or not, biases included). Activity regularization
      losses depend on the batch and are left out.

    The step is the epoch index (``update_freq="epoch"``) or the number of
    training batches seen since the first `fit` (integer `update_freq`). A new
    event file is opened in `log_dir` by each `fit`; point TensorBoard at the
    same folder as `keras.callbacks.TensorBoard`'s to see both (writing needs
    TensorFlow only; TensorBoard is needed to look)::

        tensorboard --logdir logs

    Works with Keras 3 and tf_keras `fit` and under `tf.distribute`
    strategies (the values are read outside the replicas).

    Args:
        log_dir: folder of the event files (created if missing).
        update_freq: ``"epoch"`` (default) writes at each epoch end; an int
            ``N >= 1`` writes every `N` training batches instead.

    Raises:
        TypeError: `log_dir` is not a path, or `update_freq` is neither
            ``"epoch"`` nor an int.
        ValueError: `update_freq` is an int < 1.

    Example::

        model.fit(x, y, epochs=20, callbacks=[
            deephoyer_tf.SparsitySummaries("logs/sparsity")])
        # A LeNet-300-100 kernel with 6,200 of 266,200 weights nonzero shows
        # sparsity/total_density = 6200 / 266200 = 0.0233.
    """

    def __init__(self, log_dir: str | os.PathLike, update_freq: str | int = "epoch") -> None:
        super().__init__()
        backend.require_tensorflow(
            "deephoyer_tf.SparsitySummaries (TensorBoard event files, written with tf.summary)",
            "Its values are available on every backend: "
            "deephoyer_tf.callbacks.sparsity_summaries.scalars(model) returns them as a "
            "dict, and deephoyer_tf.sparsity_report(model) prints them. Or run in a "
            "process started with KERAS_BACKEND=tensorflow.",
        )
        log_dir = validation.check_path(log_dir, "log_dir")
        if update_freq != "epoch":
            update_freq = validation.check_int(
                update_freq, "update_freq", minimum=1, expected='"epoch" or an int >= 1'
            )
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    # --- Keras hooks -------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.update_freq == "epoch":
            return
        self._batches += 1
        if self._batches % self.update_freq == 0:
            self.write(self._batches)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.update_freq == "epoch":
            self.write(epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def wants_train_batch_hooks(self) -> bool:
        return self.update_freq != "epoch"

    # --- summaries ---------------------------------------------------------

    def write(self, step: int) -> dict[str, float]:
        """Writes every summary of `self.model` at `step` and flushes.

        Called by the hooks during `fit`; outside `fit`, call
        ``callback.set_model(model)`` first.

        Returns:
            dict ``{tag: value}`` of what was written.
        """
        values = scalars(self.model)
        writer = self._writer or tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            for tag, value in values.items():
                tf.summary.write(
                    tag, tf.constant(value, tf.float32), step=int(step),
                    metadata=_SCALAR_METADATA,
                )
        writer.flush()
        if writer is not self._writer:
            writer.close()
        return values


def scalars(model):
    """The values `SparsitySummaries` writes, as a dict ``{tag: float}``.

    Args:
        model: a built Keras model (Keras 3 or tf_keras).

    Returns:
        dict from tag (``"sparsity/fc1/density"``...) to a Python float, per
        layer in data-flow order, then the totals.
    """
    report = report_lib.sparsity_report(model)
    layers = _kernel_layers(model)
    values = {}
    for row in report.layers:
        prefix = f"sparsity/{row.name}/"
        if prefix + "density" in values:  # a shared layer: once
            continue
        layer = layers[row.name]
        kernels, penalty = _kernels_and_penalty(layer)
        flat = np.concatenate([k.reshape(-1) for k in kernels])
        values[prefix + "density"] = float(row.density)
        values[prefix + "live_inputs"] = float(row.live_inputs)
        values[prefix + "live_outputs"] = float(row.live_outputs)
        values[prefix + "hoyer_measure"] = float(measures.hoyer_measure(flat))
        values[prefix + "penalty"] = penalty
    values["sparsity/total_density"] = float(report.density)
    values["sparsity/nonzero_weights"] = float(report.nonzero_weights)
    values["sparsity/macs"] = float(report.macs)
    values["regularization/total"] = _regularization_total(model)
    return values


def _kernel_layers(model):
    """{report row name: layer} for the kernel layers of `model`."""
    graph = graph_lib.build_graph(model)
    if graph is not None:
        # kernel ops, and kernel layers the graph keeps whole (attention)
        return {op.name: op.layer for op in graph.ops if registry.layer_type(op.layer) is not None}
    return {layer.name: layer for layer in flavours.flat_layers(model)}


def _kernels_and_penalty(layer):
    """(kernel arrays, sum of the kernel regularizers on them) of `layer`."""
    inner = registry.unwrap(layer)
    kernels, penalty = [], 0.0
    for spec in registry.kernel_specs(inner):
        values = liveness.kernel_values(layer, spec)
        kernels.append(values)
        variable = registry.kernel_variable(inner, spec)
        regularizer = getattr(variable, "regularizer", None) or getattr(
            inner, spec.regularizer_attribute, None
        )
        if regularizer is None and attention.is_attention(inner):
            regularizer = private_api.attention_regularizer(inner)
        if regularizer is not None:
            # the variable itself: penalties spanning several kernels recognise it
            penalty += float(keras.ops.convert_to_numpy(regularizer(variable)))
    return kernels, penalty


def _regularization_total(model):
    total = 0.0
    for loss in model.losses:
        if not backend.is_tensorflow() and not flavours.is_tf_keras(model):
            total += float(keras.ops.convert_to_numpy(loss))  # eager on JAX and PyTorch
            continue
        if tf.is_symbolic_tensor(loss) or not hasattr(loss, "numpy"):
            continue  # a loss of the last call's graph (activity regularizers)
        total += float(loss.numpy())
    return total
