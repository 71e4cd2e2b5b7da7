"""The layer registry: keyed by class, subclasses match, one call to add a custom layer."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import registry


@keras.saving.register_keras_serializable(package="deephoyer_tf_tests")
class ScaledDense(keras.layers.Layer):
    """``y = (x @ W) * s + b``: a custom kernel layer with a per-output scale."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.w_regularizer = None

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1], self.units), name="w", regularizer=self.w_regularizer
        )
        self.s = self.add_weight(shape=(self.units,), initializer="ones", name="s")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.s + self.b

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def cut_scaled_dense(layer, cut):
    keep_in, keep_out = cut.keep_inputs[0], cut.keep_outputs[0]
    w, s, b = layer.get_weights()
    b = b[keep_out]
    if cut.bias_delta is not None:
        b = b + cut.bias_delta
    config = {**layer.get_config(), "units": int(keep_out.sum())}
    return config, [w[keep_in][:, keep_out], s[keep_out], b]


def fold_scaled_dense(layer, x, kernel):
    """Constant inputs reach the outputs through ``W * s``."""
    return deephoyer_tf.structure.fold_dense(layer, x, kernel * layer.s.numpy()[None, :])


@pytest.fixture
def scaled_dense():
    # Registering the regularizer attribute the layer reads in build().
    entry = deephoyer_tf.register_layer(
        ScaledDense,
        kernels=[deephoyer_tf.KernelSpec("w", "w_regularizer", "in_out")],
        cutter=cut_scaled_dense,
        fold=fold_scaled_dense,
    )
    yield entry
    deephoyer_tf.unregister_layer(ScaledDense)


def _model():
    inp = keras.Input((12,))
    h = ScaledDense(8, name="custom")(inp)
    h = keras.layers.ReLU(name="relu")(h)
    out = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_entries_are_keyed_by_class_and_subclasses_match():
    class MyDense(keras.layers.Dense):
        pass

    assert registry.entry_for(keras.layers.Dense(2)).layer_class is keras.layers.Dense
    assert registry.entry_for(MyDense(2)).name == "Dense"
    assert registry.entry_for(tf_keras.layers.Dense(2)).layer_class is tf_keras.layers.Dense
    # tf_keras' Conv2DTranspose subclasses its Conv2D: the nearest entry wins.
    assert registry.entry_for(tf_keras.layers.Conv2DTranspose(2, 3)).kernels[0].layout == "out_in"
    assert registry.entry_for(keras.layers.LSTM(2)) is None
    assert registry.layer_type(keras.layers.ReLU()) is None
    assert registry.entry_for(keras.layers.ReLU()).kind == "channelwise"
    spec = registry.entry_for(keras.layers.SeparableConv2D(2, 3)).kernels[0]
    assert (spec.layout, spec.input_axes, spec.output_axes) == ("depthwise", (-2,), (-2, -1))
    assert registry.default_types() == [
        "Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense", "MultiHeadAttention"
    ]


def test_register_layer_errors():
    with pytest.raises(TypeError, match=r"Invalid type for argument `layer_class`\. Expected a Keras layer class .* Received: layer_class=<class 'int'>"):
        deephoyer_tf.register_layer(int, kernels=[deephoyer_tf.KernelSpec("w")])
    with pytest.raises(TypeError, match=r"Invalid type for argument `kernels`\. Expected a list of deephoyer_tf\.KernelSpec\. Received: 'w' of type str"):
        deephoyer_tf.register_layer(ScaledDense, kernels=["w"])
    with pytest.raises(ValueError, match=r"register_layer\(ScaledDense\): give `kernels` for a layer with kernels, or `kind`"):
        deephoyer_tf.register_layer(ScaledDense)
    with pytest.raises(ValueError, match=r"Invalid value for argument `kind`\. Expected one of \[.*\]\. Received: kind='mixing'"):
        deephoyer_tf.register_layer(ScaledDense, kind="mixing")
    with pytest.raises(ValueError, match=r"Invalid value for argument `layout`\. Expected one of \['in_out', 'out_in', 'depthwise', 'einsum'\]\. Received: layout='io'"):
        deephoyer_tf.KernelSpec("w", "w_regularizer", "io")
    with pytest.raises(TypeError, match=r"Invalid type for argument `cutter`\. Expected a callable\. Received: cutter=3"):
        deephoyer_tf.register_layer(ScaledDense, kernels=[deephoyer_tf.KernelSpec("w")], cutter=3)
    assert registry.entry_for(ScaledDense(2)) is None  # nothing registered by the failures


