"""keras_hub models (built from small configs, no weights downloaded) through the pipeline.

keras_hub's transformer blocks are registered by the package (on first sight
of a keras_hub layer): `regularize` reaches the kernel layers inside them, and
`shrink` removes their dead heads and feed-forward units
(`deephoyer_tf.structure.keras_hub_layers`), keeping the residual stream whole.
"""

import numpy as np
import pytest

import deephoyer_tf

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")

from deephoyer_tf.structure import keras_hub_layers  # noqa: E402 (after the skip)


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _bert():
    return _randomized(keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=8,
    ))


def _inputs(segments=False):
    rng = np.random.default_rng(1)
    x = {"token_ids": rng.integers(0, 50, (3, 8)), "padding_mask": np.ones((3, 8), "int32")}
    if segments:
        x["segment_ids"] = rng.integers(0, 2, (3, 8))
    return x


def _sequence(y):
    return y["sequence_output"] if isinstance(y, dict) else y


def _rel_err(a, b):
    a, b = np.asarray(_sequence(a)), np.asarray(_sequence(b))
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.slow
def test_bert_backbone_is_regularized_pruned_reported_and_shrunk():
    model = _bert()
    reg = deephoyer_tf.regularize(model, deephoyer_tf.HoyerSquare(1e-3), strict=True)
    assert type(reg) is type(model)
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
    x = _inputs(segments=True)
    a, b = model.predict(x, verbose=0), small.predict(x, verbose=0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert "TransformerEncoder: its input and output (the residual stream) keep every unit" in (
        small.shrink_summary.kept_whole["transformer_layer_0"])


def test_keras_hub_embeddings_are_registered_as_kept_whole():
    # strict: no kernel of the backbone escapes the registry
    report = deephoyer_tf.sparsity_report(_bert(), strict=True)
    assert report.total_weights > 0


# --- which heads go --------------------------------------------------------------------


@pytest.mark.parametrize(
    "dead, num_kv, query, kv",
    [
        # plain multi-head attention: every dead head goes
        ([1, 0, 1, 0], 4, [0, 1, 0, 1], [0, 1, 0, 1]),
        # a key/value head whose query heads are all dead goes with them
        ([1, 1, 1, 0, 0, 1], 2, [0, 0, 0, 1, 1, 0], [0, 1]),
        # else the same number of dead query heads per kept group (here 1)
        ([1, 1, 0, 0, 1, 0], 2, [0, 1, 1, 1, 0, 1], [1, 1]),
        ([1, 0, 0, 0, 0, 0], 2, [1, 1, 1, 1, 1, 1], [1, 1]),  # the other group has none dead
        ([1, 1, 1, 1], 2, [0, 1, 0, 0], [1, 0]),  # all dead: one head kept
    ],
)
def test_heads_are_chosen_with_a_whole_query_per_key_value_ratio(dead, num_kv, query, kv):
    q, k = keras_hub_layers._choose_heads(np.array(dead, bool), num_kv)
    np.testing.assert_array_equal(q, np.array(query, bool))
    np.testing.assert_array_equal(k, np.array(kv, bool))
    assert q.sum() % k.sum() == 0  # the ratio stays whole


# --- an encoder block, cut exactly ---------------------------------------------------------


def _encoder_model():
    inputs = keras.Input((6, 16))
    block = keras_hub.layers.TransformerEncoder(intermediate_dim=12, num_heads=4, name="block")
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(block(inputs)))
    return _randomized(model)


def _zero(array, index, axis):
    """Sets ``array``'s entries at `index` along `axis` to zero, in place."""
    where = [slice(None)] * array.ndim
    where[axis] = index
    array[tuple(where)] = 0


def _head_slices(block, role):
    layer = keras_hub_layers._projections(block, keras_hub_layers.spec_for(block))[role]
    return layer, keras_hub_layers._head_letter_axes(layer, role)


def test_encoder_block_loses_dead_heads_and_units_with_constants_folded():
    model = _encoder_model()
    block = model.get_layer("block")
    out, (axis, _) = _head_slices(block, "output")
    k = out.kernel.numpy()
    _zero(k, 1, axis)  # head 1: zero output rows
    out.kernel.assign(k)
    value, (v_axis, _) = _head_slices(block, "value")
    k = value.kernel.numpy()
    _zero(k, 2, v_axis)  # head 2: zero value kernel, nonzero value bias: a constant
    value.kernel.assign(k)
    query, (q_axis, _) = _head_slices(block, "query")
    k = query.kernel.numpy()
    _zero(k, 3, q_axis)  # head 3: zero query: attends uniformly, NOT dead
    query.kernel.assign(k)
    w1, w2 = block._feedforward_intermediate_dense, block._feedforward_output_dense
    k, b = w1.kernel.numpy(), w1.bias.numpy()
    k[:, [3, 4]] = 0
    b[3], b[4] = 0.7, -0.7  # unit 3: the constant relu(0.7), folded; unit 4: relu(-0.7) = 0
    w1.kernel.assign(k)
    w1.bias.assign(b)
    k = w2.kernel.numpy()
    k[5] = 0  # unit 5: zero output row
    w2.kernel.assign(k)

    live = keras_hub_layers.block_liveness(block)
    np.testing.assert_array_equal(live.query_heads, [True, False, False, True])
    np.testing.assert_array_equal(live.constant_heads, [False, False, True, False])
    np.testing.assert_array_equal(np.flatnonzero(~live.units), [3, 4, 5])
    np.testing.assert_array_equal(np.flatnonzero(live.constant_units), [3])

    small = deephoyer_tf.shrink(model)
    cut = small.get_layer("block")
    assert type(cut).__name__ == "HeadSizedTransformerEncoder"
    assert (cut.num_heads, cut.key_dim, cut.intermediate_dim) == (2, 4, 9)
    x = np.random.default_rng(2).normal(size=(2, 6, 16)).astype("float32")
    assert _rel_err(model(x), small(x)) <= 1e-5
    assert small.count_params() < model.count_params()
    assert "2/4 query heads" in small.shrink_summary.kept_whole["block"]


