"""Each function of `_internal.private_api` on real objects of the installed releases.

If a Keras, tf_keras, TensorFlow or TFMOT release removes an internal that
deephoyer_tf relies on, the test of the function that reads it fails here,
with the function's own message naming the attribute and the versions it was
checked with.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deephoyer_tf._internal import private_api

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _model(module, sequential):
    layers = [module.layers.Dense(3, name="fc1"), module.layers.Dense(2, name="fc2")]
    if sequential:
        return module.Sequential([module.Input((4,))] + layers)
    inp = module.Input((4,), name="x")
    return module.Model(inp, layers[1](layers[0](inp)))


@pytest.mark.parametrize("sequential", [True, False], ids=["sequential", "functional"])
@pytest.mark.parametrize("module", FLAVOURS)
def test_functional_nodes_and_node_parts(module, sequential):
    model = _model(module, sequential)
    inputs, outputs, nodes = private_api.functional_nodes(model)
    assert len(inputs) == len(outputs) == 1
    parts = [private_api.node_parts(node) for node in nodes]
    called = [layer.name for layer, _, _, is_input in parts if not is_input]
    assert called == ["fc1", "fc2"]  # data-flow order
    layer, ins, outs, _ = parts[-1]
    assert layer.name == "fc2" and len(ins) == len(outs) == 1
    assert tuple(outs[0].shape) == (None, 2)


def test_functional_nodes_of_a_sequential_without_input_is_none():
    assert private_api.functional_nodes(keras.Sequential([keras.layers.Dense(2)])) is None


def test_node_parts_of_an_unknown_object_names_what_is_missing():
    with pytest.raises(private_api.PrivateAPIError, match=r"reads `operation`/`input_tensors`.*checked with"):
        private_api.node_parts(object())


@pytest.mark.parametrize("module", FLAVOURS)
def test_history_layer(module):
    model = _model(module, sequential=False)
    assert private_api.history_layer(model.inputs[0]).name == "x"
    assert private_api.history_layer(model.outputs[0]).name == "fc2"
    with pytest.raises(private_api.PrivateAPIError, match=r"reads `_keras_history` of ndarray"):
        private_api.history_layer(np.zeros(2))


class _Halve:
    def __call__(self, w):
        return w / 2


@pytest.mark.parametrize("mixed", [False, True], ids=["float32", "mixed_float16"])
@pytest.mark.parametrize("module", FLAVOURS)
def test_set_variable_constraint_is_what_the_optimizer_applies(module, mixed):
    """After one step the constraint's effect shows in the weights (tf_keras: `_constraint`)."""
    policy = module.mixed_precision.global_policy()
    if mixed:
        module.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = module.Sequential([module.Input((2,)), module.layers.Dense(1, use_bias=False)])
    finally:
        module.mixed_precision.set_global_policy(policy)
    kernel = model.layers[0].kernel
    private_api.set_variable_constraint(kernel, _Halve())
    model.compile(optimizer=module.optimizers.SGD(0.0), loss="mse")
    before = np.asarray(kernel.numpy(), np.float64)
    # Five steps (a loss-scaled step may be skipped while the scale settles).
    model.fit(np.ones((20, 2)), np.ones((20, 1)), verbose=0, batch_size=4)
    ratio = before / np.asarray(kernel.numpy(), np.float64)
    assert np.allclose(ratio, ratio.flat[0]) and ratio.flat[0] in (2.0, 4.0, 8.0, 16.0, 32.0)


def test_set_variable_constraint_on_every_replica(two_cpus):
    strategy = tf.distribute.MirroredStrategy(two_cpus)
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1, use_bias=False)])
    kernel = model.layers[0].kernel
    halve = _Halve()
    private_api.set_variable_constraint(kernel, halve)
    assert [component.constraint for component in kernel.values] == [halve, halve]


def test_set_variable_constraint_without_the_attribute_says_so():
    class Bare:
        pass

    with pytest.raises(private_api.PrivateAPIError, match=r"reads `_constraint` of Bare"):
        private_api.set_variable_constraint(Bare(), None)


def test_tf_keras_batch_hooks_are_still_asked_by_tf_keras():
    """tf_keras' CallbackList still calls the three private questions."""

    class Quiet(private_api.TfKerasBatchHooks, keras.callbacks.Callback):
        pass

    class Busy(private_api.TfKerasBatchHooks, keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    for name in private_api.TF_KERAS_BATCH_HOOKS:
        assert hasattr(tf_keras.callbacks.Callback, name), name
    quiet = tf_keras.callbacks.CallbackList([Quiet()])
    busy = tf_keras.callbacks.CallbackList([Busy()])
    assert not quiet._should_call_train_batch_hooks
    assert busy._should_call_train_batch_hooks
    assert not busy._should_call_test_batch_hooks


def test_tfmot_pruning_vars(tfmot):
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3)])
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model)
    (wrapper,) = [layer for layer in wrapped.layers if type(layer).__name__ == "PruneLowMagnitude"]
    ((weight, mask, threshold),) = private_api.tfmot_pruning_vars(wrapper)
    assert weight is wrapper.layer.kernel
    assert tuple(mask.shape) == (4, 3) and tuple(threshold.shape) == ()
    assert private_api.tfmot_pruning_vars(model.layers[0]) == []


