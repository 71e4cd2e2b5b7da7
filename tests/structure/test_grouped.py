"""Grouped convolutions, LayerNormalization coupling and shared layers in the structure tools.

Grouped convolutions (``groups > 1``, ConvNeXt's depthwise ``Conv2D`` with
``groups=C``): kernel connectivity against a NumPy reference, the group cut
(`liveness.group_cut`), `shrink` cutting them exactly (whole groups, equal
numbers per group) or keeping dead units and saying so, Group-HS groups that
follow the convolution's groups. LayerNormalization keeps its channels
together. A layer shared by two calls is counted once in the report's totals.
"""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.structure import graph as graph_lib
from deephoyer_tf.structure import liveness

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _rel_error(model, small, x):
    a = np.asarray(model(x, training=False))
    b = np.asarray(small(x, training=False))
    return float(np.abs(a - b).max() / np.abs(a).max())


def _kill_filters(model, names, fraction, rng):
    """Zeroes `fraction` of the filters of each layer in `names`; biases made nonzero."""
    for name in names:
        layer = model.get_layer(name)
        weights = layer.get_weights()
        kernel = weights[0]
        dead = rng.choice(kernel.shape[-1], int(round(fraction * kernel.shape[-1])), replace=False)
        kernel[..., dead] = 0
        if len(weights) > 1:
            weights[1] = rng.normal(0, 0.5, weights[1].shape).astype("float32")
        layer.set_weights(weights)


# --- connectivity and the group cut, against NumPy references -------------------


def _reference_connectivity(kernel, groups):
    """Loop over every weight: input ``g*cin + i`` reaches output ``o`` of group g."""
    cin, out = kernel.shape[-2:]
    og = out // groups
    m = np.zeros((cin * groups, out), bool)
    for o in range(out):
        g = o // og
        for i in range(cin):
            if np.any(kernel[..., i, o] != 0):
                m[g * cin + i, o] = True
    return m


@pytest.mark.parametrize("groups,channels,filters", [(2, 6, 4), (3, 6, 9), (8, 8, 8), (4, 8, 16)])
def test_grouped_connectivity_matches_a_loop_over_the_weights(groups, channels, filters):
    x = keras.Input((5, 5, channels))
    model = keras.Model(x, keras.layers.Conv2D(filters, 3, groups=groups)(x))
    rng = np.random.default_rng(groups)
    kernel = rng.normal(size=model.layers[-1].kernel.shape).astype("float32")
    kernel[rng.random(kernel.shape) < 0.8] = 0
    model.layers[-1].set_weights([kernel, np.zeros(filters, "float32")])
    (op,) = graph_lib.build_graph(model).ops
    got = liveness.kernel_connectivity(op)
    np.testing.assert_array_equal(got, _reference_connectivity(kernel, groups))


def test_separable_connectivity_matches_a_path_count_with_a_multiplier():
    x = keras.Input((5, 5, 6))
    layer = keras.layers.SeparableConv2D(7, 3, depth_multiplier=3)
    model = keras.Model(x, layer(x))
    rng = np.random.default_rng(0)
    model.set_weights([
        np.where(rng.random(w.shape) < 0.6, 0, rng.normal(size=w.shape)).astype("float32")
        for w in model.get_weights()
    ])
    (op,) = graph_lib.build_graph(model).ops
    depthwise = layer.depthwise_kernel.numpy()  # (3, 3, 6, 3)
    pointwise = layer.pointwise_kernel.numpy()  # (1, 1, 18, 7)
    want = np.zeros((6, 7), bool)
    for i in range(6):
        for k in range(3):
            if np.any(depthwise[..., i, k] != 0):
                want[i] |= np.any(pointwise[..., i * 3 + k, :] != 0, axis=(0, 1))
    np.testing.assert_array_equal(liveness.kernel_connectivity(op), want)


