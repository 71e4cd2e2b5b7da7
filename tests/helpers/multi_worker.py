"""One worker of the two-process MultiWorkerMirroredStrategy test.

Run by tests/test_distributed.py as ``python _multi_worker.py OUT_DIR`` with
``TF_CONFIG`` set. Trains the same tiny regularized model twice on the same
strategy, each run going through the three stages (HoyerSquare training, then
`ThresholdPruning`, then fine-tuning with zeros held):

* tf_keras: ``model.fit``;
* Keras 3: ``deephoyer_tf.fit_custom`` (Keras 3 ``fit`` does not support the
  strategy).

After every batch of the fine-tuning epochs a callback records whether a
weight pruned at the start of fine-tuning became nonzero. Writes
``OUT_DIR/worker<index>.npz`` with the final kernels, losses and that flag.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import deephoyer_tf  # noqa: E402

AT_EPOCH, EPOCHS, GLOBAL_BATCH = 1, 3, 16


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    return x, y


def watcher(base, model, pruner):
    """A callback (of class `base`'s flavour) checking the held zeros per batch."""

    class Watch(base):
        def __init__(self):
            super().__init__()
            self.zeros = None
            self.moved = False

        def on_epoch_begin(self, epoch, logs=None):
            # Runs after `pruner` (earlier in the callback list).
            if pruner.active and self.zeros is None:
                self.zeros = [np.asarray(k.numpy()) == 0 for k in kernels_of(model)]

        def on_train_batch_end(self, batch, logs=None):
            if self.zeros is not None:
                kernels = [np.asarray(k.numpy()) for k in kernels_of(model)]
                self.moved |= any(np.any(k[z] != 0) for k, z in zip(kernels, self.zeros))

    return Watch()


def kernels_of(model):
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


def make(keras_module, strategy):
    with strategy.scope():
        model = keras_module.Sequential(
            [
                keras_module.Input((6,)),
                keras_module.layers.Dense(
                    8, activation="tanh",
                    kernel_regularizer=deephoyer_tf.HoyerSquare(1e-3),
                    kernel_initializer=keras_module.initializers.GlorotUniform(seed=1),
                ),
                keras_module.layers.Dense(
                    1, kernel_initializer=keras_module.initializers.GlorotUniform(seed=2)
                ),
            ]
        )
        optimizer = keras_module.optimizers.SGD(0.05, momentum=0.9)
    return model, optimizer


def main(out_dir):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data()
    results = {}

    import tf_keras

    model, optimizer = make(tf_keras, strategy)
    with strategy.scope():
        model.compile(optimizer=optimizer, loss="mse")
    pruner = deephoyer_tf.ThresholdPruning(AT_EPOCH, std_ratio=0.5, verbose=0)
    watch = watcher(tf_keras.callbacks.Callback, model, pruner)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    history = model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[pruner, watch])
    results["tf_keras_loss"] = np.array(history.history["loss"])
    results["tf_keras_moved"] = np.array(watch.moved)
    results["tf_keras_zeros"] = np.array(sum(z.sum() for z in watch.zeros))
    for i, k in enumerate(kernels_of(model)):
        results[f"tf_keras_kernel{i}"] = np.asarray(k.numpy())

    import keras

    model, optimizer = make(keras, strategy)
    pruner = deephoyer_tf.ThresholdPruning(AT_EPOCH, std_ratio=0.5, verbose=0)
    watch = watcher(keras.callbacks.Callback, model, pruner)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)
    history = deephoyer_tf.fit_custom(
        model, dataset, optimizer=optimizer, loss="mse", epochs=EPOCHS,
        strategy=strategy, callbacks=[pruner, watch],
    )
    results["keras_loss"] = np.array(history.history["loss"])
    results["keras_moved"] = np.array(watch.moved)
    results["keras_zeros"] = np.array(sum(z.sum() for z in watch.zeros))
    for i, k in enumerate(kernels_of(model)):
        results[f"keras_kernel{i}"] = np.asarray(k.numpy())
    np.savez(os.path.join(out_dir, f"worker{index}.npz"), **results)


if __name__ == "__main__":
    main(sys.argv[1])
