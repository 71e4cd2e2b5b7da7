"""Tests for deephoyer_tf.export.latency: single-sample latency of a .tflite file."""

import dataclasses

import keras
import pytest

from deephoyer_tf.export import latency
from deephoyer_tf.export import runtime
from deephoyer_tf.export import tflite as export
from deephoyer_tf.paper import models
from tests.helpers.tf_bugs import warns_on_tf_2_21
from tests.helpers.tflite_files import WITHOUT_DELEGATES
from tests.helpers.tflite_files import sparsify as _sparsify


@pytest.fixture(scope="module")
def sparse_mlp():
    """A ~90% sparse LeNet-300-100 (unstructured)."""
    return _sparsify(models.lenet_300_100(), density=0.1)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """A float .tflite file of a small Dense model (4 -> 3)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    path = tmp_path_factory.mktemp("latency") / "tiny.tflite"
    return export.export_tflite(model, path, sparse=False).path


def test_tflite_latency(sparse_mlp, tmp_path):
    path = export.export_tflite(sparse_mlp, tmp_path / "m.tflite").path
    timing = latency.tflite_latency(path, runs=50, warmup=5)
    assert 0 < timing.median_s <= timing.p90_s < 1.0
    assert (timing.runs, timing.num_threads, timing.op_resolver) == (50, 1, "BUILTIN")
    with warns_on_tf_2_21("failed to prepare"):
        dynamic = export.export_tflite(sparse_mlp, tmp_path / "d.tflite", quantize="dynamic",
                                       sparse=True).path
    assert latency.tflite_latency(dynamic, runs=5, warmup=0).op_resolver == WITHOUT_DELEGATES
    with pytest.raises(FileNotFoundError, match="TFLite file not found"):
        latency.tflite_latency(tmp_path / "none.tflite")
    with pytest.raises(ValueError, match="Expected an int >= 1. Received: runs=0"):
        latency.tflite_latency(path, runs=0)
    with pytest.raises(ValueError, match="Received: op_resolver='xnnpack'"):
        latency.tflite_latency(path, op_resolver="xnnpack")
    with pytest.raises(ValueError, match="Received: op_resolver='xnnpack'"):
        runtime.load_interpreter(path, op_resolver="xnnpack")
    with pytest.raises(FileNotFoundError, match="TFLite file not found"):
        runtime.load_interpreter(tmp_path / "none.tflite")



def test_result_fields_and_runtime(tiny_file):
    timing = latency.tflite_latency(str(tiny_file), runs=3, warmup=0, num_threads=2)
    assert isinstance(timing, latency.LatencyResult)
    assert (timing.runs, timing.num_threads, timing.op_resolver) == (3, 2, "BUILTIN")
    assert timing.runtime == runtime.interpreter_module()[2]
    assert timing.runtime in ("ai_edge_litert", "tf.lite")
    assert 0 < timing.median_s <= timing.p90_s
    with pytest.raises(dataclasses.FrozenInstanceError):
        timing.runs = 4


def test_explicit_op_resolver_is_used_as_given(tiny_file):
    timing = latency.tflite_latency(tiny_file, runs=2, warmup=1, op_resolver="BUILTIN_REF")
    assert timing.op_resolver == "BUILTIN_REF"


def test_bad_arguments_exact_messages(tiny_file, tmp_path):
    with pytest.raises(
        TypeError,
        match=r"^Invalid type for argument `path`\. Expected a path \(str or os\.PathLike\)\. "
        r"Received: path=3 of type int$",
    ):
        latency.tflite_latency(3)
    with pytest.raises(FileNotFoundError, match=r"^TFLite file not found: "):
        latency.tflite_latency(tmp_path)  # a directory is not a file
    with pytest.raises(
        ValueError, match=r"^Invalid value for argument `warmup`\. Expected an int >= 0\. Received: warmup=-1$"
    ):
        latency.tflite_latency(tiny_file, warmup=-1)
    with pytest.raises(
        ValueError,
        match=r"^Invalid value for argument `num_threads`\. Expected an int >= 1\. Received: num_threads=0$",
    ):
        latency.tflite_latency(tiny_file, num_threads=0)
    with pytest.raises(TypeError, match=r"^Invalid type for argument `runs`\. Expected an int\. Received: runs=1\.5 of type float$"):
        latency.tflite_latency(tiny_file, runs=1.5)
