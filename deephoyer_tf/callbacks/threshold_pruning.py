"""`ThresholdPruning`: the three DeepHoyer stages in one `fit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deephoyer_tf._internal import validation
from deephoyer_tf.callbacks.base import Callback
from deephoyer_tf.regularizers.strengths import strength_variables
from deephoyer_tf.sparsity import thresholding as prune_lib
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.report import sparsity_report

if TYPE_CHECKING:
    from typing import Any
    from typing import Mapping
    from typing import Sequence


class ThresholdPruning(Callback):
    """Prunes at the start of epoch `at_epoch`, then fine-tunes with zeros fixed.

    Runs the paper's pipeline (section 4.3) in one ``model.fit(epochs=...)``:
    epochs ``0 .. at_epoch - 1`` train with the DeepHoyer regularizers; at the
    start of epoch `at_epoch` the callback

    1. prunes: ``deephoyer_tf.prune(model, std_ratio, threshold)`` sets every
       kernel weight with ``|w| < t`` to 0 (``t = std_ratio * std(W)`` or
       ``t = threshold``, per layer if dicts);
    2. switches the penalties off: every strength variable of the DeepHoyer
       regularizers of the model is set to 0
       (`deephoyer_tf.strength_variables`), again at the start of every later
       epoch (so put it after any strength schedule in the callback list);
    3. holds the zeros fixed for the rest of training, with the same in-place
       masking constraints as `deephoyer_tf.fix_zeros` on Keras 3 (also on
       tf_keras: a callback cannot swap the model), and makes `fit` retrace its
       train step.

    Resuming. If training starts (or resumes, e.g. with
    `keras.callbacks.BackupAndRestore`) at an epoch after `at_epoch`, the
    restored weights already hold the zeros: the callback does not prune again,
    it switches the penalties off and fixes the existing zeros. With
    ``BackupAndRestore(save_freq=<int>)``, a backup written during epoch
    `at_epoch` itself resumes at the start of that epoch, and pruning runs again
    on already-pruned weights: harmless with `threshold`; with `std_ratio` the
    standard deviations are then those of the pruned kernels. The default
    ``save_freq="epoch"`` has no such case.

    The masks stay on the model after `fit`; `deephoyer_tf.strip_zero_masks`
    removes them. Works with Keras 3 and tf_keras `fit`, under
    `tf.distribute` strategies, with ``jit_compile=True``, and with
    `deephoyer_tf.fit_custom`. (Keras 3 `fit` with both `MirroredStrategy` over
    logical CPU devices and ``jit_compile=True`` fails in Keras itself, with or
    without this callback: TF 2.21, Keras 3.15.)

    Args:
        at_epoch: int >= 0, the (0-based) epoch at whose start to prune.
        std_ratio: float >= 0 or dict {layer name: float}; see `prune`.
        threshold: float >= 0 or dict {layer name: float}; see `prune`.
            Exactly one of `std_ratio` and `threshold`.
        biases: also prune the biases of the same layers (see `prune`).
        layer_types: layer types to prune and hold, as for `prune`.
        verbose: 0 (default) is silent; 1 prints the sparsity report when
            pruning, through Keras' messaging.

    Attributes:
        report: the sparsity report at the start of fine-tuning (None before).
        active: True once zeros are held fixed.

    Example::

        model.fit(x, y, epochs=30, callbacks=[
            deephoyer_tf.ThresholdPruning(at_epoch=20, std_ratio=0.5)])
    """

    def __init__(
        self,
        at_epoch: int,
        std_ratio: float | Mapping[str, float] | None = None,
        threshold: float | Mapping[str, float] | None = None,
        *,
        biases: bool = False,
        layer_types: Sequence[str] | str | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.at_epoch = validation.check_int(at_epoch, "at_epoch", minimum=0)
        prune_lib.check_rule(std_ratio, threshold)
        self.std_ratio = std_ratio
        self.threshold = threshold
        self.biases = validation.check_bool(biases, "biases")
        registry.check_layer_types(layer_types)  # validated now, resolved when pruning
        self.layer_types = layer_types
        self.report = None
        self.active = False
        self._for_model = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._for_model is not self.model:
            # A new model (another run, a search trial): start from scratch.
            self._for_model = self.model
            self.report = None
            self.active = False
        if not self.active:
            # What `prune` would refuse (a channels-first layer, a dict naming
            # no layer) fails now, before any epoch is trained.
            prune_lib.check_prunable(self.model, self.std_ratio, self.threshold, biases=self.biases,
                                     layer_types=self.layer_types)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch < self.at_epoch:
            return
        model = self.model
        if self.active:
            # Again at every epoch: a strength schedule earlier in the
            # callback list may have set the strengths since.
            _switch_off(model)
            return
        if epoch == self.at_epoch:
            self.report = prune_lib.prune(
                model,
                std_ratio=self.std_ratio,
                threshold=self.threshold,
                biases=self.biases,
                layer_types=self.layer_types,
            )
            what = f"pruned at the start of epoch {epoch + 1}"
        else:
            self.report = sparsity_report(model)
            what = f"resumed at epoch {epoch + 1}: existing zeros held, not pruned again"
        _switch_off(model)
        zero_mask.hold_zeros(model, self.layer_types)  # also makes the train step retrace
        self.active = True
        self._message(f"ThresholdPruning: {what}; DeepHoyer penalties off.\n{self.report}")


def _switch_off(model):
    for variable in strength_variables(model):
        variable.assign(0.0)
