"""prune(): NumPy references for both rules, per-layer dicts, biases, layer
types, models held by fix_zeros, and exact argument errors."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import zero_mask as masks

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def make_model(module, seed=0):
    """Conv2D -> Conv2DTranspose -> Flatten -> Dense -> Dense, random weights."""
    layers = module.layers
    model = module.Sequential(
        [
            module.Input((6, 6, 2)),
            layers.Conv2D(4, 3, name="conv"),
            layers.Conv2DTranspose(3, 2, name="deconv"),
            layers.Flatten(name="flat"),
            layers.Dense(5, activation="relu", name="fc1"),
            layers.Dense(3, name="fc2"),
        ]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def weights_by_layer(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}


def reference(w, t):
    return np.where(np.abs(w) < t, 0.0, w).astype(w.dtype)


@pytest.mark.parametrize("module", FLAVOURS)
def test_std_ratio_matches_numpy(module):
    model = make_model(module)
    before = weights_by_layer(model)
    deephoyer_tf.prune(model, std_ratio=0.7)
    after = weights_by_layer(model)
    for name in ("conv", "fc1", "fc2"):
        kernel, bias = before[name]
        np.testing.assert_array_equal(after[name][0], reference(kernel, 0.7 * np.std(kernel)))
        np.testing.assert_array_equal(after[name][1], bias)  # biases untouched
        assert 0 < np.mean(after[name][0] == 0) < 1
    # Not a default type: untouched.
    for got, want in zip(after["deconv"], before["deconv"]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("module", FLAVOURS)
def test_threshold_dict_prunes_named_layers_only(module):
    model = make_model(module)
    before = weights_by_layer(model)
    deephoyer_tf.prune(model, threshold={"fc1": 0.5, "conv": 1.0})
    after = weights_by_layer(model)
    np.testing.assert_array_equal(after["fc1"][0], reference(before["fc1"][0], 0.5))
    np.testing.assert_array_equal(after["conv"][0], reference(before["conv"][0], 1.0))
    np.testing.assert_array_equal(after["fc2"][0], before["fc2"][0])


def test_docstring_example():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    model.set_weights([np.array([[0.1, -2.0], [0.5, 3.0]], "float32")])
    deephoyer_tf.prune(model, threshold=0.6)
    np.testing.assert_array_equal(model.get_weights()[0], [[0.0, -2.0], [0.0, 3.0]])


def test_exactly_zero_and_threshold_itself_kept():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.set_weights([np.array([[-0.25], [0.25], [0.2499]], "float32")])
    deephoyer_tf.prune(model, threshold=0.25)  # |w| < t: 0.25 itself stays
    kernel = model.get_weights()[0]
    np.testing.assert_array_equal(kernel, [[-0.25], [0.25], [0.0]])


@pytest.mark.parametrize("module", FLAVOURS)
def test_biases_and_layer_types(module):
    model = make_model(module)
    before = weights_by_layer(model)
    deephoyer_tf.prune(model, std_ratio=0.5, biases=True, layer_types=["Dense", "Conv2DTranspose"])
    after = weights_by_layer(model)
    for name in ("deconv", "fc1", "fc2"):
        kernel, bias = before[name]
        np.testing.assert_array_equal(after[name][0], reference(kernel, 0.5 * np.std(kernel)))
        np.testing.assert_array_equal(after[name][1], reference(bias, 0.5 * np.std(bias)))
    for got, want in zip(after["conv"], before["conv"]):  # Conv2D not selected
        np.testing.assert_array_equal(got, want)


def test_nested_model():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inner_fc")], name="inner")
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="outer_fc")])
    kernel = inner.get_layer("inner_fc").kernel.numpy()
    deephoyer_tf.prune(outer, threshold={"inner_fc": 0.3})
    np.testing.assert_array_equal(inner.get_layer("inner_fc").kernel.numpy(), reference(kernel, 0.3))


def test_pruning_a_fixed_model_holds_the_new_zeros():
    model = make_model(keras)
    deephoyer_tf.prune(model, threshold=0.2)
    deephoyer_tf.fix_zeros(model)
    deephoyer_tf.prune(model, threshold=0.6)
    for layer in (model.get_layer("conv"), model.get_layer("fc1")):
        kernel = layer.kernel.numpy()
        np.testing.assert_array_equal(masks.mask_of(layer.kernel), (kernel != 0).astype("float32"))


def test_pruning_a_tfmot_wrapped_model(tfmot):
    model = make_model(tf_keras)
    wrapped = deephoyer_tf.fix_zeros_tfmot(model)
    kernel = model.get_layer("fc1").kernel.numpy()
    deephoyer_tf.prune(wrapped, threshold={"fc1": 0.5})  # the wrapped layer's name
    np.testing.assert_array_equal(model.get_layer("fc1").kernel.numpy(), reference(kernel, 0.5))
    wrapper = wrapped.get_layer("prune_low_magnitude_fc1")
    np.testing.assert_array_equal(
        wrapper.pruning_vars[0][1].numpy(), (reference(kernel, 0.5) != 0).astype("float32")
    )


def test_returns_the_sparsity_report():
    model = make_model(keras)
    report = deephoyer_tf.prune(model, std_ratio=0.5)
    got = {layer.name: layer.nonzero_weights for layer in report.layers}
    for name in ("conv", "fc1", "fc2"):
        assert got[name] == np.count_nonzero(model.get_layer(name).kernel.numpy())
    assert report.nonzero_weights < report.total_weights


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, r"Exactly one of the arguments `std_ratio` and `threshold` must be given\. Received: std_ratio=None, threshold=None"),
        ({"std_ratio": 1.0, "threshold": 0.1}, ValueError, r"Exactly one .* Received: std_ratio=1\.0, threshold=0\.1"),
        ({"std_ratio": -1.0}, ValueError, r"Invalid value for argument `std_ratio`\. Expected a finite float >= 0\. Received: std_ratio=-1\.0"),
        ({"threshold": float("nan")}, ValueError, r"Invalid value for argument `threshold`\. .* Received: threshold=nan"),
        ({"threshold": "0.1"}, TypeError, r"Invalid type for argument `threshold`\. Expected a float or a dict from layer name to float\. Received: threshold='0\.1' of type str"),
        ({"std_ratio": True}, TypeError, r"Invalid type for argument `std_ratio`.* Received: std_ratio=True of type bool"),
        ({"threshold": {"fc1": -2}}, ValueError, r"Invalid value for argument `threshold`\. .* Received: threshold\['fc1'\]=-2\.0"),
        ({"threshold": {1: 0.1}}, TypeError, r"Invalid type for argument `threshold`\. Expected layer names \(str\) as dict keys\. Received: key 1 of type int"),
        ({"threshold": {"fc9": 0.1, "flat": 0.1}}, ValueError, r"Invalid value for argument `threshold`\. Expected a dict keyed by names of layers of types \['Dense', 'Conv1D', 'Conv2D', 'Conv3D', 'EinsumDense', 'MultiHeadAttention'\] in the model: \['conv', 'fc1', 'fc2'\]\. Received unknown names: \['fc9', 'flat'\]"),
        ({"threshold": 0.1, "biases": "yes"}, TypeError, r"Invalid type for argument `biases`\. Expected a bool\. Received: biases='yes'"),
        ({"threshold": 0.1, "layer_types": ["Dense", "LSTM"]}, ValueError, r"Invalid value for argument `layer_types`\. Expected names among \[.*\]\. Received: \['LSTM'\]"),
    ],
)
def test_argument_errors(kwargs, error, message):
    model = make_model(keras)
    before = model.get_weights()
    with pytest.raises(error, match=message):
        deephoyer_tf.prune(model, **kwargs)
    for got, want in zip(model.get_weights(), before):  # nothing half-done
        np.testing.assert_array_equal(got, want)


def test_model_errors():
    with pytest.raises(TypeError, match=r"Invalid type for argument `model`\. .* Received: model=3 of type int"):
        deephoyer_tf.prune(3, threshold=0.1)
    unbuilt = keras.Sequential([keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match=r"Layer 'fc' of type Dense is not built"):
        deephoyer_tf.prune(unbuilt, threshold=0.1)


def test_a_dict_naming_both_a_wrapper_and_its_layer_is_rejected(tfmot):
    """Before: one of the two values was taken by set order (hash-seed dependent)."""
    wrapped = deephoyer_tf.fix_zeros_tfmot(make_model(tf_keras))
    before = wrapped.get_weights()
    message = (
        r"Invalid value for argument `threshold`: it names both the TFMOT wrapper "
        r"'prune_low_magnitude_fc1' and the layer 'fc1' it wraps, with values "
        r"\[0\.5, 0\.1\]\. Name one of them\."
    )
    with pytest.raises(ValueError, match=message):
        deephoyer_tf.prune(wrapped, threshold={"fc1": 0.5, "prune_low_magnitude_fc1": 0.1})
    for got, want in zip(wrapped.get_weights(), before):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("module", FLAVOURS)
def test_a_diverged_kernel_is_rejected_before_anything_changes(module, bad):
    model = make_model(module)
    kernel = model.get_layer("fc2").kernel.numpy()
    kernel[0, 0] = bad
    model.get_layer("fc2").kernel.assign(kernel)
    before = model.get_weights()
    nans, infs = int(np.isnan(bad)), int(np.isinf(bad))
    message = (
        rf"prune\(\) cannot threshold layer 'fc2': its kernel of shape \(5, 3\) holds "
        rf"{nans} NaN and {infs} inf values \(training diverged\?\)"
    )
    with pytest.raises(ValueError, match=message):
        deephoyer_tf.prune(model, std_ratio=0.5)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
