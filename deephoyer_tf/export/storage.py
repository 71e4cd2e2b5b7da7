"""Per-tensor storage of weights in a ``.tflite`` file: dense, CSR or 1xB blocks.

`export_tflite` converts the model once, densely, then stores each weight
tensor in the format chosen here, so that the storage of every tensor is
decided (and reported) before the file exists, and TF 2.21's block-encoding
bug (a dropped partial block, see `deephoyer_tf.export.tflite`) cannot occur.

The encoding is the one TFLite's converter writes with
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (its ``DenseToSparse`` pass):

* traversal order ``0..n-1`` (then the block dimension), every dimension
  DENSE except the last, which is SPARSE_CSR (segments per row prefix, column
  or block-column indices), indices as uint8, uint16 or int32 (the smallest
  that holds them);
* ``FULLY_CONNECTED`` weights whose zeros come in 1xB runs along the input
  axis (B = 4 for float32, 16 for int8) in 1xB blocks, read directly by
  TFLite's sparse fully-connected kernels;
* anything else (convolutions, unstructured zeros) in CSR, read through a
  ``DENSIFY`` op that restores the dense tensor once, when the interpreter
  first runs (smaller file, dense speed).

The converter's own rules (measured against its output and read from its
``DenseToSparse`` pass, TF 2.21): a rank-2 or rank-4 weight of a
``FULLY_CONNECTED``, ``CONV_2D``, ``DEPTHWISE_CONV_2D`` or ``TRANSPOSE_CONV``
is stored sparse only when at least 30% of its entries are zero
(`CONVERTER_MIN_SPARSITY`); it is stored in 1xB blocks when the fraction of
entries outside nonzero blocks is more than 0.9 (0.8 for int8) times the
fraction of zeros (`CONVERTER_BLOCK_RATIO`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deephoyer_tf._internal import private_api

SPARSE_MODES = ("auto", True, False)

# The converter's DenseToSparse thresholds (TF 2.21).
CONVERTER_MIN_SPARSITY = 0.3
CONVERTER_BLOCK_RATIO = {"float32": 0.9, "int8": 0.8}
BLOCK_SIZE = {"float32": 4, "int8": 16}
# sparse="auto" stores int8 weights in 1x16 blocks only when at most this
# fraction of the blocks holds a nonzero: measured on x86 (LiteRT 2.3, one
# thread), the int8 sparse kernel beats XNNPACK's dense int8 at 3% of blocks
# nonzero (2x) but not at 6% (equal) or 10-12% (0.76-0.83x); BENCHMARKS.md.
INT8_BLOCK_MAX_DENSITY = 0.05

_WEIGHT_OPS = {
    "FULLY_CONNECTED": 1,
    "CONV_2D": 1,
    "DEPTHWISE_CONV_2D": 1,
    "TRANSPOSE_CONV": 1,
}
_DENSIFY = 124  # BuiltinOperator.DENSIFY
_TYPES = {0: "float32", 9: "int8"}  # TensorType FLOAT32, INT8
_DENSE, _CSR = 0, 1  # DimensionType
_INDEX_TYPES = ((255, 3, "Uint8VectorT", np.uint8), (65535, 2, "Uint16VectorT", np.uint16),
                (2**31 - 1, 1, "Int32VectorT", np.int32))


@dataclasses.dataclass(frozen=True)
class TensorStorage:
    """How one weight tensor is stored in the file, and why.

    Attributes:
        name: the tensor's name in the file.
        op: the operator that reads it (``"FULLY_CONNECTED"``, ``"CONV_2D"``...).
        shape: its shape in the file (TFLite layout).
        dtype: ``"float32"`` or ``"int8"``.
        zeros: fraction of its entries that are zero (after quantization).
        format: ``"dense"``, ``"csr"`` (read through ``DENSIFY``) or
            ``"1x4 blocks"`` / ``"1x16 blocks"``.
        bytes: bytes of its data (values, indices and segments).
        dense_bytes: bytes it takes dense.
        reason: why this format.
    """

    name: str
    op: str
    shape: tuple[int, ...]
    dtype: str
    zeros: float
    format: str
    bytes: int
    dense_bytes: int
    reason: str

    @property
    def sparse(self) -> bool:
        return self.format != "dense"

    def __str__(self) -> str:
        return (f"{self.name} {self.shape} {self.dtype}: {self.format} "
                f"({self.zeros:.0%} zeros, {self.bytes:,} of {self.dense_bytes:,} bytes): "
                f"{self.reason}")


# ------------------------------------------------------------------ encoding


def _index_vector(values):
    values = np.asarray(values, dtype=np.int64)
    top = int(values.max()) if values.size else 0
    for limit, code, cls_name, dtype in _INDEX_TYPES:
        if top <= limit:
            from tensorflow.lite.python import schema_py_generated as schema

            vector = getattr(schema, cls_name)()
            vector.values = values.astype(dtype)
            return code, vector, values.size * np.dtype(dtype).itemsize
    raise ValueError(f"index {top} too large for TFLite's sparse format")


def encode(dense: np.ndarray, block: int = 1):
    """TFLite sparse encoding of `dense`: ``(values, sparsity, index_bytes)``.

    ``block == 1``: CSR over the last axis; ``block > 1`` (rank 2 only, last
    axis a multiple of `block`): 1x`block` blocks along the last axis.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    dense = np.asarray(dense)
    shape = dense.shape
    if block > 1:
        rows, cols = shape
        if cols % block:
            raise ValueError(f"last axis {cols} is not a multiple of the block size {block}")
        cells = dense.reshape(rows, cols // block, block)
        keep = np.any(cells != 0, axis=-1)
        values = cells[keep].reshape(-1)
        columns = np.nonzero(keep)[1]
        counts = keep.sum(axis=1)
        prefix_sizes = (rows,)
    else:
        flat = dense.reshape(-1, shape[-1])
        keep = flat != 0
        values = flat[keep]
        columns = np.nonzero(keep)[1]
        counts = keep.sum(axis=1)
        prefix_sizes = shape[:-1]
    segments = np.concatenate([[0], np.cumsum(counts)])
    metadata = []
    for size in prefix_sizes:
        d = schema.DimensionMetadataT()
        d.format, d.denseSize = _DENSE, int(size)
        metadata.append(d)
    csr = schema.DimensionMetadataT()
    csr.format, csr.denseSize = _CSR, 0
    csr.arraySegmentsType, csr.arraySegments, segment_bytes = _index_vector(segments)
    csr.arrayIndicesType, csr.arrayIndices, index_bytes = _index_vector(columns)
    metadata.append(csr)
    sparsity = schema.SparsityParametersT()
    rank = len(shape)
    if block > 1:
        d = schema.DimensionMetadataT()
        d.format, d.denseSize = _DENSE, int(block)
        metadata.append(d)
        sparsity.traversalOrder = np.arange(rank + 1, dtype=np.int32)
        sparsity.blockMap = np.array([rank - 1], dtype=np.int32)
    else:
        sparsity.traversalOrder = np.arange(rank, dtype=np.int32)
        sparsity.blockMap = np.zeros(0, dtype=np.int32)
    sparsity.dimMetadata = metadata
    return values, sparsity, segment_bytes + index_bytes


def decode(values: np.ndarray, sparsity, shape) -> np.ndarray:
    """The dense array of an encoding written by `encode` (or the converter)."""
    shape = tuple(int(s) for s in shape)
    metadata = sparsity.dimMetadata
    csr = metadata[len(shape) - 1]
    block = int(metadata[-1].denseSize) if len(metadata) > len(shape) else 1
    segments = np.asarray(csr.arraySegments.values, dtype=np.int64)
    columns = np.asarray(csr.arrayIndices.values, dtype=np.int64)
    rows = int(np.prod(shape[:-1]))
    dense = np.zeros((rows, shape[-1]), dtype=np.asarray(values).dtype)
    row_of = np.repeat(np.arange(rows), np.diff(segments))
    values = np.asarray(values).reshape(-1, block)
    for offset in range(block):
        dense[row_of, columns * block + offset] = values[:, offset]
    return dense.reshape(shape)


# ------------------------------------------------------------------ planning


def _buffer_array(model, tensor, dtype):
    data = model.buffers[tensor.buffer].data
    if data is None:
        return None
    return np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=dtype).reshape(
        [int(s) for s in tensor.shape])