def test_shrunk_encoder_saves_and_loads_safely(tmp_path):
    model = _encoder_model()
    block = model.get_layer("block")
    out, (axis, _) = _head_slices(block, "output")
    k = out.kernel.numpy()
    _zero(k, 0, axis)
    out.kernel.assign(k)
    small = deephoyer_tf.shrink(model)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = deephoyer_tf.load_model(path)
    x = np.random.default_rng(3).normal(size=(2, 6, 16)).astype("float32")
    np.testing.assert_allclose(loaded(x), small(x), atol=1e-6)
    assert loaded.get_layer("block").num_heads == 3


def test_a_lambda_next_to_keras_hub_layers_is_still_refused(tmp_path):
    inputs = keras.Input((6, 16))
    x = keras.layers.Lambda(lambda t: t + 1.0, name="plus")(inputs)
    model = keras.Model(inputs, keras_hub.layers.TransformerEncoder(8, 2, name="block")(x))
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(deephoyer_tf.UnsafeModelError, match=r"layer 'plus \(Lambda\)' holds a Lambda layer"):
        deephoyer_tf.load_model(path)


# --- backbones -----------------------------------------------------------------------------

BACKBONES = {
    "DistilBertBackbone": dict(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=16,
                               intermediate_dim=32, max_sequence_length=8),
    "GPT2Backbone": dict(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=16,
                         intermediate_dim=32, max_sequence_length=8),
    "GemmaBackbone": dict(vocabulary_size=50, num_layers=2, num_query_heads=4,
                          num_key_value_heads=2, hidden_dim=16, intermediate_dim=32, head_dim=4),
    "LlamaBackbone": dict(vocabulary_size=50, num_layers=2, num_query_heads=4,
                          num_key_value_heads=2, hidden_dim=16, intermediate_dim=32),
    "MistralBackbone": dict(vocabulary_size=50, num_layers=2, num_query_heads=4,
                            num_key_value_heads=2, hidden_dim=16, intermediate_dim=32),
    "QwenBackbone": dict(vocabulary_size=50, num_layers=2, num_query_heads=4,
                         num_key_value_heads=2, hidden_dim=16, intermediate_dim=32),
}
# config keys of the query and key/value heads (multi-head attention: one key/value head per query)
HEAD_KEYS = {"DistilBertBackbone": ("num_heads", None), "GPT2Backbone": ("num_heads", None)}


