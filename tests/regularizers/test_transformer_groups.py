"""HeadGroups, UnitGroups, AxisGroups: NumPy references, links, strengths, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.regularizers.transformer_groups import AxisGroups
from deephoyer_tf.regularizers.transformer_groups import HeadGroups
from deephoyer_tf.regularizers.transformer_groups import UnitGroups
from tests.helpers import transformers

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def np_ghs(norms):
    norms = np.asarray(norms, np.float64)
    s = np.sum(norms**2)
    return 0.0 if s == 0 else np.sum(norms) ** 2 / s


def head_norms(model):
    p = {role: sub.kernel.numpy().astype(np.float64) for role, sub in transformers.projections(model).items()}
    heads = p["query"].shape[1]
    return [
        np.sqrt(sum(np.sum(p[r][:, h] ** 2) for r in ("query", "key", "value")) + np.sum(p["output"][h] ** 2))
        for h in range(heads)
    ]


def _losses(layer):
    return [float(v) for v in layer.losses]


@pytest.mark.parametrize("module", MODULES)
def test_group_hs_on_a_transformer_groups_heads_and_hidden_units(module):
    model = transformers.block(module, heads=3, key_dim=4, hidden=10)
    transformers.kill_head(model, 2)
    ghs = deephoyer_tf.GroupHoyerSquare(1e-3)
    reg = deephoyer_tf.regularize(model, ghs)
    mha = reg.get_layer("mha")
    assert isinstance(mha._kernel_regularizer, HeadGroups) and mha._kernel_regularizer.linked
    # one penalty per head group set, counted once (on the query kernel)
    values = _losses(mha)
    assert len(values) == 4 and sorted(values)[:3] == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(max(values), 1e-3 * np_ghs(head_norms(reg)), rtol=1e-5)
    # feed-forward: one group per hidden unit, across ff1's column and ff2's row
    ff1, ff2 = reg.get_layer("ff1"), reg.get_layer("ff2")
    assert isinstance(ff1.kernel_regularizer, UnitGroups) and ff1.kernel_regularizer.readers == ["ff2"]
    assert ff2.kernel_regularizer is None
    w1, w2 = ff1.kernel.numpy().astype(np.float64), ff2.kernel.numpy().astype(np.float64)
    norms = np.sqrt(np.sum(w1**2, axis=0) + np.sum(w2**2, axis=1))
    np.testing.assert_allclose(_losses(ff1), [1e-3 * np_ghs(norms)], rtol=1e-5)
    # other layers: Group-HS of their own units
    assert isinstance(reg.get_layer("head").kernel_regularizer, deephoyer_tf.GroupHoyerSquare)
    # the strength is shared: switching it off silences every group penalty
    ghs.strength = 0.0
    assert all(v == 0.0 for v in _losses(reg))


def test_group_lasso_kind_and_gradients_reach_every_linked_kernel():
    model = transformers.block(keras, heads=3, key_dim=4, hidden=10)
    reg = deephoyer_tf.regularize(model, deephoyer_tf.GroupLasso(1e-2))
    mha, ff1, ff2 = reg.get_layer("mha"), reg.get_layer("ff1"), reg.get_layer("ff2")
    assert mha._kernel_regularizer.kind == "group_lasso"
    np.testing.assert_allclose(sum(_losses(mha)), 1e-2 * np.sum(head_norms(reg)), rtol=1e-5)
    proj = transformers.projections(reg)
    variables = [sub.kernel for sub in proj.values()] + [ff2.kernel]
    with tf.GradientTape() as tape:
        total = tf.add_n(mha.losses + ff1.losses)
    grads = tape.gradient(total, variables)
    # d/dW of s * sum_g ||g||: s * W / ||g|| on every slice of the group
    norms = np.asarray(head_norms(reg))
    q = proj["query"].kernel.numpy()
    np.testing.assert_allclose(grads[0].numpy(), 1e-2 * q / norms[None, :, None], rtol=1e-4)
    w1, w2 = ff1.kernel.numpy(), ff2.kernel.numpy()
    unit = np.sqrt(np.sum(w1**2, axis=0) + np.sum(w2**2, axis=1))
    np.testing.assert_allclose(grads[-1].numpy(), 1e-2 * w2 / unit[:, None], rtol=1e-4)


def test_head_groups_value_matches_numpy_on_raw_kernels():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(5, 2, 3)).astype("float32") for _ in range(3))
    o = rng.normal(size=(2, 3, 5)).astype("float32")
    o[1] = 0
    q[:, 1], k[:, 1], v[:, 1] = 0, 0, 0
    variables = [tf.Variable(a) for a in (q, k, v, o)]
    hg = HeadGroups(0.5, num_heads=2)
    hg.link([(variables[0], 1), (variables[1], 1), (variables[2], 1), (variables[3], 0)])
    norms = [np.sqrt(sum(np.sum(a[:, h] ** 2) for a in (q, k, v)) + np.sum(o[h] ** 2)) for h in range(2)]
    assert float(hg(variables[0])) == pytest.approx(0.5 * np_ghs(norms), rel=1e-6)
    assert [float(hg(x)) for x in variables[1:]] == [0.0, 0.0, 0.0]
    assert float(hg(variables[0])) == pytest.approx(0.5)  # one live head: HS of one group is 1


def test_unlinked_head_groups_warn_and_group_each_kernel_alone():
    hg = HeadGroups(1.0, num_heads=2)
    kernel = np.zeros((4, 2, 3), "float32")
    kernel[:, 0] = 1.0
    with pytest.warns(RuntimeWarning, match=r"HeadGroups is not linked to the projections of its attention layer"):
        assert float(hg(kernel)) == pytest.approx(1.0)
    out = np.ones((2, 3, 4), "float32")  # (heads, dim, d): both heads alive, equal norms
    assert float(hg(out)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"HeadGroups\(num_heads=2\) cannot find the head axis of a kernel of shape \(4, 5\)"):
        hg(np.ones((4, 5), "float32"))


def test_saved_and_loaded_transformer_keeps_its_group_penalties_after_regularize_again(tmp_path):
    model = transformers.block(keras)
    reg = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(1e-3))
    path = tmp_path / "m.keras"
    reg.save(path)
    loaded = keras.models.load_model(path)
    mha = loaded.get_layer("mha")
    assert isinstance(mha._kernel_regularizer, HeadGroups) and not mha._kernel_regularizer.linked
    assert mha._kernel_regularizer.get_config() == reg.get_layer("mha")._kernel_regularizer.get_config()
    assert loaded.get_layer("ff1").kernel_regularizer.readers == ["ff2"]
    again = deephoyer_tf.regularize(loaded, deephoyer_tf.GroupHoyerSquare(1e-3))
    np.testing.assert_allclose(sorted(_losses(again)), sorted(_losses(reg)), rtol=1e-5)


def test_axis_groups_follow_a_general_einsum_equation():
    inp = keras.Input((5, 6))
    out = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), name="e")(inp)
    model = keras.Model(inp, out)
    reg = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(1e-2))
    layer = reg.get_layer("e")
    assert isinstance(layer.kernel_regularizer, AxisGroups)
    w = layer.kernel.numpy().astype(np.float64)
    outputs = np.sqrt(np.sum(w**2, axis=0)).reshape(-1)  # one group per (d, e)
    inputs = np.sqrt(np.sum(w**2, axis=(1, 2)))  # one group per c
    np.testing.assert_allclose(
        _losses(reg), [1e-2 * (np_ghs(outputs) + np_ghs(inputs))], rtol=1e-5
    )


def test_unit_groups_numpy_reference_and_config():
    writer = np.array([[3.0, 0.0]], "float32")
    reader = np.array([[4.0], [0.0]], "float32")
    ug = UnitGroups(2.0, readers=["r"])
    ug.link([(tf.Variable(reader), -2)])
    assert float(ug(writer)) == pytest.approx(2.0)  # norms 5 and 0
    assert ug.get_config() == {"strength": 2.0, "kind": "group_hs", "axis": -1, "readers": ["r"]}
    with pytest.raises(ValueError, match=r"Invalid value for argument `kind`\. Expected one of \['group_hs', 'group_lasso'\]"):
        UnitGroups(1.0, kind="l1")
