"""A keras_hub backbone (built from its config, no weights downloaded) through the pipeline.

keras_hub's encoder blocks are custom layers holding a `MultiHeadAttention`
and Dense layers: deephoyer_tf finds the kernel layers inside them. Its
`PositionEmbedding` holds a kernel-like table the package does not handle
(named in a warning); registered as kept whole, with the blocks, `shrink`
copies them.
"""

import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf.structure import cutters

keras_hub = pytest.importorskip("keras_hub")


def _bert():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=8,
    )
    rng = np.random.default_rng(0)
    backbone.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in backbone.get_weights()])
    return backbone


def _inputs():
    rng = np.random.default_rng(1)
    return {
        "token_ids": rng.integers(0, 50, (3, 8)),
        "segment_ids": rng.integers(0, 2, (3, 8)),
        "padding_mask": np.ones((3, 8), "int32"),
    }


@pytest.fixture
def kept_whole():
    classes = [keras_hub.layers.PositionEmbedding, keras_hub.layers.TransformerEncoder]
    for cls in classes:
        deephoyer_tf.register_layer(cls, kind="opaque", cutter=cutters.copy_layer)
    yield
    for cls in classes:
        deephoyer_tf.unregister_layer(cls)


@pytest.mark.slow
def test_bert_backbone_is_regularized_pruned_reported_and_shrunk(kept_whole):
    model = _bert()
    reg = deephoyer_tf.regularize(model, deephoyer_tf.HoyerSquare(1e-3), strict=True)
    # 2 blocks x (4 attention projections + 2 feed-forward Dense) + the pooler
    assert len(reg.losses) == 13
    ghs = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(1e-3), strict=True)
    values = [float(v) for v in ghs.losses]
    assert sum(v == 0.0 for v in values) == 6  # each block's heads counted once, on the query

    deephoyer_tf.prune(model, std_ratio=0.5)
    report = deephoyer_tf.sparsity_report(model, strict=True)
    attention = [r for r in report.layers if r.type == "MultiHeadAttention"]
    assert [r.name for r in attention] == [
        "transformer_layer_0/self_attention_layer", "transformer_layer_1/self_attention_layer"
    ]
    kernels = sum(int(np.prod(w.shape)) for w in model.trainable_weights
                  if len(w.shape) >= 2 and "bias" not in w.path and "position" not in w.path)
    assert report.total_weights == kernels
    assert 0.3 < 1 - report.density < 0.7

    small = deephoyer_tf.shrink(model)
    x = _inputs()
    a, b = model.predict(x, verbose=0), small.predict(x, verbose=0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert "TransformerEncoder" in small.shrink_summary.kept_whole["transformer_layer_0"]


def test_unregistered_position_embedding_is_named():
    with pytest.warns(deephoyer_tf.UnhandledLayerWarning, match=r"'position_embedding' \(PositionEmbedding, kernels \[\(8, 16\)\]\)"):
        deephoyer_tf.sparsity_report(_bert())