def test_liveness_through_a_grouped_chain_matches_boolean_products():
    """fwd/used of a 1x1 chain equal reachability by products of the kernels' patterns."""
    x = keras.Input((4, 4, 8))
    a = keras.layers.Conv2D(8, 1, groups=4, name="a")
    b = keras.layers.Conv2D(12, 1, groups=2, name="b")
    c = keras.layers.Conv2D(6, 1, name="c")
    model = keras.Model(x, c(b(a(x))))
    rng = np.random.default_rng(3)
    for layer in (a, b, c):
        k, bias = layer.get_weights()
        k = np.where(rng.random(k.shape) < 0.6, 0, rng.normal(size=k.shape)).astype("float32")
        layer.set_weights([k, bias])
    patterns = [_reference_connectivity(layer.kernel.numpy(), layer.groups).astype(float)
                for layer in (a, b, c)]
    analysis = liveness.Analysis(graph_lib.build_graph(model))
    ops = analysis.graph.ops
    forward = np.ones(8)
    for op, m in zip(ops, patterns):
        forward = (forward @ m) > 0
        np.testing.assert_array_equal(analysis.fwd[op.outputs[0]], forward)
        forward = forward.astype(float)
    backward = np.ones(6)
    for op, m in zip(reversed(ops), reversed(patterns)):
        backward = (m @ backward) > 0
        np.testing.assert_array_equal(analysis.used[op.inputs[0]], backward)
        backward = backward.astype(float)


def test_group_cut_keeps_equal_numbers_in_the_kept_groups():
    x = keras.Input((3, 3, 12))
    model = keras.Model(x, keras.layers.Conv2D(8, 1, groups=4)(x))
    (op,) = graph_lib.build_graph(model).ops
    rng = np.random.default_rng(0)
    for _ in range(50):
        need = rng.random(12) < 0.4
        want = rng.random(8) < 0.4
        keep_in, keep_out = liveness.group_cut(op, need, want)
        ins, outs = keep_in.reshape(4, 3), keep_out.reshape(4, 2)
        kept = want.reshape(4, 2).any(axis=1)
        if not kept.any():
            np.testing.assert_array_equal(keep_in, need)
            continue
        # a group is kept exactly when one of its outputs is wanted
        np.testing.assert_array_equal(outs.any(axis=1), kept)
        np.testing.assert_array_equal(ins.any(axis=1), kept)
        # every wanted output, and every needed input of a kept group, is kept
        assert np.all(keep_out[want])
        assert np.all(ins[kept][need.reshape(4, 3)[kept]])
        # equal numbers per kept group: the largest need
        assert set(ins[kept].sum(axis=1)) == {max(1, need.reshape(4, 3)[kept].sum(axis=1).max())}
        assert set(outs[kept].sum(axis=1)) == {want.reshape(4, 2).sum(axis=1).max()}


# --- shrink -----------------------------------------------------------------------


def _grouped_net(module, kernel_size=3):
    layers = module.layers
    x = module.Input((8, 8, 3))
    h = layers.Conv2D(16, 3, padding="same", name="stem")(x)
    h = layers.ReLU()(h)
    h = layers.Conv2D(16, kernel_size, padding="same", groups=4, name="grouped")(h)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU()(h)
    h = layers.Conv2D(16, 3, padding="same", groups=16, name="depthwise")(h)  # ConvNeXt's form
    h = layers.Conv2D(12, 1, name="pointwise")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return module.Model(x, layers.Dense(5, name="head")(h))


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_shrink_is_exact_with_30_percent_dead_filters_in_grouped_convolutions(module, kernel_size):
    model = _grouped_net(module, kernel_size)
    rng = np.random.default_rng(kernel_size)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in bn.get_weights()])
    _kill_filters(model, ["stem", "grouped", "depthwise", "pointwise"], 0.3, rng)
    small = deephoyer_tf.shrink(model)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    assert _rel_error(model, small, x) <= 1e-5
    assert small.count_params() < model.count_params()
    for name in ("grouped", "depthwise"):
        before, after = model.get_layer(name), small.get_layer(name)
        # still a valid grouped convolution: in = groups * kernel inputs, out a multiple
        in_units = after.input.shape[-1]
        assert in_units == after.groups * after.kernel.shape[-2]
        assert after.kernel.shape[-1] % after.groups == 0
        assert after.groups <= before.groups
    # the depthwise form keeps its form, one channel per group, minus the dead ones
    depthwise = small.get_layer("depthwise")
    assert depthwise.kernel.shape[-2:] == (1, depthwise.groups) and depthwise.groups < 16