def test_tflite_flatbuffer_round_trip():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    tree = private_api.tflite_to_object(content)
    ops = [private_api.tflite_opcode_name(tree, op.opcodeIndex) for op in tree.subgraphs[0].operators]
    assert ops == ["FULLY_CONNECTED"]
    again = private_api.tflite_to_object(private_api.tflite_to_bytes(tree))
    assert len(again.subgraphs[0].tensors) == len(tree.subgraphs[0].tensors)


def test_scalar_summary_metadata_is_tensorboards():
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata.FromString(private_api.scalar_summary_metadata())
    assert metadata.plugin_data.plugin_name == "scalars"
    assert metadata.data_class == summary_pb2.DATA_CLASS_SCALAR


def test_print_msg_goes_through_keras_messaging(capsys):
    private_api.print_msg("hello from deephoyer_tf")
    assert "hello from deephoyer_tf" in capsys.readouterr().out
    keras.utils.disable_interactive_logging()
    try:
        private_api.print_msg("to absl instead")
    finally:
        keras.utils.enable_interactive_logging()
    assert "to absl instead" not in capsys.readouterr().out


@pytest.mark.parametrize("module", FLAVOURS)
def test_arithmetic_nodes_are_read_and_called_again(module):
    """``x + 3.0``: its operation, recorded arguments, and a second call on a new input."""
    inp = module.Input((4,))
    out = inp + 3.0
    model = module.Model(inp, out)
    _, _, nodes = private_api.functional_nodes(model)
    (node,) = [n for n in nodes if not private_api.node_parts(n)[3]]
    operation, (source,), _, _ = private_api.node_parts(node)
    args, _ = private_api.node_call_arguments(node)
    assert args[1] == 3.0 and private_api.node_constants(node) == [3.0]
    if module is keras:
        assert type(operation) in private_api.keras_elementwise_op_classes()
    else:
        assert isinstance(operation, private_api.tf_keras_op_lambda_class(tf_keras))
        assert private_api.tf_op_lambda_symbol(operation) in private_api.TF_KERAS_ELEMENTWISE_SYMBOLS
    value = private_api.call_node_again(node, operation, {id(source): np.ones((2, 4), "float32")})
    np.testing.assert_array_equal(np.asarray(value), np.full((2, 4), 4.0))


@pytest.mark.parametrize("module", FLAVOURS)
def test_ema_average_is_the_average_the_optimizer_writes_over_the_variable(module):
    model = _model(module, True)
    kernel = model.get_layer("fc1").kernel
    optimizer = module.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5)
    assert private_api.ema_average(optimizer, kernel) is None  # not built: no averages yet
    optimizer.build(model.trainable_variables)
    average = private_api.ema_average(optimizer, kernel)
    assert tuple(average.shape) == tuple(kernel.shape)
    marker = np.full(tuple(kernel.shape), 7.0, "float32")
    average.assign(marker)
    optimizer.finalize_variable_values(model.trainable_variables)  # writes the averages over the weights
    np.testing.assert_array_equal(np.asarray(kernel.numpy()), marker)
    assert private_api.ema_average(module.optimizers.SGD(0.5), kernel) is None  # use_ema=False
    other = module.Variable(np.zeros((2, 2), "float32")) if module is keras else tf.Variable(np.zeros((2, 2)))
    assert private_api.ema_average(optimizer, other) is None  # not one of its variables


def test_replace_sublayer_leaves_only_the_new_sublayer_tracked():
    class Holder(keras.layers.Layer):
        def build(self, shape):
            self.inner = keras.layers.Dense(3, name="inner")
            self.inner.build(shape)

        def call(self, x):
            return self.inner(x)

    holder = Holder()
    holder.build((None, 4))
    new = keras.layers.Dense(5, name="wider")
    new.build((None, 4))
    private_api.replace_sublayer(holder, "inner", new)
    assert holder.inner is new
    assert [tuple(w.shape) for w in holder.weights] == [(4, 5), (5,)]
    assert holder._tracker.locked  # locked again, as Keras left it after build
    assert holder(np.ones((2, 4), np.float32)).shape == (2, 5)
