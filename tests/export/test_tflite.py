"""Tests for deephoyer_tf.export.tflite: verified (sparse) TFLite export."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf.export import runtime
from deephoyer_tf.export import tflite as export
from deephoyer_tf.paper import models
from tests.helpers.tf_bugs import pins_tf_2_21
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


@pytest.mark.slow
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
        result = export.export_tflite(model, tmp_path / "sparse.tflite", quantize="dynamic",
                                      sparse=True)
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
        export.export_tflite(model, tmp_path / "x.tflite", quantize="dynamic", sparse=True,
                             op_resolver="BUILTIN")
    assert not (tmp_path / "x.tflite").exists()


def _block_columns(content, shape):
    """Block-column indices used by the sparse tensor of `shape`, per the file."""
    from deephoyer_tf._internal import private_api

    model = private_api.tflite_to_object(content)
    (tensor,) = [t for t in model.subgraphs[0].tensors if list(t.shape) == list(shape)
                 and t.sparsity is not None]
    return np.asarray(tensor.sparsity.dimMetadata[1].arrayIndices.values)


@pins_tf_2_21
def test_partial_blocks_never_written_and_one_conversion(tmp_path, monkeypatch):
    # fc2 has 300 inputs, not a multiple of 16: the TF 2.21 converter, left to
    # choose, drops the last partial block (inputs 288..299) of every row.
    model = _sparsify(models.lenet_300_100(), density=0.1, block=16)
    fc2 = model.get_layer("fc2").get_weights()[0]
    assert np.count_nonzero(fc2[288:]) > 0
    raw = export._convert(model, True, "dynamic", None, None)
    assert _block_columns(raw, (100, 300)).max() == 300 // 16 - 1  # block 18 is lost
    calls = []
    convert = export._convert
    monkeypatch.setattr(export, "_convert", lambda *a: calls.append(a[1]) or convert(*a))
    dense = export.export_tflite(model, tmp_path / "d.tflite", sparse=False, quantize="dynamic")
    with pytest.warns(RuntimeWarning, match="under the default op resolver"):
        result = export.export_tflite(model, tmp_path / "m.tflite", quantize="dynamic", sparse=True)
    assert calls == [False, False]  # one dense conversion per export, never the converter's sparsity
    formats = {s.shape: s for s in result.storage}
    assert formats[(300, 784)].format == "1x16 blocks"
    assert formats[(100, 300)].format == "csr"
    assert "300 is not a multiple of 16" in formats[(100, 300)].reason
    assert result.max_abs_error == pytest.approx(dense.max_abs_error, rel=1e-3)
    assert result.size_bytes < dense.size_bytes


def test_partial_block_float_shape_one_conversion(tmp_path, monkeypatch):
    """A head whose input size (2037, as ResNet50's after shrink) is not a multiple of 4."""
    import keras

    model = keras.Sequential([keras.Input((2037,)), keras.layers.Dense(16, name="head")])
    _sparsify(model, density=0.2, block=4)
    calls = []
    convert = export._convert
    monkeypatch.setattr(export, "_convert", lambda *a: calls.append(a[1]) or convert(*a))
    x = np.random.default_rng(3).standard_normal((8, 2037)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = export.export_tflite(model, tmp_path / "m.tflite", sample_inputs=x)
    assert calls == [False]
    (head,) = result.storage
    assert head.shape == (16, 2037) and head.format == "csr"
    assert "2037 is not a multiple of 4" in head.reason
    assert result.max_abs_error < 1e-5 and result.op_resolver == "BUILTIN"
    np.testing.assert_allclose(_run_file(result.path, x), np.asarray(model(x)), atol=1e-5)


def test_int8_unstructured_is_dense_and_runs_under_xnnpack(tmp_path):
    """int8 with unstructured zeros: dense int8 (fast, XNNPACK), with the reason per tensor."""
    model = _sparsify(models.lenet_5(), density=0.1)
    data = np.random.default_rng(2).standard_normal((32, 28, 28, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = export.export_tflite(
            model, tmp_path / "int8.tflite", quantize="int8", representative_data=data,
            min_agreement=0.0,
        )
    assert result.quantize == "int8" and result.sparse_tensors == 0
    assert result.op_resolver == "BUILTIN" and result.default_delegate_error is None
    assert [s.format for s in result.storage] == ["dense"] * 4
    assert all(s.dtype == "int8" and s.zeros > 0.85 for s in result.storage)
    assert all("1x16" in s.reason for s in result.storage)
    assert "500 is not a multiple of 16" in result.storage[-1].reason  # fc2 (10, 500)
    # The check's numbers, recomputed from the file on the same 32 samples.
    outputs = _run_file(result.path, data)
    reference = np.asarray(model(data))
    assert result.samples == 32
    assert result.max_abs_error == pytest.approx(np.abs(outputs - reference).max(), rel=1e-5)
    assert result.mean_abs_error == pytest.approx(np.abs(outputs - reference).mean(), rel=1e-5)
    assert result.agreement == np.mean(outputs.argmax(-1) == reference.argmax(-1))


def test_int8_1x16_blocks_are_stored_sparse(tmp_path):
    # 3% of fc1's 1x16 blocks nonzero: sparse beats dense int8 (BENCHMARKS.md).
    model = _sparsify(models.lenet_300_100(), density=0.03, block=16, layers=["fc1"])
    data = np.random.default_rng(2).standard_normal((32, 28, 28, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = export.export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                                      representative_data=data, min_agreement=0.0)
    fc1, fc2, fc3 = result.storage
    assert fc1.format == "1x16 blocks" and fc1.shape == (300, 784) and fc1.bytes < 0.1 * fc1.dense_bytes
    assert fc2.format == fc3.format == "dense"  # no zeros
    # int8 fully-connected with 1x16 blocks (version 8) is left by XNNPACK to
    # the builtin sparse kernel: the default resolver gives the same numbers,
    # up to XNNPACK's own int8 rounding in the dense layers (2 output steps).
    assert result.op_resolver == "BUILTIN" and result.default_delegate_error is None
    builtin = _run_file(result.path, data)
    np.testing.assert_allclose(builtin, _run_file(result.path, data, WITHOUT_DELEGATES), atol=0.02)
    np.testing.assert_allclose(builtin, np.asarray(model(data)), atol=0.5)
    dense = export.export_tflite(model, tmp_path / "d.tflite", quantize="int8", sparse=False,
                                 representative_data=data, min_agreement=0.0)
    np.testing.assert_allclose(builtin, _run_file(dense.path, data), atol=0.02)
    assert result.size_bytes < 0.5 * dense.size_bytes


def _classifier(classes=32, seed=0):
    """A linear classifier with many classes: close logits, some flipped by int8."""
    import keras

    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(classes, name="fc")])
    model.layers[0].set_weights([rng.standard_normal((16, classes)).astype(np.float32),
                                 np.zeros(classes, np.float32)])
    return model


def test_int8_agreement_threshold(tmp_path):
    x = np.random.default_rng(5).standard_normal((200, 16)).astype(np.float32)
    model = _classifier()
    path = tmp_path / "m.tflite"
    first = export.export_tflite(model, path, quantize="int8", representative_data=x,
                                 min_agreement=0.0)
    agreement = first.agreement
    outputs = _run_file(first.path, x)
    assert agreement == np.mean(outputs.argmax(-1) == np.asarray(model(x)).argmax(-1))
    assert first.tolerance is None  # int8 classifier: agreement only
    assert 0.9 < agreement < 0.99  # near-ties flip under quantization (0.985 on TF 2.21)
    os.remove(path)
    with pytest.raises(RuntimeError, match=r"top-1 agreement with the Keras model .* < "
                       r"min_agreement 99.00% .*the file was not written"):
        export.export_tflite(model, path, quantize="int8", representative_data=x)
    assert not path.exists() and not list(tmp_path.iterdir())  # no temporary file either
    passed = export.export_tflite(model, path, quantize="int8", representative_data=x,
                                  min_agreement=agreement)
    assert passed.agreement == agreement and path.exists()
    # Labels give the file's accuracy; explicit atol/rtol add the tolerance check.
    labels = np.asarray(model(x)).argmax(-1)
    labelled = export.export_tflite(model, path, quantize="int8", representative_data=x,
                                    labels=labels, min_agreement=0.0)
    assert labelled.accuracy == pytest.approx(agreement)
    with pytest.raises(RuntimeError, match=r"max abs error \S+ > tolerance 1e-06"):
        export.export_tflite(model, path, quantize="int8", representative_data=x,
                             min_agreement=0.0, atol=1e-6, rtol=0)


def test_int8_callable_representative_dataset(tmp_path, images):
    model = models.lenet_300_100()

    def representative():
        for sample in images:
            yield [sample[np.newaxis]]

    result = export.export_tflite(
        model, tmp_path / "m.tflite", sparse=False, quantize="int8",
        representative_data=representative, sample_inputs=images,
        min_agreement=0.0,  # random weights: near-tied logits (see test_int8_agreement_threshold)
    )
    assert result.sparse_tensors == 0 and result.op_resolver == "BUILTIN"
    assert result.samples == len(images) and result.agreement is not None


def test_tolerance_violation_raises(sparse_mlp, tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"old")
    with pytest.raises(RuntimeError, match=r"max abs error \S+ > tolerance 0, on 8 samples; "
                       "the file was not written"):
        export.export_tflite(sparse_mlp, tmp_path / "m.tflite", quantize="dynamic", atol=0, rtol=0)
    # The rejected file never reaches the path; what was there stays.
    assert (tmp_path / "m.tflite").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_bad_arguments(sparse_mlp, tmp_path):
    p = tmp_path / "m.tflite"
    with pytest.raises(TypeError, match="Invalid type for argument `model`"):
        export.export_tflite("model", p)
    with pytest.raises(TypeError, match="argument `path`.*Received: path=3 of type int"):
        export.export_tflite(sparse_mlp, 3)
    with pytest.raises(TypeError, match="argument `sparse`. Expected 'auto' or a bool.*Received: sparse=1 of type int"):
        export.export_tflite(sparse_mlp, p, sparse=1)
    with pytest.raises(ValueError, match="argument `sparse`. Expected 'auto', True or False. Received: sparse='yes'"):
        export.export_tflite(sparse_mlp, p, sparse="yes")
    with pytest.raises(ValueError, match=r"argument `min_agreement`. Expected a fraction in \[0, 1\]"):
        export.export_tflite(sparse_mlp, p, min_agreement=2)
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


def _two_input_model():
    import keras

    a, b = keras.Input((3,), name="zeta"), keras.Input((5,), name="alpha")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    return keras.Model({"zeta": a, "alpha": b},
                       {"y": keras.layers.Dense(2, name="y")(h), "x": keras.layers.Dense(3, name="x")(h)})


def test_two_input_export(tmp_path):
    import keras

    model = _two_input_model()
    rng = np.random.default_rng(0)
    samples = {"zeta": rng.standard_normal((6, 3)), "alpha": rng.standard_normal((6, 5))}
    result = export.export_tflite(model, tmp_path / "m.tflite", sample_inputs=samples)
    assert result.samples == 6 and result.max_abs_error < 1e-5
    # Independent run on other inputs, through the signature, output by output.
    other = {"zeta": rng.standard_normal((4, 3)).astype(np.float32),
             "alpha": rng.standard_normal((4, 5)).astype(np.float32)}
    outputs = runtime.run_signature(open(result.path, "rb").read(), other, "BUILTIN")
    expected = keras.tree.flatten(model(other))
    assert [o.shape for o in outputs] == [(4, 3), (4, 2)]  # flattened: "x", then "y"
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)
    # Default samples: standard normal per input.
    assert export.export_tflite(model, tmp_path / "d.tflite").samples == 8
    with pytest.raises(ValueError, match=r"`sample_inputs`. Expected a dict with the model's "
                       r"input names \['alpha', 'zeta'\]. Received: keys \['zeta'\]"):
        export.export_tflite(model, tmp_path / "e.tflite", sample_inputs={"zeta": samples["zeta"]})
    with pytest.raises(ValueError, match=r"`sample_inputs` \(input 'alpha'\).*shape \(None, 5\)"):
        export.export_tflite(model, tmp_path / "e.tflite",
                             sample_inputs={"zeta": samples["zeta"], "alpha": samples["zeta"]})


def test_text_model_token_ids_and_mask_exports(tmp_path):
    """A small text model: int token ids and a padding mask, as keras_hub backbones take."""
    import keras

    ids = keras.Input((12,), dtype="int32", name="token_ids")
    mask = keras.Input((12,), dtype="int32", name="padding_mask")
    h = keras.layers.Embedding(50, 8)(ids)
    h = h * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model([ids, mask], logits)
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 50, (5, 12)), (rng.random((5, 12)) < 0.8).astype(np.int32)]
    result = export.export_tflite(model, tmp_path / "t.tflite", sample_inputs=samples)
    assert result.max_abs_error < 1e-5 and result.samples == 5
    with pytest.raises(ValueError, match="Expected samples when an input has unknown "
                       "dimensions or is not float"):
        export.export_tflite(model, tmp_path / "u.tflite")


