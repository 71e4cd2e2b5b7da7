"""The base of deephoyer_tf's callbacks: one class for Keras 3 and tf_keras `fit`."""

from __future__ import annotations

import keras

from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation


class Callback(private_api.TfKerasBatchHooks, keras.callbacks.Callback):
    """A Keras 3 callback that tf_keras's `fit` accepts too.

    Args:
        verbose: 0 (default) is silent; 1 prints through Keras' own messaging
            (stdout, or absl logging after
            ``keras.utils.disable_interactive_logging()``).
    """

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = validation.check_verbose(verbose)

    def _message(self, text):
        if self.verbose:
            private_api.print_msg(text)
