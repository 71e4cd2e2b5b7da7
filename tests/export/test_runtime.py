"""Tests for deephoyer_tf.export.runtime: loading interpreters and choosing op resolvers."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

from deephoyer_tf.export import runtime
from deephoyer_tf.export import tflite as export
from deephoyer_tf.paper import models
from tests.helpers.tf_bugs import warns_on_tf_2_21
from tests.helpers.tflite_files import WITHOUT_DELEGATES
from tests.helpers.tflite_files import sparsify


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small float Dense model (4 -> 3) and its dense .tflite file."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    model.set_weights([np.arange(12, dtype="float32").reshape(4, 3) / 10, np.array([1.0, -1.0, 0.5], "float32")])
    path = tmp_path_factory.mktemp("runtime") / "tiny.tflite"
    return model, pathlib.Path(export.export_tflite(model, path, sparse=False).path)


def test_interpreter_module_is_litert_when_installed():
    cls, resolvers, name = runtime.interpreter_module()
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert import interpreter as litert

        assert (cls, resolvers, name) == (litert.Interpreter, litert.OpResolverType, "ai_edge_litert")
    else:
        assert name == "tf.lite"
    for resolver in runtime.OP_RESOLVERS[1:]:
        assert hasattr(resolvers, resolver)


def test_check_op_resolver_exact_message():
    for resolver in runtime.OP_RESOLVERS:
        runtime.check_op_resolver(resolver)
    with pytest.raises(ValueError) as error:
        runtime.check_op_resolver("builtin")
    assert str(error.value) == (
        "Invalid value for argument `op_resolver`. Expected one of ('auto', 'BUILTIN', "
        "'BUILTIN_WITHOUT_DEFAULT_DELEGATES', 'BUILTIN_REF'). Received: op_resolver='builtin'"
    )


def test_dense_float_file_auto_resolves_to_builtin(tiny):
    _, path = tiny
    content = path.read_bytes()
    assert runtime.sparse_tensors(content) == []
    assert runtime.auto_op_resolver(content) == "BUILTIN"


def test_load_interpreter_runs_the_model(tiny):
    model, path = tiny
    x = np.random.default_rng(0).standard_normal((1, 4)).astype("float32")
    for resolver in runtime.OP_RESOLVERS:
        it = runtime.load_interpreter(str(path), op_resolver=resolver, num_threads=1)
        it.allocate_tensors()
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        it.set_tensor(inp["index"], x)
        it.invoke()
        np.testing.assert_allclose(it.get_tensor(out["index"]), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_run_matches_the_model_sample_by_sample(tiny):
    model, path = tiny
    x = np.random.default_rng(1).standard_normal((5, 4)).astype("float32")
    y = runtime.run(path.read_bytes(), x, "BUILTIN")
    assert y.shape == (5, 3) and y.dtype == np.float64
    np.testing.assert_allclose(y, np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_load_interpreter_bad_arguments(tiny, tmp_path):
    _, path = tiny
    with pytest.raises(
        TypeError,
        match=r"^Invalid type for argument `path`\. Expected a path \(str or os\.PathLike\)\. "
        r"Received: path=None of type NoneType$",
    ):
        runtime.load_interpreter(None)
    missing = tmp_path / "none.tflite"
    with pytest.raises(FileNotFoundError, match=f"^TFLite file not found: {missing}$"):
        runtime.load_interpreter(missing)
    with pytest.raises(ValueError, match=r"Received: op_resolver='XNNPACK'$"):
        runtime.load_interpreter(path, op_resolver="XNNPACK")


def test_is_integer():
    assert runtime.is_integer({"dtype": np.int8}) and runtime.is_integer({"dtype": np.int32})
    assert not runtime.is_integer({"dtype": np.float32})


def test_integer_sparse_tensors_auto_resolve_without_delegates(tmp_path):
    model = sparsify(models.lenet_300_100(), density=0.1)
    with warns_on_tf_2_21("failed to prepare"):
        path = export.export_tflite(model, tmp_path / "d.tflite", quantize="dynamic", sparse=True).path
    content = pathlib.Path(path).read_bytes()
    sparse = runtime.sparse_tensors(content)
    assert sparse and all(d["sparsity_parameters"] for d in sparse)
    assert any(runtime.is_integer(d) for d in sparse)
    assert runtime.auto_op_resolver(content) == WITHOUT_DELEGATES