def test_unregistered_custom_layer_is_kept_whole_by_shrink_and_named():
    model = _model()
    w, b = model.get_layer("head").get_weights()
    w[[2, 5]] = 0  # two inputs of the head unused: the custom layer still keeps them
    model.get_layer("head").set_weights([w, b])
    with pytest.warns(registry.UnhandledLayerWarning):
        small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    assert summary.kept_whole["custom"].startswith("it is not in the layer registry (deephoyer_tf.register_layer)")
    assert small.get_layer("custom").w.shape == (12, 8)
    assert small.get_layer("head").kernel.shape == (6, 3)  # the head's dead inputs are gathered away
    x = np.random.default_rng(1).normal(size=(5, 12)).astype("float32")
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_registered_custom_layer_goes_through_the_whole_pipeline(scaled_dense):
    assert "ScaledDense" in deephoyer_tf.supported_layer_types()
    assert "ScaledDense" in registry.default_types()
    model = _model()
    x = np.random.default_rng(1).normal(size=(16, 12)).astype("float32")

    # regularize: the penalty lands on the custom kernel, by the registered attribute.
    reg = deephoyer_tf.HoyerSquare(1e-2)
    regularized = deephoyer_tf.regularize(model, reg)
    custom = regularized.get_layer("custom")
    assert custom.w_regularizer is reg
    want = 1e-2 * (np.abs(custom.w.numpy()).sum() ** 2) / (custom.w.numpy() ** 2).sum()
    want += 1e-2 * (np.abs(regularized.get_layer("head").kernel.numpy()).sum() ** 2) / (
        regularized.get_layer("head").kernel.numpy() ** 2).sum()
    assert sum(float(v) for v in regularized.losses) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(regularized(x), model(x), rtol=1e-6)

    # prune: per-layer thresholds by name reach the custom kernel.
    w = model.get_layer("custom").w.numpy()
    report = deephoyer_tf.prune(model, threshold={"custom": 0.5})
    np.testing.assert_array_equal(model.get_layer("custom").w.numpy(), np.where(np.abs(w) < 0.5, 0, w))
    # kill input units 0-3 and hidden units 5-7, so shrink has something to cut
    w = model.get_layer("custom").w.numpy()
    w[:4] = 0.0
    w[:, 5:] = 0.0
    model.get_layer("custom").w.assign(w)

    # sparsity_report: counts, live units and MACs of the custom layer.
    report = deephoyer_tf.sparsity_report(model)
    row = {r.name: r for r in report.layers}["custom"]
    assert row.type == "ScaledDense" and row.kernel_weights == 96
    assert row.nonzero_weights == int(np.count_nonzero(w))
    assert (row.live_inputs, row.live_outputs) == (8, 5)
    assert report.structure == "8-5"
    assert row.macs == 8 * 5

    # fix_zeros: zeros of the custom kernel held through training.
    deephoyer_tf.fix_zeros(model)
    assert zero_mask.is_fixed(model.get_layer("custom").w)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(x, np.ones((16, 3)), epochs=2, batch_size=4, verbose=0)
    trained = model.get_layer("custom").w.numpy()
    assert np.all(trained[w == 0] == 0) and np.mean(trained[w != 0] != w[w != 0]) > 0.5
    deephoyer_tf.strip_zero_masks(model)

    # shrink: the dead units leave the custom layer (its cutter), outputs equal.
    # Hidden units 5-7 are ReLU(b) constants, folded into the head's bias (fold).
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("custom").w.shape == (8, 5)
    assert small.get_layer("custom").s.shape == (5,)
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)
    summary = small.shrink_summary
    assert summary.removed["custom"] == (4, 3)
    constants = np.maximum(model.get_layer("custom").b.numpy()[5:], 0)  # relu(b) of dead units
    assert summary.folded == int(np.count_nonzero(constants)) > 0
    assert summary.kept_for_exactness == 0


@pytest.mark.parametrize("with_fold", [True, False], ids=["fold", "no-fold"])
def test_constants_into_a_custom_layer_are_folded_by_its_fold_function_or_kept(scaled_dense, with_fold):
    deephoyer_tf.register_layer(
        ScaledDense, kernels=scaled_dense.kernels, cutter=cut_scaled_dense,
        fold=fold_scaled_dense if with_fold else None,
    )
    inp = keras.Input((12,))
    h = keras.layers.Dense(8, activation="relu", name="first")(inp)
    model = keras.Model(inp, ScaledDense(4, name="second")(h))
    rng = np.random.default_rng(0)
    model.build((None, 12))
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    kernel, bias = model.get_layer("first").get_weights()
    kernel[:, 5:] = 0.0
    bias[5:] = 1.0  # units 5-7: the constant relu(1) = 1, read by `second`
    model.get_layer("first").set_weights([kernel, bias])
    x = rng.normal(size=(4, 12)).astype("float32")
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    assert (summary.folded, summary.kept_for_exactness) == ((3, 0) if with_fold else (0, 3))
    assert small.get_layer("second").w.shape == ((5, 4) if with_fold else (8, 4))
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)
