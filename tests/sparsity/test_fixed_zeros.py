"""fix_zeros / strip_zero_masks: zeros exactly zero after every optimizer step,
stripped and masked models equal, no extra variables, TFMOT workflow on tf_keras."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import zero_mask as masks
from tests.helpers.fixed_zeros import data
from tests.helpers.fixed_zeros import fit
from tests.helpers.fixed_zeros import kernels
from tests.helpers.fixed_zeros import make_pruned

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]
# (flavour, how zeros are fixed): in place in both flavours, or TFMOT's wrapper on tf_keras.
FIXERS = [
    pytest.param(keras, "fix_zeros", id="keras3"),
    pytest.param(tf_keras, "fix_zeros", id="tf_keras"),
    pytest.param(tf_keras, "fix_zeros_tfmot", id="tf_keras-tfmot"),
]


# Learning rates that move every free weight but do not diverge (lr 0.05 with
# momentum drove weights past 1e6 in six steps, and sometimes to inf).
OPTIMIZERS = {
    "sgd_momentum": lambda m: m.optimizers.SGD(0.005, momentum=0.9),
    "adam": lambda m: m.optimizers.Adam(0.01),
    "adamw": lambda m: m.optimizers.AdamW(0.01, weight_decay=0.5),
}


def kernel_layers(module, model):
    """The (inner) layers owning the kernels, by name, for plain or wrapped models."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in ("conv", "fc1", "fc2"):
            found[inner.name] = inner
    return found


def zero_checker(module, model, zeros):
    """A callback recording, after each batch, any held zero that moved."""

    class Check(module.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches, self.moved = 0, []

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            for name, layer in kernel_layers(module, model).items():
                kernel = np.asarray(layer.kernel.numpy())
                if np.any(kernel[zeros[name]] != 0):
                    self.moved.append((self.batches, name))

    return Check()


@pytest.mark.slow
@pytest.mark.parametrize("module, fixer", FIXERS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_zeros_stay_zero_after_every_step(module, fixer, optimizer, tfmot):
    model = make_pruned(module)
    before = kernels(model)
    zeros = {name: k == 0 for name, k in before.items()}
    assert all(0 < z.mean() < 1 for z in zeros.values())
    fixed = getattr(deephoyer_tf, fixer)(model)
    assert (fixed is model) == (fixer == "fix_zeros")
    check = zero_checker(module, fixed, zeros)
    fit(module, fixed, OPTIMIZERS[optimizer](module), [check])
    assert check.batches == 6
    assert check.moved == []
    after = kernels(model)
    for name in before:  # the free weights did train
        assert np.mean(after[name][~zeros[name]] != before[name][~zeros[name]]) > 0.5


@pytest.mark.slow
def test_tfmot_alone_lets_zeros_move_between_steps(tfmot):
    """Why the constraint: TFMOT re-zeroes only at the next forward pass."""
    model = make_pruned(tf_keras)
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    wrapped = deephoyer_tf.fix_zeros_tfmot(model)
    masks.release_zeros(wrapped)  # TFMOT's masks only
    check = zero_checker(tf_keras, wrapped, zeros)
    fit(tf_keras, wrapped, tf_keras.optimizers.Adam(0.05), [check], epochs=1)
    assert len(check.moved) > 0


def test_keras3_in_place_keeps_compiled_state_and_retraces():
    model = make_pruned(keras)
    x, y = data()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # traced without masks
    deephoyer_tf.prune(model, std_ratio=0.6)
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    optimizer, weights = model.optimizer, len(model.weights)
    assert deephoyer_tf.fix_zeros(model) is model
    assert model.optimizer is optimizer and model.optimizer.iterations.numpy() == 3
    assert len(model.weights) == weights  # masks are not layer weights
    check = zero_checker(keras, model, zeros)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[check])
    assert check.batches == 3 and check.moved == []


def test_keras3_jit_compile():
    model = make_pruned(keras)
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    deephoyer_tf.fix_zeros(model)
    check = zero_checker(keras, model, zeros)
    fit(keras, model, keras.optimizers.SGD(0.05, momentum=0.9), [check], jit_compile=True)
    assert check.batches == 6 and check.moved == []


def test_existing_constraint_is_composed_and_restored():
    non_neg = keras.constraints.NonNeg()
    model = make_pruned(keras, kernel_constraint=non_neg)
    fc1 = model.get_layer("fc1")
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    deephoyer_tf.fix_zeros(model)
    assert fc1.kernel.constraint.previous is non_neg
    check = zero_checker(keras, model, zeros)
    fit(keras, model, keras.optimizers.SGD(0.05), [check], epochs=1)
    assert check.moved == [] and np.all(fc1.kernel.numpy() >= 0)
    deephoyer_tf.strip_zero_masks(model)
    assert fc1.kernel.constraint is non_neg
    assert model.get_layer("fc2").kernel.constraint is None


def test_fix_zeros_twice_refreshes_instead_of_nesting():
    model = make_pruned(keras)
    deephoyer_tf.fix_zeros(model)
    first = model.get_layer("fc1").kernel.constraint
    deephoyer_tf.prune(model, threshold=1.0)
    deephoyer_tf.fix_zeros(model)
    kernel = model.get_layer("fc1").kernel
    assert kernel.constraint is first and first.previous is None
    np.testing.assert_array_equal(masks.mask_of(kernel), (kernel.numpy() != 0).astype("float32"))


@pytest.mark.parametrize("module, fixer", FIXERS)
def test_strip_gives_plain_model_with_same_outputs(module, fixer, tfmot):
    model = make_pruned(module)
    plain_types = [type(layer) for layer in model.layers]
    plain_variables = len(model.variables)
    fixed = getattr(deephoyer_tf, fixer)(model)
    fit(module, fixed, module.optimizers.Adam(0.01), [], epochs=1)
    x, _ = data(seed=1, n=8)
    masked_out = fixed.predict(x, verbose=0)
    stripped = deephoyer_tf.strip_zero_masks(fixed)
    assert [type(layer) for layer in stripped.layers] == plain_types
    assert len(stripped.variables) == plain_variables
    for layer in stripped.layers:
        for variable in layer.trainable_variables:
            assert not masks.is_fixed(variable)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), masked_out)
    for plain_layer, fixed_layer in zip(stripped.layers, fixed.layers):
        for got, want in zip(plain_layer.get_weights(), fixed_layer.get_weights()):
            np.testing.assert_array_equal(got, want)