def test_whole_dead_groups_are_removed_and_the_group_count_drops():
    x = keras.Input((6, 6, 8))
    h = keras.layers.Conv2D(8, 3, padding="same", groups=4, name="g")(x)
    h = keras.layers.ReLU()(h)
    model = keras.Model(x, keras.layers.Conv2D(3, 1, name="out")(h))
    k, b = model.get_layer("g").get_weights()
    k[..., 2:4] = 0  # group 1's two filters: dead, their ReLU(bias) folded into "out"
    model.get_layer("g").set_weights([k, b + 0.3])
    small = deephoyer_tf.shrink(model)
    g = small.get_layer("g")
    assert g.groups == 3 and g.kernel.shape == (3, 3, 2, 6)
    assert small.shrink_summary.removed["g"] == (2, 2)
    assert "g" not in small.shrink_summary.kept_for_groups
    assert small.shrink_summary.folded == 2
    xx = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype("float32")
    assert _rel_error(model, small, xx) <= 1e-5


def test_uneven_dead_units_are_kept_so_every_group_keeps_as_many_and_reported():
    x = keras.Input((6, 6, 8))
    model = keras.Model(x, keras.layers.Conv2D(3, 1, name="out")(
        keras.layers.Conv2D(8, 3, padding="same", groups=2, use_bias=False, name="g")(x)))
    k = model.get_layer("g").get_weights()[0]
    k[..., [0, 1]] = 0  # two dead filters in group 0, none in group 1
    model.get_layer("g").set_weights([k])
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    # group 1 keeps its 4 outputs, so group 0 keeps 4 too: nothing removed
    assert small.get_layer("g").kernel.shape == (3, 3, 4, 8)
    assert summary.removed["g"] == (0, 0)
    assert summary.kept_for_groups["g"] == (
        "2 of 2 groups kept, each with 4 inputs and 4 outputs: 0 dead inputs and 2 dead "
        "outputs kept so that every group keeps as many as the others"
    )
    assert "g: grouped convolution: 2 of 2 groups kept" in str(summary)
    xx = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype("float32")
    assert _rel_error(model, small, xx) <= 1e-5


# --- Group-HS -----------------------------------------------------------------------


def _group_hs_reference(kernel, groups):
    """Eq. 8 with a grouped convolution's units as groups, by loops."""
    cin, out = kernel.shape[-2:]
    og = out // groups
    total = np.sum(kernel.astype(np.float64) ** 2)
    outs = [np.linalg.norm(kernel[..., j]) for j in range(out)]
    ins = [np.linalg.norm(kernel[..., i, g * og:(g + 1) * og]) for g in range(groups) for i in range(cin)]
    return sum(outs) ** 2 / total + sum(ins) ** 2 / total


def test_regularize_gives_grouped_convolutions_group_hs_over_their_own_units():
    x = keras.Input((6, 6, 6))
    model = keras.Model(x, keras.layers.Conv2D(9, 3, groups=3, name="g")(x))
    regularized = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(1.0))
    regularizer = regularized.get_layer("g").kernel_regularizer
    assert regularizer.conv_groups == 3
    kernel = regularized.get_layer("g").kernel.numpy()
    np.testing.assert_allclose(float(regularizer(kernel)), _group_hs_reference(kernel, 3), rtol=1e-5)
    # the plain grouping differs: a kernel row spans 3 input units
    plain = deephoyer_tf.GroupHoyerSquare(1.0)
    assert abs(float(plain(kernel)) - _group_hs_reference(kernel, 3)) > 1e-3
    again = deephoyer_tf.GroupHoyerSquare.from_config(regularizer.get_config())
    assert again.conv_groups == 3


def test_conv_groups_argument_errors():
    with pytest.raises(ValueError, match=r"Argument `conv_groups` \(a grouped convolution's `groups`\) applies only to layout='in_out' kernels with groups 'outputs', 'inputs' or 'both'\. Received: conv_groups=2, layout='depthwise', groups='both'"):
        deephoyer_tf.GroupHoyerSquare(1.0, layout="depthwise", conv_groups=2)
    with pytest.raises(ValueError, match=r"GroupLasso with conv_groups=4 needs a kernel whose last axis \(outputs\) is a multiple of 4\. Received: a kernel of shape \(3, 3, 2, 6\)"):
        deephoyer_tf.GroupLasso(1.0, conv_groups=4)(np.ones((3, 3, 2, 6), "float32"))


