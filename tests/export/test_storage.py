"""Tests for deephoyer_tf.export.storage: per-tensor storage and TFLite's sparse encoding."""

import numpy as np
import pytest

from deephoyer_tf._internal import private_api
from deephoyer_tf.export import storage
from deephoyer_tf.export import tflite as export
from deephoyer_tf.paper import models
from tests.helpers.tflite_files import sparsify


def _tensors(content):
    """{shape: (values or dense array, sparsity)} of the rank-2 constant tensors."""
    model = private_api.tflite_to_object(content)
    found = {}
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data
        if data is None or len(t.shape) != 2:
            continue
        dtype = np.float32 if t.type == 0 else np.int8
        values = np.frombuffer(bytes(np.asarray(data, np.uint8)), dtype=dtype)
        found[tuple(int(s) for s in t.shape)] = (values, t.sparsity)
    return found


@pytest.mark.parametrize("block,quantize", [(1, None), (4, None), (16, "dynamic")])
def test_encoding_is_the_converters(block, quantize):
    """Byte for byte what TFLite's converter writes, where it writes it correctly."""
    model = sparsify(models.lenet_300_100(), density=0.1, block=block)
    converted = _tensors(export._convert(model, True, quantize, None, None))
    dense = _tensors(export._convert(model, False, quantize, None, None))
    compared = 0
    for shape, (values, sparsity) in converted.items():
        if sparsity is None:
            continue
        size = int(sparsity.dimMetadata[-1].denseSize) if len(sparsity.dimMetadata) > 2 else 1
        if shape[-1] % size:
            continue  # the converter's partial-block bug (see test_tflite)
        array = dense[shape][0].reshape(shape)
        mine, params, _ = storage.encode(array, size)
        np.testing.assert_array_equal(mine, values)
        assert list(params.traversalOrder) == list(sparsity.traversalOrder)
        assert list(params.blockMap) == list(sparsity.blockMap)
        for a, b in zip(params.dimMetadata, sparsity.dimMetadata):
            assert (a.format, a.denseSize, a.arraySegmentsType, a.arrayIndicesType) == (
                b.format, b.denseSize, b.arraySegmentsType, b.arrayIndicesType)
            if a.arrayIndices is not None:
                np.testing.assert_array_equal(a.arrayIndices.values, b.arrayIndices.values)
                np.testing.assert_array_equal(a.arraySegments.values, b.arraySegments.values)
        np.testing.assert_array_equal(storage.decode(values, sparsity, shape), array)
        compared += 1
    assert compared >= 2


@pytest.mark.parametrize("shape,block", [((7, 12), 4), ((3, 4, 5, 6), 1), ((5, 32), 16), ((9, 300), 1)])
def test_encode_decode_round_trip(shape, block):
    rng = np.random.default_rng(0)
    array = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < 0.2)
    values, sparsity, index_bytes = storage.encode(array, block)
    np.testing.assert_array_equal(storage.decode(values, sparsity, shape), array)
    if block == 1:
        assert values.size == np.count_nonzero(array)
    assert index_bytes > 0


def test_encode_rejects_partial_blocks():
    with pytest.raises(ValueError, match="last axis 302 is not a multiple of the block size 4"):
        storage.encode(np.zeros((3, 302), np.float32), 4)


def test_choice_and_reasons():
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((64, 256)).astype(np.float32)
    few_zeros = dense * (rng.random(dense.shape) < 0.8)  # 20% zeros
    blocks = dense * np.repeat(rng.random((64, 16)) < 0.1, 16, axis=1)  # 1x16 runs, 10% kept
    rare_blocks = dense * np.repeat(rng.random((64, 16)) < 0.03, 16, axis=1)  # 3% kept
    unstructured = dense * (rng.random(dense.shape) < 0.1)
    fc = "FULLY_CONNECTED"
    # The converter's threshold under sparse=True.
    fmt, _, reason = storage._choose(fc, few_zeros, "float32", True)
    assert fmt == "dense" and "under the converter's 30% threshold" in reason
    assert storage._choose(fc, unstructured, "float32", True)[0] == "csr"
    assert storage._choose(fc, blocks, "float32", True)[0] == "1x4 blocks"
    # auto: float by size (CSR at 20% zeros is larger than dense: 4 bytes + index each).
    assert storage._choose(fc, few_zeros, "float32", "auto")[0] == "dense"
    assert storage._choose(fc, unstructured, "float32", "auto")[0] == "csr"
    assert storage._choose("CONV_2D", unstructured.reshape(64, 4, 4, 16), "float32", "auto")[0] == "csr"
    # auto, int8: 1x16 blocks only.
    q = lambda a: np.round(a * 40).clip(-127, 127).astype(np.int8)  # noqa: E731
    assert storage._choose(fc, q(rare_blocks), "int8", "auto")[0] == "1x16 blocks"
    fmt, _, reason = storage._choose(fc, q(blocks), "int8", "auto")  # measured slower than dense
    assert fmt == "dense" and "of its 1x16 blocks nonzero" in reason and "up to 5%" in reason
    assert storage._choose(fc, q(blocks), "int8", True)[0] == "1x16 blocks"
    fmt, _, reason = storage._choose(fc, q(unstructured), "int8", "auto")
    assert fmt == "dense" and "zeros not in 1x16 runs" in reason
    fmt, _, reason = storage._choose(fc, q(blocks[:, :250]), "int8", "auto")
    assert fmt == "dense" and "input size 250 is not a multiple of 16" in reason
    # dynamic-range files: no blocks under auto (XNNPACK NaN).
    assert storage._choose(fc, q(rare_blocks), "int8", "auto", "dynamic")[0] == "dense"
    assert storage._choose(fc, blocks, "float32", "auto", "dynamic")[0] == "csr"
    assert storage._choose(fc, blocks, "float32", False)[0] == "dense"