def test_keras3_checkpoint_loads_into_a_fresh_model(tmp_path):
    model = make_pruned(keras)
    deephoyer_tf.fix_zeros(model)
    fit(keras, model, keras.optimizers.Adam(0.01), [], epochs=1)
    path = str(tmp_path / "fixed.weights.h5")
    model.save_weights(path)
    fresh = make_pruned(keras, seed=5)
    fresh.load_weights(path)
    for got, want in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    # The masks are the zero pattern: fix_zeros on the restored model rebuilds them.
    deephoyer_tf.fix_zeros(fresh)
    for layer in ("conv", "fc1", "fc2"):
        np.testing.assert_array_equal(
            masks.mask_of(fresh.get_layer(layer).kernel),
            masks.mask_of(model.get_layer(layer).kernel),
        )


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tfmot_save_load_under_prune_scope_and_strip_pruning(tfmot, tmp_path, suffix):
    model = make_pruned(tf_keras)
    wrapped = deephoyer_tf.fix_zeros_tfmot(model)
    fit(tf_keras, wrapped, tf_keras.optimizers.Adam(0.01), [], epochs=1)
    path = str(tmp_path / f"wrapped{suffix}")
    wrapped.save(path)
    with tfmot.sparsity.keras.prune_scope():
        loaded = tf_keras.models.load_model(path)
    x, _ = data(seed=1, n=8)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0))
    stripped = tfmot.sparsity.keras.strip_pruning(loaded)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Flatten", "Dense", "Dense"]
    for got, want in zip(stripped.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    # A loaded wrapped model is held again by fix_zeros_tfmot (keeps TFMOT's masks).
    again = deephoyer_tf.fix_zeros_tfmot(loaded)
    assert again is not loaded
    assert all(masks.is_fixed(layer.kernel) for layer in kernel_layers(tf_keras, again).values())


def test_errors():
    with pytest.raises(TypeError, match=r"Invalid type for argument `model`\. .* Received: model='m' of type str"):
        deephoyer_tf.fix_zeros("m")
    with pytest.raises(TypeError, match=r"Invalid type for argument `model`"):
        deephoyer_tf.strip_zero_masks(None)
    with pytest.raises(ValueError, match=r"Invalid value for argument `layer_types`\. .* Received: \['Pool'\]"):
        deephoyer_tf.fix_zeros(make_pruned(keras), layer_types=["Pool"])
    with pytest.raises(
        TypeError,
        match=r"Expected a tf_keras model: TFMOT 0\.8 wraps tf_keras \(Keras 2\) models only\. "
        r"Received: a Keras 3 model '\w+'",
    ):
        deephoyer_tf.fix_zeros_tfmot(make_pruned(keras))


@pytest.mark.slow
def test_pruning_preserving_quantization_after_strip(tfmot):
    model = make_pruned(tf_keras)
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    plain = deephoyer_tf.strip_zero_masks(deephoyer_tf.fix_zeros_tfmot(model))
    quantized = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(plain),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(),
    )
    quantized.compile(optimizer=tf_keras.optimizers.Adam(0.05), loss="mse")
    x, y = data()
    quantized.fit(x, y, batch_size=16, epochs=1, verbose=0)
    trained = {v.name.split("/")[0]: v.numpy() for v in quantized.trainable_weights if "kernel" in v.name}
    assert sorted(trained) == ["conv", "fc1", "fc2"]
    for name, kernel in trained.items():
        np.testing.assert_array_equal(kernel == 0, zeros[name])


def test_tfmot_path_turns_an_inf_at_a_masked_position_into_zero_not_nan(tfmot):
    """Re-zeroing with TFMOT's mask is a select: inf * 0 would give NaN."""
    wrapped = deephoyer_tf.fix_zeros_tfmot(make_pruned(tf_keras))
    layer = wrapped.get_layer("prune_low_magnitude_fc1").layer
    kernel = layer.kernel.numpy()
    held = np.argwhere(kernel == 0)[0]
    kernel[tuple(held)] = np.inf  # a diverged value where TFMOT's mask is 0
    layer.kernel.assign(kernel)
    deephoyer_tf.fix_zeros(wrapped)  # refreshes the masks and re-zeroes in place
    after = layer.kernel.numpy()
    assert np.isfinite(after).all()
    assert after[tuple(held)] == 0.0
