"""EinsumDense and MultiHeadAttention: equations, coverage, report, and shrink removing heads."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.structure import attention
from tests.helpers import transformers

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _einsum(module):
    return getattr(module.layers, "EinsumDense", None) or module.layers.experimental.EinsumDense


# --- equations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "equation, shape, axes, projection",
    [
        ("ab,bc->ac", (8,), ((-2,), (-1,), ()), True),
        ("abc,cd->abd", (None, 8), ((-2,), (-1,), ()), True),
        ("...b,bc->...c", (8,), ((-2,), (-1,), ()), True),
        ("abc,cde->abde", (None, 3, 4), ((-3,), (-2, -1), ()), False),  # query projection
        ("abcd,cde->abe", (None, 8), ((-3, -2), (-1,), ()), False),  # attention output
        ("abc,bcd->abd", (None, 8), ((-2,), (-1,), (-3,)), False),  # a kernel per position
    ],
)
def test_einsum_axes_come_from_the_equation(equation, shape, axes, projection):
    layer = keras.layers.EinsumDense(equation, output_shape=shape)
    found = attention.einsum_axes(layer)
    assert (found.input_axes, found.output_axes, found.shared_axes) == axes
    assert attention.is_projection(layer) is projection
    spec = deephoyer_tf.structure.registry.kernel_specs(layer)[0]
    assert spec.layout == ("in_out" if projection else "einsum")


def test_bad_equation_is_named():
    layer = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 8))
    layer.equation = "abcd"
    with pytest.raises(ValueError, match=r"Invalid einsum equation\. Expected 'input,kernel->output'"):
        attention.einsum_axes(layer)


# --- every kernel regularized and counted -------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_every_kernel_is_regularized_and_counted(module):
    model = transformers.block(module)
    hs = deephoyer_tf.HoyerSquare(1e-3)
    reg = deephoyer_tf.regularize(model, hs)
    # 4 attention projections, ff1, ff2, head
    assert len(reg.losses) == 7
    report = deephoyer_tf.sparsity_report(reg)
    assert report.total_weights == transformers.kernel_sizes(model)
    expected = []
    for role in ("query", "key", "value", "output"):
        expected.append(transformers.projections(reg)[role].kernel.numpy())
    expected += [reg.get_layer(n).kernel.numpy() for n in ("ff1", "ff2", "head")]
    from tests.helpers.hoyer_numpy import np_hoyer_square

    np.testing.assert_allclose(
        sorted(float(v) for v in reg.losses),
        sorted(1e-3 * np_hoyer_square(w) for w in expected),
        rtol=1e-5,
    )
    hs.strength = 0.0  # one instance: every projection follows
    assert all(float(v) == 0.0 for v in reg.losses)


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_prune_zeroes_attention_kernels_and_zeros_are_held(module):
    model = transformers.block(module, einsum=module is keras)
    deephoyer_tf.prune(model, std_ratio=0.7)
    proj = transformers.projections(model)
    masks = {role: sub.kernel.numpy() == 0 for role, sub in proj.items()}
    assert all(m.mean() > 0.2 for m in masks.values())
    deephoyer_tf.fix_zeros(model)
    model.compile(optimizer=module.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    x = transformers.data(n=16)
    y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, y)
        for role, sub in proj.items():
            assert np.all(sub.kernel.numpy()[masks[role]] == 0), role
    assert np.any(proj["query"].kernel.numpy()[~masks["query"]] != 0)


# --- report --------------------------------------------------------------------------


def test_report_counts_live_heads_and_attention_macs():
    model = transformers.block(keras, tokens=6, dim=12, heads=3, key_dim=4, hidden=10)
    transformers.kill_head(model, 1)
    report = deephoyer_tf.sparsity_report(model)
    (row,) = report.attention_layers
    assert (row.heads, row.live_heads, row.tokens) == (3, 2, 6)
    t = s = 6
    d, kd = 12, 4

    def macs(h):
        return 3 * t * d * h * kd + t * s * h * 2 * kd + t * h * kd * d

    assert (row.dense_macs, row.macs) == (macs(3), macs(2))
    ff = [r for r in report.layers if r.name in ("ff1", "ff2")]
    assert [r.dense_macs for r in ff] == [6 * 12 * 10, 6 * 10 * 12]
    assert report.macs_per_token == pytest.approx(report.macs / 6)
    assert "Heads: mha: 2 / 3 live" in str(report)


def test_report_of_a_general_einsum_layer():
    inp = keras.Input((5, 6))
    out = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), name="e")(inp)
    model = keras.Model(inp, out)
    kernel = np.ones((6, 2, 3), "float32")
    kernel[4] = 0  # input unit 4 dead
    kernel[:, 1, 2] = 0  # output unit (1, 2) dead
    model.get_layer("e").set_weights([kernel])
    (row,) = deephoyer_tf.sparsity_report(model, sequence_length=5).layers
    assert (row.live_inputs, row.inputs, row.live_outputs, row.outputs) == (5, 6, 5, 6)
    assert (row.dense_macs, row.macs) == (5 * 6 * 6, 5 * 5 * 5)
    assert row.nonzero_weights == int(np.count_nonzero(kernel))


# --- nothing skipped silently --------------------------------------------------------


class _Bilinear(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

    def call(self, x):
        return keras.ops.matmul(x, self.w)


def _with_unhandled():
    inp = keras.Input((4,))
    x = keras.layers.Dense(4, name="fc")(inp)
    out = _Bilinear(name="bilinear")(x)
    return keras.Model(inp, out)


def test_unhandled_kernels_warn_and_strict_raises():
    model = _with_unhandled()
    message = (
        "has trainable kernels in layers deephoyer_tf does not handle: 'bilinear' (_Bilinear, "
        "kernels [(4, 3)]). They are not regularized, pruned, held at zero or counted. Register "
        "their class with deephoyer_tf.register_layer(...) to include them."
    )
    with pytest.warns(deephoyer_tf.UnhandledLayerWarning, match=r"regularize\(\): model .*" + _re(message)):
        reg = deephoyer_tf.regularize(model, deephoyer_tf.HoyerSquare(1e-4))
    assert len(reg.losses) == 1
    with pytest.warns(deephoyer_tf.UnhandledLayerWarning, match=r"sparsity_report\(\): .*" + _re(message)):
        deephoyer_tf.sparsity_report(model)
    with pytest.raises(ValueError, match=_re(message) + r" \(strict=True\)"):
        deephoyer_tf.regularize(model, deephoyer_tf.HoyerSquare(1e-4), strict=True)
    with pytest.raises(ValueError, match=_re(message)):
        deephoyer_tf.sparsity_report(model, strict=True)


def test_handled_models_do_not_warn(recwarn):
    deephoyer_tf.regularize(transformers.block(keras), deephoyer_tf.HoyerSquare(1e-4), strict=True)
    deephoyer_tf.sparsity_report(transformers.block(keras), strict=True)
    assert not [w for w in recwarn if issubclass(w.category, deephoyer_tf.UnhandledLayerWarning)]


def _re(text):
    import re

    return re.escape(text)


# --- shrink: dead heads, dimensions, feed-forward units --------------------------------


def _assert_same(a, b, rtol=1e-5):
    scale = np.abs(a).max()
    assert np.abs(a - b).max() <= rtol * scale + 1e-6, np.abs(a - b).max() / scale


@pytest.mark.parametrize("module", MODULES)
def test_shrink_removes_a_dead_head_exactly(module):
    model = transformers.block(module, heads=3, key_dim=4)
    transformers.kill_head(model, 1)
    small = deephoyer_tf.shrink(model)
    config = small.get_layer("mha").get_config()
    assert (config["num_heads"], config["key_dim"], config["value_dim"]) == (2, 4, 4)
    x = transformers.data()
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))
    assert small.count_params() < model.count_params()


def test_head_with_only_output_rows_zero_is_dead_and_zero_query_is_not():
    model = transformers.block(keras, heads=3, key_dim=4)
    proj = transformers.projections(model)
    out = proj["output"].kernel.numpy()
    out[0] = 0
    proj["output"].kernel.assign(out)
    q = proj["query"].kernel.numpy()
    q[:, 2] = 0  # head 2 attends uniformly: still live
    proj["query"].kernel.assign(q)
    qb = proj["query"].bias.numpy()
    qb[2] = 0
    proj["query"].bias.assign(qb)
    live = attention.head_liveness(model.get_layer("mha"))
    assert live.heads.tolist() == [False, True, True]
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("mha").get_config()["num_heads"] == 2
    x = transformers.data()
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))


def test_value_kernel_zero_head_is_folded_into_the_output_bias():
    model = transformers.block(keras, heads=3, key_dim=4)
    proj = transformers.projections(model)
    v = proj["value"].kernel.numpy()
    v[:, 0] = 0  # V_0 is its bias everywhere: a constant contribution
    proj["value"].kernel.assign(v)
    live = attention.head_liveness(model.get_layer("mha"))
    assert live.heads.tolist() == [False, True, True] and live.constant_heads.tolist() == [True, False, False]
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("mha").get_config()["num_heads"] == 2
    x = transformers.data()
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))


def test_key_dimension_dead_in_every_head_is_removed_and_scores_keep_their_scale():
    model = transformers.block(keras, heads=3, key_dim=4)
    proj = transformers.projections(model)
    k = proj["key"].kernel.numpy()
    k[:, :, 1] = 0  # its key bias shifts each query's scores equally: ignored by softmax
    proj["key"].kernel.assign(k)
    small = deephoyer_tf.shrink(model)
    config = small.get_layer("mha").get_config()
    assert (config["num_heads"], config["key_dim"]) == (3, 3)
    x = transformers.data()
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))


@pytest.mark.parametrize("einsum", [True, False], ids=["einsum", "dense"])
def test_shrink_narrows_the_feed_forward_block(einsum):
    model = transformers.block(keras, hidden=10, einsum=einsum)
    ff1 = model.get_layer("ff1")
    w, b = ff1.get_weights()
    w[:, [0, 3, 7]] = 0  # three hidden units constant (their GELU(bias) is folded)
    ff1.set_weights([w, b])
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("ff1").get_weights()[0].shape == (12, 7)
    assert small.get_layer("ff2").get_weights()[0].shape == (7, 12)
    x = transformers.data()
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))
    summary = small.shrink_summary
    assert summary.removed["ff1"] == (0, 3)
    # the residual stream feeds LayerNormalization: kept whole, and said so
    assert "LayerNormalization normalizes over all its channels" in summary.kept_whole["ln2"]


def test_dead_residual_units_are_kept_because_layer_normalization_couples_them():
    model = transformers.block(keras)
    ff2 = model.get_layer("ff2")
    w, b = ff2.get_weights()
    w[:, 5] = 0
    b[5] = 0
    ff2.set_weights([w, b])
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("ff2").get_weights()[0].shape == w.shape
    x = transformers.data()
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))


def test_a_general_einsum_layer_is_kept_whole_and_reported():
    inp = keras.Input((5, 6))
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), name="e")(inp)
    x = keras.layers.Reshape((5, 6))(x)
    out = keras.layers.Dense(2, name="fc")(x)
    model = keras.Model(inp, out)
    small = deephoyer_tf.shrink(model)
    assert "EinsumDense" in small.shrink_summary.kept_whole["e"]
    x = np.random.default_rng(0).normal(size=(3, 5, 6)).astype("float32")
    _assert_same(model.predict(x, verbose=0), small.predict(x, verbose=0))


def test_shrink_cuts_dead_embedding_dimensions():
    inp = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embed")(inp)
    out = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inp, out)
    table = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    table[:, [2, 5]] = 0
    model.get_layer("embed").set_weights([table])
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("embed").get_weights()[0].shape == (20, 6)
    ids = np.random.default_rng(1).integers(0, 20, (4, 5))
    _assert_same(model.predict(ids, verbose=0), small.predict(ids, verbose=0))


@pytest.mark.slow
def test_threshold_pruning_and_summaries_cover_attention():
    from deephoyer_tf.callbacks import sparsity_summaries

    model = deephoyer_tf.regularize(transformers.block(keras), deephoyer_tf.GroupHoyerSquare(1e-3))
    values = sparsity_summaries.scalars(model)
    assert values["sparsity/mha/density"] == 1.0
    # the head penalty, counted once, as in the model's losses
    penalty = sum(float(v) for v in model.get_layer("mha").losses)
    assert penalty > 0 and values["sparsity/mha/penalty"] == pytest.approx(penalty, rel=1e-5)
    model.compile(optimizer="sgd", loss="mse")
    x = transformers.data(n=16)
    y = np.zeros((16, 4), "float32")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[deephoyer_tf.ThresholdPruning(at_epoch=1, std_ratio=0.8)])
    query = transformers.projections(model)["query"].kernel.numpy()
    assert 0.2 < np.mean(query == 0) < 0.8
    assert sparsity_summaries.scalars(model)["sparsity/mha/density"] == pytest.approx(
        deephoyer_tf.sparsity_report(model).attention_layers[0].density
    )
