"""MagnitudePruning on TensorFlow: tf.distribute, tf_keras, and sparse int8 export keeping the zeros."""

import keras
import numpy as np
import tensorflow as tf

import deephoyer_tf


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 32)).astype("float32"), rng.normal(size=(64, 4)).astype("float32")


def _layers(k):
    return [k.Input((32,)), k.layers.Dense(32, activation="relu", name="fc1"), k.layers.Dense(4, name="fc2")]


def _kept(n, sparsity):
    return max(1, int(round(n * (1 - sparsity))))


def test_mirrored_strategy_prunes_every_replica_alike(two_cpus):
    x, y = _data()
    strategy = tf.distribute.MirroredStrategy(two_cpus)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(_layers(keras))
        model.compile(keras.optimizers.Adam(0.01), "mse")
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, frequency=4)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[deephoyer_tf.MagnitudePruning(schedule)])
    for layer in model.layers:
        kernel = layer.kernel.value
        replicas = [np.asarray(v) for v in kernel.values] if hasattr(kernel, "values") else [np.asarray(kernel)]
        for value in replicas:
            assert np.sum(value != 0) == _kept(value.size, 0.8), layer.name
            np.testing.assert_array_equal(value, replicas[0])


def test_tf_keras_model(tfmot):
    import tf_keras

    x, y = _data()
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(_layers(tf_keras))
    model.compile(tf_keras.optimizers.Adam(0.01), "mse")
    schedule = deephoyer_tf.ConstantSparsity(0.5, begin_step=0, frequency=100)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[deephoyer_tf.MagnitudePruning(schedule, m_by_n=(2, 4))])
    for layer in model.layers:
        groups = layer.kernel.numpy().T.reshape(layer.kernel.shape[1], -1, 4)
        assert np.all(np.sum(groups != 0, axis=-1) == 2), layer.name


def test_int8_export_keeps_the_zeros_of_a_magnitude_pruned_model(tmp_path):
    """Pruning-preserving quantization: every pruned weight is int8 0 in the file."""
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(_layers(keras))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[deephoyer_tf.MagnitudePruning(0.75, block_size=(1, 16))])
    deephoyer_tf.strip_zero_masks(model)
    kernels = {layer.name: np.asarray(layer.kernel) for layer in model.layers}
    result = deephoyer_tf.export_tflite(model, tmp_path / "dense.tflite", sparse=False, quantize="int8",
                                        representative_data=x)
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    it = Interpreter(model_path=result.path,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    found = {}
    for detail in it.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) == 2:
            found[tuple(detail["shape"])] = it.get_tensor(detail["index"])
    for name, kernel in kernels.items():
        stored = found[(kernel.shape[1], kernel.shape[0])].T  # TFLite: (out, in)
        assert np.all(stored[kernel == 0] == 0), name  # a tiny kept weight may round to 0 too
        assert np.mean(stored == 0) < np.mean(kernel == 0) + 0.02, name
    sparse = deephoyer_tf.export_tflite(model, tmp_path / "sparse.tflite", sparse=True, quantize="int8",
                                        representative_data=x)
    assert sparse.sparse_tensors >= 1 and sparse.size_bytes < result.size_bytes