# --- LayerNormalization coupling ----------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_layer_normalization_keeps_its_channels_together_and_zero_scales_are_constants(module):
    rng = np.random.default_rng(0)
    x = module.Input((5, 6))
    h = module.layers.Dense(8, name="d1")(x)
    norm = module.layers.LayerNormalization(name="ln")
    model = module.Model(x, module.layers.Dense(4, name="d2")(norm(h)))
    gamma, beta = norm.get_weights()
    gamma[[1, 4, 6]] = 0  # outputs 1, 4, 6 are their beta, whatever the input
    norm.set_weights([gamma, rng.normal(size=8).astype("float32")])
    w, b = model.get_layer("d1").get_weights()
    w[:, [2, 6]] = 0  # two dead producers: constants entering the normalization
    model.get_layer("d1").set_weights([w, b + 0.5])
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    # the normalization needs every channel: d1 keeps its dead filters
    assert small.get_layer("d1").kernel.shape == (6, 8)
    assert small.get_layer("ln").gamma.shape == (8,)
    assert summary.kept_whole["ln"] == (
        "LayerNormalization normalizes over all its channels (removing one changes their "
        "mean and variance): they are kept together, 2 dead channels among them"
    )
    # its zero-scale outputs are constants: d2 drops them, their beta folded into its bias
    assert small.get_layer("d2").kernel.shape == (5, 4)
    assert summary.removed["d2"] == (3, 0) and summary.folded == 3
    xx = rng.normal(size=(3, 5, 6)).astype("float32")
    assert _rel_error(model, small, xx) <= 1e-5


# --- shared layers --------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_a_shared_layer_is_counted_once_and_its_macs_per_call(module):
    x = module.Input((8,))
    shared = module.layers.Dense(8, use_bias=False, name="s")
    model = module.Model(x, shared(shared(x)))
    report = deephoyer_tf.sparsity_report(model)
    assert report.total_weights == 64 and report.nonzero_weights == 64
    assert [r.repeated_call for r in report.layers] == [False, True]
    assert report.dense_macs == 128 and report.macs == 128
    assert report.to_dict()["total_weights"] == 64
    assert "Dense (shared, weights counted once)" in str(report)


def test_shrink_keeps_a_shared_layer_whole_as_one_layer():
    x = keras.Input((6,))
    shared = keras.layers.Dense(6, name="s")
    h = keras.layers.Dense(6, name="pre")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="out")(shared(shared(h))))
    w, b = model.get_layer("out").get_weights()
    w[3] = 0
    model.get_layer("out").set_weights([w, b])
    small = deephoyer_tf.shrink(model)
    assert small.shrink_summary.kept_whole["s"].startswith("the layer is called at 2 places (shared)")
    assert [layer.name for layer in small.layers].count("s") == 1
    assert small.get_layer("s").kernel.shape == (6, 6)
    xx = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    assert _rel_error(model, small, xx) <= 1e-5


# --- keras.applications ------------------------------------------------------------------


def _kill_every_kernel(model, fraction, seed):
    """`fraction` of the output units of every kernel layer zeroed, biases nonzero."""
    from deephoyer_tf.structure import registry

    rng = np.random.default_rng(seed)
    for layer in registry.kernel_layers(model):
        spec = registry.kernel_specs(layer)[-1]
        variable = registry.kernel_variable(layer, spec)
        kernel = np.array(variable.numpy())
        axis = kernel.ndim - 2 if spec.layout == "depthwise" else kernel.ndim - 1
        dead = rng.choice(kernel.shape[axis], int(round(fraction * kernel.shape[axis])), replace=False)
        index = [slice(None)] * kernel.ndim
        index[axis] = dead
        kernel[tuple(index)] = 0
        variable.assign(kernel)
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.1, tuple(layer.bias.shape)).astype("float32"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ConvNeXtTiny", "Xception"])
def test_applications_shrink_exactly_with_30_percent_dead_filters(name):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None)
    _kill_every_kernel(model, 0.3, 0)
    small = deephoyer_tf.shrink(model)
    x = np.random.default_rng(0).uniform(0, 255, (2,) + tuple(model.input_shape[1:])).astype("float32")
    assert _rel_error(model, small, x) <= 1e-5
    assert small.count_params() < model.count_params()
    if name == "ConvNeXtTiny":
        summary = small.shrink_summary
        # the normalization after each depthwise layer keeps its channels, and says so;
        # the feed-forward units die
        assert any("LayerNormalization normalizes" in why for why in summary.kept_whole.values())
        assert any(removed[1] > 0 for name_, removed in summary.removed.items() if "pointwise_conv_1" in name_)