def _blocks(model):
    return [layer for layer in model.layers if type(layer).__name__.endswith(
        ("TransformerEncoder", "DecoderBlock", "TransformerDecoder"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_dead_heads_and_units_are_removed_exactly(name, tmp_path):
    model = _randomized(getattr(keras_hub.models, name)(**BACKBONES[name]))
    regularized = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(1e-3), strict=True)
    assert type(regularized) is type(model)
    assert len(regularized.losses) > 0
    blocks = _blocks(model)
    assert len(blocks) == 2
    dead_heads = ([2, 3], [0, 2])  # block 0: all of key/value head 1's queries; block 1: one per group
    for block, heads in zip(blocks, dead_heads):
        out, (axis, _) = _head_slices(block, "output")
        k = out.kernel.numpy()
        for h in heads:
            _zero(k, h, axis)
        out.kernel.assign(k)
        reader = keras_hub_layers._attr(block, keras_hub_layers.spec_for(block).reader)
        k = reader.kernel.numpy()
        k[[1, 5, 7]] = 0
        reader.kernel.assign(k)

    small = deephoyer_tf.shrink(model)
    x = _inputs()
    assert _rel_err(model.predict(x, verbose=0), small.predict(x, verbose=0)) <= 1e-5
    assert small.count_params() < model.count_params()
    heads_key, kv_key = HEAD_KEYS.get(name, ("num_query_heads", "num_key_value_heads"))
    cut = _blocks(small)
    units = 13 if name == "GemmaBackbone" else 29  # Gemma's intermediate_dim is twice its units
    for block in cut:
        config = block.get_config()
        assert config[heads_key] == 2
        assert config["intermediate_dim"] == units * (2 if name == "GemmaBackbone" else 1)
    if kv_key is not None:
        assert [b.get_config()[kv_key] for b in cut] == [1, 2]

    path = tmp_path / "small.keras"
    small.save(path)
    loaded = deephoyer_tf.load_model(path)
    assert _rel_err(small.predict(x, verbose=0), loaded.predict(x, verbose=0)) <= 1e-6


@pytest.mark.slow
def test_regularized_backbones_keep_their_class_and_serve_their_task_model(tmp_path):
    vit = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=2,
                                       num_heads=2, hidden_dim=8, mlp_dim=16)
    reg = deephoyer_tf.regularize(vit, deephoyer_tf.HoyerSquare(1e-3), strict=True)
    assert type(reg) is keras_hub.models.ViTBackbone
    # per block: 4 attention projections and 2 MLP Dense; and the patch embedding's convolution
    assert len(reg.losses) == 2 * 6 + 1
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(reg.predict(images, verbose=0), vit.predict(images, verbose=0), atol=1e-6)
    small = deephoyer_tf.shrink(vit)  # ViT's encoder is one layer: kept whole, and said so
    np.testing.assert_allclose(small.predict(images, verbose=0), vit.predict(images, verbose=0), atol=1e-6)
    assert small.shrink_summary.kept_whole["vit_encoder"].startswith("ViTEncoder holds all of ViT's blocks")

    bert = keras_hub.models.DistilBertBackbone(**BACKBONES["DistilBertBackbone"])
    reg = deephoyer_tf.regularize(bert, deephoyer_tf.HoyerSquare(1e-3))
    assert type(reg) is keras_hub.models.DistilBertBackbone
    classifier = keras_hub.models.DistilBertTextClassifier(backbone=reg, num_classes=2, preprocessor=None)
    assert classifier.predict(_inputs(), verbose=0).shape == (3, 2)
    assert len(classifier.losses) == len(reg.losses) == 12

    path = tmp_path / "bert.keras"
    bert.save(path)
    assert type(deephoyer_tf.load_model(path)) is keras_hub.models.DistilBertBackbone


def _group_hs(rows):
    norms = np.sqrt((np.asarray(rows, np.float64) ** 2).sum(axis=1))
    return norms.sum() ** 2 / (norms ** 2).sum()


def _rows(kernel, axis):
    kernel = np.moveaxis(np.asarray(kernel), axis, 0)
    return kernel.reshape(kernel.shape[0], -1)


def test_group_regularizer_groups_a_gqa_block_by_what_shrink_removes():
    model = _randomized(keras_hub.models.GemmaBackbone(**BACKBONES["GemmaBackbone"] | {"num_layers": 1}))
    strength = 1e-3
    reg = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(strength), strict=True)
    block = _blocks(reg)[0]
    p = keras_hub_layers._projections(block, keras_hub_layers.spec_for(block))
    axes = {role: keras_hub_layers._head_letter_axes(layer, role)[0] for role, layer in p.items()}
    q, k, v, o = (p[r].kernel for r in ("query", "key", "value", "output"))
    assert q.regularizer is o.regularizer and q.regularizer.num_heads == 4  # per query head
    assert k.regularizer is v.regularizer and k.regularizer.num_heads == 2  # per key/value head
    expected_q = strength * _group_hs(np.concatenate([_rows(q.numpy(), axes["query"]), _rows(o.numpy(), axes["output"])], 1))
    expected_k = strength * _group_hs(np.concatenate([_rows(k.numpy(), axes["key"]), _rows(v.numpy(), axes["value"])], 1))
    assert float(q.regularizer(q)) == pytest.approx(expected_q, rel=1e-5)
    assert float(o.regularizer(o)) == 0.0  # counted once, on the query
    assert float(k.regularizer(k)) == pytest.approx(expected_k, rel=1e-5)
    gate, up, down = block.gating_ffw.kernel, block.gating_ffw_2.kernel, block.ffw_linear.kernel
    assert up.regularizer is None and down.regularizer is None  # in the gate's unit groups
    rows = np.concatenate([_rows(gate.numpy(), -1), _rows(up.numpy(), -1), _rows(down.numpy(), 0)], 1)
    assert float(gate.regularizer(gate)) == pytest.approx(strength * _group_hs(rows), rel=1e-5)


def test_a_block_laid_out_differently_is_recognized():
    inputs = keras.Input((6, 16))
    model = keras.Model(inputs, keras_hub.layers.TransformerEncoder(12, 4, name="block")(inputs))
    block = model.get_layer("block")
    spec = keras_hub_layers.spec_for(block)
    assert keras_hub_layers._spec_applies(block, spec)
    other = keras_hub_layers.BlockSpec(**{**spec.__dict__, "reader": "_no_such_layer"})
    assert not keras_hub_layers._spec_applies(block, other)
