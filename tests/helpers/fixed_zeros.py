"""Helpers shared by the zero-holding tests (fix_zeros, ZeroMask, the TFMOT wrapper)."""

import numpy as np

import deephoyer_tf


def is_wrapped(model):
    return any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers)


def data(seed=0, n=48):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    return x, rng.normal(size=(n, 3)).astype("float32")


def make_pruned(module, seed=0, **dense_kwargs):
    layers = module.layers
    model = module.Sequential(
        [
            module.Input((6, 6, 1)),
            layers.Conv2D(4, 3, activation="relu", name="conv"),
            layers.Flatten(name="flat"),
            layers.Dense(8, activation="relu", name="fc1", **dense_kwargs),
            layers.Dense(3, name="fc2"),
        ]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    deephoyer_tf.prune(model, std_ratio=0.6)
    return model


def kernels(model):
    return {
        name: np.asarray(model.get_layer(name).kernel.numpy()) for name in ("conv", "fc1", "fc2")
    }


def fit(module, model, optimizer, callbacks, epochs=2, jit_compile=False):
    if is_wrapped(model):
        import tensorflow_model_optimization as tfmot  # the tfmot fixture is active

        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()] + callbacks
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks)