def _name(tensor):
    value = tensor.name
    return value.decode() if isinstance(value, bytes) else str(value)


def _choose(op, array, dtype, sparse, quantize=None):
    """(format, block, reason) for one weight tensor."""
    size = array.size
    zeros = 1.0 - np.count_nonzero(array) / size
    item = np.dtype(dtype).itemsize
    dense_bytes = size * item
    if sparse is False:
        return "dense", 1, "sparse=False"
    if zeros < CONVERTER_MIN_SPARSITY and sparse is True:
        return "dense", 1, (f"{zeros:.0%} zeros, under the converter's "
                            f"{CONVERTER_MIN_SPARSITY:.0%} threshold")
    block, block_note, block_density = 1, "", 1.0
    if op == "FULLY_CONNECTED" and zeros > 0:
        b = BLOCK_SIZE[dtype]
        cols = array.shape[-1]
        if cols % b:
            block_note = (f"; input size {cols} is not a multiple of {b}, so no 1x{b} blocks "
                          "(TF 2.21's converter would drop the last partial block)")
        else:
            cells = array.reshape(array.shape[0], cols // b, b)
            block_density = float(np.mean(np.any(cells != 0, axis=-1)))
            block_zeros = 1.0 - block_density
            if block_zeros / zeros > CONVERTER_BLOCK_RATIO[dtype]:
                block = b
            else:
                block_note = f"; zeros not in 1x{b} runs ({block_zeros:.0%} in whole blocks)"
    if sparse is True:
        if block > 1:
            return f"1x{block} blocks", block, f"{zeros:.0%} zeros in 1x{block} runs (sparse=True)"
        return "csr", 1, f"{zeros:.0%} zeros (sparse=True){block_note}"
    # sparse == "auto"
    if quantize == "dynamic" and block > 1:
        # XNNPACK reads block-sparse weights of dynamic-range files (whose
        # fully-connected ops have version 12) as dense: NaN (TF 2.21).
        block, block_note = 1, "; no blocks in dynamic-range files (XNNPACK returns NaN for them)"
    values, _, index_bytes = encode(array, block)
    sparse_bytes = values.size * item + index_bytes
    if dtype == "int8" and block > 1 and block_density > INT8_BLOCK_MAX_DENSITY:
        block_note = (f"; {block_density:.0%} of its 1x16 blocks nonzero: the int8 sparse kernel "
                      f"is faster than dense int8 only up to {INT8_BLOCK_MAX_DENSITY:.0%}")
        block = 1
    if dtype == "int8" and (block == 1 or quantize == "dynamic"):
        return "dense", 1, ("int8 weights are read fastest dense: CSR int8 goes through "
                            "DENSIFY and fails under XNNPACK; sparse int8 kernels take only "
                            f"1x16 blocks{block_note or '; zeros not in 1x16 runs'}")
    if sparse_bytes >= dense_bytes:
        return "dense", 1, (f"{zeros:.0%} zeros: sparse encoding ({sparse_bytes:,} bytes) "
                            f"not smaller than dense{block_note}")
    if block > 1:
        return f"1x{block} blocks", block, (f"{zeros:.0%} zeros in 1x{block} runs: smaller, and "
                                            "read by the sparse fully-connected kernel")
    return "csr", 1, (f"{zeros:.0%} zeros: smaller ({sparse_bytes:,} of {dense_bytes:,} bytes); "
                      f"DENSIFY restores it once, dense speed{block_note}")


def _mark_sparse_ops(model, ops):
    """Gives operators with block-sparse weights their own operator code, version >= 8.

    TFLite versions ``FULLY_CONNECTED`` with sparse weights as 8 (the
    converter does so); the XNNPACK delegate leaves such nodes to the builtin
    sparse kernels. With the dense file's version it would read the sparse
    buffer as dense (NaN). Other operators keep their code and delegate.
    """
    import copy

    clones = {}
    for op in ops:
        index = op.opcodeIndex
        if index not in clones:
            code = copy.deepcopy(model.operatorCodes[index])
            code.version = max(int(code.version), 8)
            model.operatorCodes.append(code)
            clones[index] = len(model.operatorCodes) - 1
        op.opcodeIndex = clones[index]


def apply(content: bytes, sparse, quantize=None) -> tuple[bytes, tuple[TensorStorage, ...]]:
    """Stores the weights of the dense file `content` per `sparse`; returns (bytes, report).

    `sparse`: ``"auto"`` (sparse only where it makes the file smaller and
    does not slow it down: float tensors in CSR or 1x4 blocks, int8 tensors
    only in 1x16 blocks), True (the converter's rules, without partial
    blocks) or False (all dense). `quantize`: the file's quantization mode
    (``"dynamic"`` files get no blocks under ``"auto"``).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = private_api.tflite_to_object(content)
    graph = model.subgraphs[0]
    report = []
    densify = []
    sparse_ops = []  # operators reading block-sparse weights
    seen = set()
    for op in graph.operators:
        kind = private_api.tflite_opcode_name(model, op.opcodeIndex)
        slot = _WEIGHT_OPS.get(kind)
        if slot is None or len(op.inputs) <= slot:
            continue
        index = int(op.inputs[slot])
        if index < 0 or index in seen:
            continue
        tensor = graph.tensors[index]
        dtype = _TYPES.get(tensor.type)
        if dtype is None or len(tensor.shape) not in (2, 4) or tensor.sparsity is not None:
            continue
        array = _buffer_array(model, tensor, dtype)
        if array is None or array.size == 0:
            continue
        seen.add(index)
        fmt, block, reason = _choose(kind, array, dtype, sparse, quantize)
        item = np.dtype(dtype).itemsize
        zeros = 1.0 - np.count_nonzero(array) / array.size
        nbytes = array.size * item
        if fmt != "dense":
            values, sparsity, index_bytes = encode(array, block)
            model.buffers[tensor.buffer].data = np.frombuffer(
                np.ascontiguousarray(values).tobytes(), dtype=np.uint8)
            nbytes = values.size * item + index_bytes
            if block > 1:
                tensor.sparsity = sparsity
                sparse_ops.append(op)
            else:
                densify.append((index, sparsity))
        report.append(TensorStorage(
            name=_name(tensor), op=kind, shape=tuple(int(s) for s in tensor.shape),
            dtype=dtype, zeros=float(zeros), format=fmt, bytes=int(nbytes),
            dense_bytes=int(array.size * item), reason=reason,
        ))
    _mark_sparse_ops(model, sparse_ops)
    if densify:
        codes = [i for i, c in enumerate(model.operatorCodes)
                 if max(c.builtinCode, c.deprecatedBuiltinCode) == _DENSIFY]
        if codes:
            code = codes[0]
        else:
            c = schema.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = _DENSIFY, _DENSIFY, 1
            model.operatorCodes.append(c)
            code = len(model.operatorCodes) - 1
        empty = schema.BufferT()
        model.buffers.append(empty)
        empty_index = len(model.buffers) - 1
        new_ops = []
        for index, sparsity in densify:
            tensor = graph.tensors[index]
            source = schema.TensorT()
            source.shape, source.type, source.buffer = tensor.shape, tensor.type, tensor.buffer
            source.name, source.quantization, source.sparsity = tensor.name, tensor.quantization, sparsity
            graph.tensors.append(source)
            tensor.buffer = empty_index
            tensor.name = (_name(tensor) + "/densified").encode()
            op = schema.OperatorT()
            op.opcodeIndex = code
            op.inputs = np.array([len(graph.tensors) - 1], dtype=np.int32)
            op.outputs = np.array([index], dtype=np.int32)
            new_ops.append(op)
        graph.operators = new_ops + list(graph.operators)
    return private_api.tflite_to_bytes(model), tuple(report)
