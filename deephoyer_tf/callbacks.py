"""`ThresholdPruning`: the three DeepHoyer stages in one `fit`."""

import numbers


from deephoyer_tf import _compat
from deephoyer_tf import masks
from deephoyer_tf import pruning
from deephoyer_tf import regularizers
from deephoyer_tf.report import sparsity_report


class ThresholdPruning(_compat.Callback):
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
        verbose: 1 prints the sparsity report when pruning (default), 0 is
            silent.

    Attributes:
        report: the sparsity report at the start of fine-tuning (None before).
        active: True once zeros are held fixed.

    Example::

        model.fit(x, y, epochs=30, callbacks=[
            deephoyer_tf.ThresholdPruning(at_epoch=20, std_ratio=0.5)])
    """

    def __init__(self, at_epoch, std_ratio=None, threshold=None, verbose=1):
        super().__init__()
        if isinstance(at_epoch, bool) or not isinstance(at_epoch, numbers.Integral):
            raise TypeError(
                "Invalid type for argument `at_epoch`. Expected an int. "
                f"Received: at_epoch={at_epoch!r} of type {type(at_epoch).__name__}"
            )
        if at_epoch < 0:
            raise ValueError(
                "Invalid value for argument `at_epoch`. Expected an int >= 0. "
                f"Received: at_epoch={at_epoch}"
            )
        if verbose not in (0, 1):
            raise ValueError(
                "Invalid value for argument `verbose`. Expected 0 or 1. "
                f"Received: verbose={verbose!r}"
            )
        pruning.check_rule(std_ratio, threshold)
        self.at_epoch = int(at_epoch)
        self.std_ratio = std_ratio
        self.threshold = threshold
        self.verbose = verbose
        self.report = None
        self.active = False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.at_epoch:
            return
        model = self.model
        if self.active:
            # Again at every epoch: a strength schedule earlier in the
            # callback list may have set the strengths since.
            _switch_off(model)
            return
        if epoch == self.at_epoch:
            self.report = pruning.prune(
                model, std_ratio=self.std_ratio, threshold=self.threshold
            )
            what = f"pruned at the start of epoch {epoch + 1}"
        else:
            self.report = sparsity_report(model)
            what = f"resumed at epoch {epoch + 1}: existing zeros held, not pruned again"
        _switch_off(model)
        masks.hold_zeros(model)  # also makes the train step retrace
        self.active = True
        if self.verbose:
            print(f"ThresholdPruning: {what}; DeepHoyer penalties off.")
            if self.report is not None:
                print(self.report)


def _switch_off(model):
    for variable in regularizers.strength_variables(model):
        variable.assign(0.0)
