"""Training: a custom loop for Keras 3 models on any `tf.distribute` strategy."""

from deephoyer_tf.training.custom_loop import fit_custom
from deephoyer_tf.training.custom_loop import make_train_step

__all__ = ["fit_custom", "make_train_step"]
