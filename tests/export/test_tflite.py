"""Tests for deephoyer_tf.export.tflite: verified (sparse) TFLite export."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf.export import runtime
from deephoyer_tf.export import tflite as export
from deephoyer_tf.paper import models
from tests.helpers.tf_bugs import TF_2_21
from tests.helpers.tf_bugs import pins_tf_2_21
from tests.helpers.tf_bugs import warns_on_tf_2_21
from tests.helpers.tflite_files import WITHOUT_DELEGATES
from tests.helpers.tflite_files import run_file as _run_file
from tests.helpers.tflite_files import sparsify as _sparsify


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((6, 28, 28, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def sparse_mlp():
    """A ~90% sparse LeNet-300-100 (unstructured)."""
    return _sparsify(models.lenet_300_100(), density=0.1)


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_round_trip_dense_and_sparse(flavour, tmp_path, images):
    model = models.lenet_300_100(
        kernel_regularizer=deephoyer_tf.HoyerSquare(1e-4), flavour=flavour
    )
    _sparsify(model, density=0.1)
    dense = export.export_tflite(model, tmp_path / "dense.tflite", sparse=False)
    sparse = export.export_tflite(model, tmp_path / "sub" / "sparse.tflite")
    for result in (dense, sparse):
        assert os.path.getsize(result.path) == result.size_bytes
        assert 0 < result.gzip_bytes < result.size_bytes
        assert result.max_abs_error <= result.tolerance
        assert result.max_abs_error < 1e-5
        assert result.op_resolver == "BUILTIN" and result.default_delegate_error is None
        assert result.runtime == "ai_edge_litert"
        # Independent check on other inputs.
        np.testing.assert_allclose(
            _run_file(result.path, images), np.asarray(model(images)), atol=1e-5
        )
    assert dense.sparse_tensors == 0 and sparse.sparse_tensors == 3
    # 10% of the float32 weights plus indices: well under a quarter of dense.
    assert sparse.size_bytes < 0.25 * dense.size_bytes
    assert sparse.gzip_bytes < dense.gzip_bytes


def test_max_abs_error_is_measured_on_sample_inputs(sparse_mlp, tmp_path, images):
    result = export.export_tflite(sparse_mlp, tmp_path / "m.tflite", sample_inputs=images)
    expected = np.max(np.abs(_run_file(result.path, images) - np.asarray(sparse_mlp(images))))
    assert result.max_abs_error == pytest.approx(float(expected), rel=1e-6, abs=1e-12)
    reference = np.asarray(sparse_mlp(images))
    assert result.tolerance == pytest.approx(1e-4 + 1e-4 * np.abs(reference).max())


@pins_tf_2_21
def test_dynamic_range_sparse_1x16_blocks_run_without_xnnpack(tmp_path):
    """The TF 2.21 case: XNNPACK fails/NaNs; the builtin kernels are right."""
    # fc1 (784 = 49 * 16 inputs) zero in runs of 16: the converter stores its
    # int8 weights in 1x16 blocks. fc2/fc3 stay dense.
    model = _sparsify(models.lenet_300_100(), density=0.1, block=16, layers=["fc1"])
    dense = export.export_tflite(model, tmp_path / "dense.tflite", sparse=False, quantize="dynamic")
    with pytest.warns(RuntimeWarning, match="under the default op resolver"):
        result = export.export_tflite(model, tmp_path / "sparse.tflite", quantize="dynamic")
    (tensor,) = runtime.sparse_tensors(open(result.path, "rb").read())
    assert np.dtype(tensor["dtype"]) == np.int8 and tuple(tensor["shape"]) == (300, 784)
    assert tensor["sparsity_parameters"]["dim_metadata"][-1]["dense_size"] == 16
    assert result.op_resolver == WITHOUT_DELEGATES and result.stored_dense == ()
    assert result.interpreter_options == {"experimental_op_resolver_type": WITHOUT_DELEGATES}
    assert result.default_delegate_error is not None  # NaN or "failed to prepare"
    # Same arithmetic as the dense dynamic-range file.
    assert result.max_abs_error == pytest.approx(dense.max_abs_error, rel=1e-3)
    assert result.size_bytes < 0.6 * dense.size_bytes
    # The result's interpreter (here with two threads) reproduces the check.
    it = result.interpreter(num_threads=2)
    it.allocate_tensors()
    x = np.random.default_rng(4).standard_normal((1, 28, 28, 1)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
    np.testing.assert_allclose(y, np.asarray(model(x)), atol=result.tolerance)
    # Forcing the default resolver reproduces the problem.
    with pytest.raises(RuntimeError, match="TFLite check failed .*op_resolver=BUILTIN\\)"):
        export.export_tflite(model, tmp_path / "x.tflite", quantize="dynamic", op_resolver="BUILTIN")


def _block_columns(content, shape):
    """Block-column indices used by the sparse tensor of `shape`, per the file."""
    from deephoyer_tf._internal import private_api

    model = private_api.tflite_to_object(content)
    (tensor,) = [t for t in model.subgraphs[0].tensors if list(t.shape) == list(shape)
                 and t.sparsity is not None]
    return np.asarray(tensor.sparsity.dimMetadata[1].arrayIndices.values)


@pins_tf_2_21
def test_partial_blocks_are_stored_dense(tmp_path):
    # fc2 has 300 inputs, not a multiple of 16: the converter drops the last
    # partial block (inputs 288..299) of every row.
    model = _sparsify(models.lenet_300_100(), density=0.1, block=16)
    fc2 = model.get_layer("fc2").get_weights()[0]
    assert np.count_nonzero(fc2[288:]) > 0
    raw = export._convert(model, True, "dynamic", None, (None, 28, 28, 1))
    assert _block_columns(raw, (100, 300)).max() == 300 // 16 - 1  # block 18 is lost
    dense = export.export_tflite(model, tmp_path / "d.tflite", sparse=False, quantize="dynamic")
    with pytest.warns(RuntimeWarning) as record:
        result = export.export_tflite(model, tmp_path / "m.tflite", quantize="dynamic")
    messages = " | ".join(str(w.message) for w in record)
    assert re.search(r"fc2.*\(shape \(100, 300\), 1x16 blocks\) in dense format", messages)
    assert "under the default op resolver (XNNPACK)" in messages
    assert len(result.stored_dense) == 1 and "fc2" in result.stored_dense[0]
    assert result.sparse_tensors == 2  # fc1 (int8, 1x16) and fc3 (float, too small to quantize)
    assert result.max_abs_error == pytest.approx(dense.max_abs_error, rel=1e-3)
    assert result.size_bytes < dense.size_bytes


@pins_tf_2_21
def test_partial_blocks_float(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((302,)), keras.layers.Dense(64, name="dense")])
    _sparsify(model, density=0.2, block=4)
    x = np.random.default_rng(3).standard_normal((8, 302)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"\(shape \(64, 302\), 1x4 blocks\)"):
        result = export.export_tflite(model, tmp_path / "m.tflite", sample_inputs=x)
    assert len(result.stored_dense) == 1 and result.max_abs_error < 1e-5


@pins_tf_2_21
def test_partial_blocks_unrepaired_raise_with_diagnosis(tmp_path, monkeypatch):
    model = _sparsify(models.lenet_300_100(), density=0.1, block=16)
    monkeypatch.setattr(export, "_store_dense", lambda *args: None)
    with pytest.raises(RuntimeError, match=r"max abs error .* lose their last partial block .*fc2"):
        export.export_tflite(model, tmp_path / "m.tflite", quantize="dynamic")


def test_int8_with_representative_data(tmp_path):
    model = _sparsify(models.lenet_5(), density=0.1)
    data = np.random.default_rng(2).standard_normal((32, 28, 28, 1)).astype(np.float32)
    with warns_on_tf_2_21("failed to prepare"):
        result = export.export_tflite(
            model, tmp_path / "int8.tflite", quantize="int8", representative_data=data
        )
    assert result.quantize == "int8" and result.sparse_tensors == 4
    assert result.max_abs_error <= result.tolerance
    assert result.op_resolver == WITHOUT_DELEGATES  # auto: integer sparse tensors
    if TF_2_21:
        assert result.default_delegate_error  # the XNNPACK bug
    details = runtime.interpreter(open(result.path, "rb").read(), WITHOUT_DELEGATES)
    dtypes = {np.dtype(d["dtype"]) for d in details.get_tensor_details()}
    assert np.dtype(np.int8) in dtypes  # activations and weights quantized
    # The check used representative samples; a different sample set also agrees.
    np.testing.assert_allclose(
        _run_file(result.path, data[16:], WITHOUT_DELEGATES),
        np.asarray(model(data[16:])),
        atol=result.tolerance,
    )


def test_int8_callable_representative_dataset(tmp_path, images):
    model = models.lenet_300_100()

    def representative():
        for sample in images:
            yield [sample[np.newaxis]]

    result = export.export_tflite(
        model, tmp_path / "m.tflite", sparse=False, quantize="int8",
        representative_data=representative, sample_inputs=images,
    )
    assert result.sparse_tensors == 0 and result.op_resolver == "BUILTIN"
    assert result.max_abs_error <= result.tolerance


def test_tolerance_violation_raises(sparse_mlp, tmp_path):
    with pytest.raises(RuntimeError, match=r"max abs error \S+ > tolerance 0, on 8 samples"):
        export.export_tflite(sparse_mlp, tmp_path / "m.tflite", quantize="dynamic", atol=0, rtol=0)
    assert os.path.exists(tmp_path / "m.tflite")


def test_bad_arguments(sparse_mlp, tmp_path):
    p = tmp_path / "m.tflite"
    with pytest.raises(TypeError, match="Invalid type for argument `model`"):
        export.export_tflite("model", p)
    with pytest.raises(TypeError, match="argument `path`.*Received: path=3 of type int"):
        export.export_tflite(sparse_mlp, 3)
    with pytest.raises(TypeError, match="argument `sparse`.*Received: sparse=1 of type int"):
        export.export_tflite(sparse_mlp, p, sparse=1)
    with pytest.raises(ValueError, match="argument `quantize`.*Received: quantize='float16'"):
        export.export_tflite(sparse_mlp, p, quantize="float16")
    with pytest.raises(ValueError, match="quantize='int8'. Received: representative_data=None"):
        export.export_tflite(sparse_mlp, p, quantize="int8")
    with pytest.raises(ValueError, match="only used with quantize='int8'. Received it with quantize='dynamic'"):
        export.export_tflite(sparse_mlp, p, quantize="dynamic", representative_data=np.zeros((1, 28, 28, 1)))
    with pytest.raises(TypeError, match="argument `representative_data`.*Received: representative_data of type list"):
        export.export_tflite(sparse_mlp, p, quantize="int8", representative_data=[1, 2])
    with pytest.raises(ValueError, match="argument `op_resolver`.*Received: op_resolver='XNNPACK'"):
        export.export_tflite(sparse_mlp, p, op_resolver="XNNPACK")
    with pytest.raises(ValueError, match="argument `atol`.*Received: atol=-1"):
        export.export_tflite(sparse_mlp, p, atol=-1)
    with pytest.raises(ValueError, match=r"argument `sample_inputs`.*\(None, 28, 28, 1\). Received: array of shape \(4, 784\)"):
        export.export_tflite(sparse_mlp, p, sample_inputs=np.zeros((4, 784)))
    assert not p.exists()


def test_model_with_two_inputs_rejected(tmp_path):
    import keras

    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match="one input and one output. Received: model .* with 2 inputs and 1 outputs"):
        export.export_tflite(model, tmp_path / "m.tflite")


@pytest.mark.slow
def test_public_names_after_plain_import():
    code = (
        "import deephoyer_tf as d; "
        "assert d.export_tflite is d.export.export_tflite; "
        "assert callable(d.datasets.load_mnist) and callable(d.models.lenet_5); "
        "assert 'export_tflite' in d.__all__; "
        "import os; assert 'TF_USE_LEGACY_KERAS' not in os.environ"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
