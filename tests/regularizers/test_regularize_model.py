"""regularize(): attach regularizers to an existing, trained model (issue 2)."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf import GroupHoyerSquare
from deephoyer_tf import HoyerSquare
from deephoyer_tf import regularize

MODULES = [keras, tf_keras]
IDS = ["keras3", "tf_keras"]


def _functional(module):
    layers = module.layers
    inputs = module.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    b = layers.Conv2DTranspose(4, 3, padding="same", name="deconv")(inputs)
    x = layers.Add()([a, b])
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(6, activation="relu", name="fc1")(x)
    outputs = layers.Dense(3, name="fc2")(x)
    return module.Model(inputs, outputs)


def _sequential(module):
    layers = module.layers
    return module.Sequential(
        [module.Input((10,)), layers.Dense(7, activation="relu", name="h"), layers.Dense(4, name="out")]
    )


def _trained(model, module, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32,) + tuple(model.input_shape[1:])).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], 32)
    model.compile(optimizer=module.optimizers.SGD(0.05), loss=module.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return x


@pytest.mark.parametrize("module", MODULES, ids=IDS)
@pytest.mark.parametrize("build", [_functional, _sequential])
def test_keeps_outputs_and_adds_exactly_the_penalties(module, build):
    original = build(module)
    x = _trained(original, module)
    reg = HoyerSquare(1e-3)
    model = regularize(original, reg)
    assert model is not original
    np.testing.assert_allclose(model(x), original(x), atol=1e-6)
    kernels = [layer.kernel for layer in model.layers if type(layer).__name__ in ("Dense", "Conv2D")]
    expected = sum(float(reg(k)) for k in kernels)
    assert len(model.losses) == len(kernels)
    assert sum(float(v) for v in model.losses) == pytest.approx(expected, rel=1e-6)
    # The original model is untouched, and biases carry no penalty.
    assert len(original.losses) == 0
    assert all(getattr(layer, "bias_regularizer", None) is None for layer in model.layers)


def test_shared_instance_controls_every_layer():
    model = regularize(_sequential(keras), reg := HoyerSquare(1e-3))
    before = sum(float(v) for v in model.losses)
    reg.strength = 2e-3
    assert sum(float(v) for v in model.losses) == pytest.approx(2 * before, rel=1e-6)
    assert deephoyer_tf.strength_variables(model) == reg.strength_variables()


def test_group_regularizer_adapts_to_transposed_kernels():
    reg = GroupHoyerSquare(1e-3, "outputs")
    model = regularize(_functional(keras), reg, layer_types=["Dense", "Conv2D", "Conv2DTranspose"])
    deconv = model.get_layer("deconv")
    assert deconv.kernel_regularizer.layout == "out_in"
    assert model.get_layer("conv_a").kernel_regularizer is reg
    # Shares the strength variable: switching `reg` off switches all off.
    reg.strength = 0.0
    assert all(float(v) == 0.0 for v in model.losses)
    # A transposed kernel (k, k, out, in) is grouped by its filters, axis -2.
    kernel = deconv.kernel.numpy()
    norms = np.sqrt((np.float64(kernel) ** 2).sum(axis=(0, 1, 3)))
    expected = norms.sum() ** 2 / (norms**2).sum()
    assert float(deconv.kernel_regularizer.measure(deconv.kernel)) == pytest.approx(expected, rel=1e-5)


def test_bias_regularizer_and_per_layer_mapping():
    original = _sequential(keras)
    reg = HoyerSquare(1e-3)
    bias_reg = keras.regularizers.L1(0.5)
    model = regularize(original, {"h": reg, "out": None}, bias_regularizer=bias_reg)
    assert model.get_layer("h").kernel_regularizer is reg
    assert model.get_layer("h").bias_regularizer is bias_reg
    assert model.get_layer("out").kernel_regularizer is None
    expected = float(reg(model.get_layer("h").kernel)) + float(bias_reg(model.get_layer("h").bias))
    assert sum(float(v) for v in model.losses) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_nested_models_are_regularized_recursively(module):
    inner = _sequential(module)
    inputs = module.Input((10,))
    outputs = module.layers.Dense(2, name="head")(inner(inputs))
    model = regularize(module.Model(inputs, outputs), HoyerSquare(1e-3))
    assert len(model.losses) == 3
    x = np.ones((2, 10), np.float32)
    np.testing.assert_allclose(model(x), module.Model(inputs, outputs)(x), atol=1e-6)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_regularized_model_saves_and_loads(module, tmp_path):
    model = regularize(_functional(module), GroupHoyerSquare(1e-3))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = module.models.load_model(path)
    assert isinstance(loaded.get_layer("fc1").kernel_regularizer, GroupHoyerSquare)
    assert sum(float(v) for v in loaded.losses) == pytest.approx(sum(float(v) for v in model.losses), rel=1e-6)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_gets_an_error_that_says_what_to_do():
    model = _Subclassed()
    model(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"it is a subclassed model, whose layer graph is not known\. Pass the regularizer when you create its layers instead"):
        regularize(model, HoyerSquare(1e-3))


def test_bad_arguments():
    model = _sequential(keras)
    with pytest.raises(TypeError, match=r"Invalid type for argument `regularizer`.*Received: 0\.1 of type float"):
        regularize(model, 0.1)
    with pytest.raises(TypeError, match=r"Invalid type for argument `model`\. Expected a Keras model"):
        regularize("model.keras", HoyerSquare(1e-3))
    with pytest.raises(ValueError, match=r"Invalid value for argument `layer_types`.*Received: \['LSTM'\]"):
        regularize(model, HoyerSquare(1e-3), layer_types=["LSTM"])
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="regularize\\(\\) needs a built model"):
        regularize(unbuilt, HoyerSquare(1e-3))


def test_unknown_names_in_the_dict_are_named_with_the_known_ones():
    model = _sequential(keras)
    with pytest.raises(ValueError, match=r"Invalid value for argument `regularizer`\. Expected a dict keyed by names of layers of types \[.*\] in the model: \['h', 'out'\]\. Received unknown names: \['fc_typo'\]"):
        regularize(model, {"fc_typo": HoyerSquare(1e-4), "h": HoyerSquare(1e-4)})


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_a_lambda_layer_is_copied_with_its_function(module):
    inputs = module.Input((4,))
    x = module.layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(inputs)
    original = module.Model(inputs, module.layers.Dense(3, name="fc")(x))
    reg = HoyerSquare(1e-3)
    model = regularize(original, reg)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x), original(x), atol=1e-6)
    assert model.get_layer("affine") is not original.get_layer("affine")
    assert [float(v) for v in model.losses] == pytest.approx([float(reg(model.get_layer("fc").kernel))])
    assert len(original.losses) == 0


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_copy_false_regularizes_the_model_itself(module):
    model = _functional(module)
    kernels_before = [id(w) for w in model.weights]
    reg = HoyerSquare(1e-3)
    same = regularize(model, reg, copy=False)
    assert same is model
    assert [id(w) for w in model.weights] == kernels_before  # nothing rebuilt
    kernels = [model.get_layer(n).kernel for n in ("conv_a", "fc1", "fc2")]
    assert sum(float(v) for v in model.losses) == pytest.approx(sum(float(reg(k)) for k in kernels), rel=1e-6)
    assert model.get_layer("fc1").kernel_regularizer is reg  # in the config: saved with the model


class _NoRoundTrip(keras.layers.Layer):
    """A layer whose config lacks a constructor argument (from_config fails)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {"name": self.name}  # `scale` left out


def test_a_layer_that_cannot_be_copied_is_named_and_copy_false_suggested():
    inputs = keras.Input((3,))
    x = _NoRoundTrip(2.0, name="scaler")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    with pytest.raises(ValueError, match=r"regularize\(\) cannot copy layer 'scaler' of class _NoRoundTrip: .*Pass copy=False to regularize the model in place\."):
        regularize(model, HoyerSquare(1e-3))
    assert len(regularize(model, HoyerSquare(1e-3), copy=False).losses) == 1


class _OwnClass(keras.Model):
    """A functional model of its own class (as keras_hub's backbones are)."""

    def __init__(self, width=5, **kwargs):
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(width, name="fc")(inputs)
        super().__init__(inputs, outputs, **kwargs)
        self.width = width

    def get_config(self):
        return {"width": self.width, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_a_model_of_its_own_class_keeps_its_class_and_weights():
    original = _OwnClass(width=6)
    original.get_layer("fc").kernel.assign(np.arange(24, dtype=np.float32).reshape(4, 6))
    model = regularize(original, HoyerSquare(1e-3))
    assert type(model) is _OwnClass and model is not original
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), original.get_layer("fc").kernel.numpy())
    assert len(model.losses) == 1 and len(original.losses) == 0