@pytest.mark.slow
def test_keras_hub_distilbert_backbone_exports(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    model = keras_hub.models.DistilBertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=8)
    rng = np.random.default_rng(0)
    samples = {"token_ids": rng.integers(0, 50, (4, 8)).astype("int32"),
               "padding_mask": (rng.random((4, 8)) < 0.8).astype("int32")}
    result = export.export_tflite(model, tmp_path / "distilbert.tflite", sample_inputs=samples)
    assert result.samples == 4 and result.max_abs_error < 1e-4
    outputs = runtime.run_signature(open(result.path, "rb").read(), samples, "BUILTIN")
    np.testing.assert_allclose(outputs[0], np.asarray(model(samples)), atol=1e-4)


def test_mixed_precision_model_exports_a_float32_copy(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(8, activation="relu", dtype="mixed_float16"),
                              keras.layers.Dense(3, dtype="mixed_float16")])
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    result = export.export_tflite(model, tmp_path / "m.tflite", sample_inputs=x)
    # The file computes in float32: within float16 rounding of the mixed model.
    np.testing.assert_allclose(_run_file(result.path, x),
                               np.asarray(model(x), dtype=np.float32), atol=1e-2)
    assert model.layers[0].dtype_policy.name == "mixed_float16"  # the model is unchanged


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
