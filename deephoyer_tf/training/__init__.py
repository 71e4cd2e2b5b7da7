"""Training: a custom loop for Keras 3 models on any `tf.distribute` strategy; crash-safe `fit`.

* `custom_loop`: `fit_custom`, `make_train_step`.
* `resumable`: `fit_resumable` (per-epoch backups renamed into place whole,
  checked on resume), `EpochBackup`.
"""

from deephoyer_tf.training.custom_loop import fit_custom
from deephoyer_tf.training.custom_loop import make_train_step

__all__ = ["fit_custom", "make_train_step"]
