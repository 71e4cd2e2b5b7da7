"""Small networks with the paper's pruned structures, built by zeroing weights.

Shared by tests/test_report.py and tests/test_surgery.py.
"""

import numpy as np


def lenet_300_100(module, seed=0, pixels=353, hidden=(45, 11)):
    """LeNet-300-100 whose live structure is ``pixels-hidden[0]-hidden[1]``.

    Inside the live blocks about half the weights are zero (each live unit
    keeps a nonzero weight in both of its layers); dead units keep nonzero
    biases; one dead pixel has nonzero weights to dead hidden units only.
    Returns (model, live pixel indices, live hidden indices 1, 2).
    """
    rng = np.random.default_rng(seed)
    layers = module.layers
    model = module.Sequential(
        [
            module.Input((28, 28, 1)),
            layers.Flatten(name="flatten"),
            layers.Dense(300, activation="relu", name="fc1"),
            layers.Dense(100, activation="relu", name="fc2"),
            layers.Dense(10, name="fc3"),
        ],
        name="lenet_300_100",
    )
    live = [np.sort(rng.choice(784, pixels, replace=False))]
    live += [np.sort(rng.choice(n, k, replace=False)) for n, k in zip((300, 100), hidden)]
    live.append(np.arange(10))
    weights = []
    for k, name in enumerate(("fc1", "fc2", "fc3")):
        layer = model.get_layer(name)
        w = np.zeros(layer.get_weights()[0].shape, "float32")
        w[np.ix_(live[k], live[k + 1])] = _sparse_block(rng, len(live[k]), len(live[k + 1]))
        b = rng.normal(0, 0.1, w.shape[1]).astype("float32")
        weights.append((w, b))
    # A pixel wired only to a dead hidden unit is not live.
    dead_pixel = np.setdiff1d(np.arange(784), live[0])[0]
    dead_hidden = np.setdiff1d(np.arange(300), live[1])[0]
    weights[0][0][dead_pixel, dead_hidden] = 0.5
    # A dead hidden unit wired only from dead pixels is not live either.
    weights[1][0][dead_hidden, live[2][0]] = 0.0
    for (w, b), name in zip(weights, ("fc1", "fc2", "fc3")):
        model.get_layer(name).set_weights([w, b])
    return model, live[0], live[1], live[2]


def lenet5(module, seed=0, filters=(5, 12), features=139, hidden=13):
    """LeNet-5 (Caffe) whose live structure is ``5-12-139-13``.

    conv 20 5x5, maxpool 2, conv 50 5x5, maxpool 2, dense 500 relu, dense 10,
    on 28x28x1 with valid padding. Of the 4x4x12 = 192 flattened features of
    the live conv2 filters, `features` have nonzero fc1 rows (at least one per
    live filter). Returns (model, live filters 1, live filters 2, live fc1
    input features, live fc1 outputs).
    """
    rng = np.random.default_rng(seed)
    layers = module.layers
    model = module.Sequential(
        [
            module.Input((28, 28, 1)),
            layers.Conv2D(20, 5, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(10, name="fc2"),
        ],
        name="lenet5",
    )
    f1 = np.sort(rng.choice(20, filters[0], replace=False))
    f2 = np.sort(rng.choice(50, filters[1], replace=False))
    # Flatten of (4, 4, 50): feature p * 50 + c.
    candidates = (np.arange(16)[:, None] * 50 + f2[None, :]).reshape(-1)
    first = np.arange(16)[rng.integers(0, 16, len(f2))] * 50 + f2  # one per filter
    rest = rng.choice(np.setdiff1d(candidates, first), features - len(f2), replace=False)
    feats = np.sort(np.concatenate([first, rest]))
    h = np.sort(rng.choice(500, hidden, replace=False))

    def conv_kernel(shape, ins, outs):
        w = np.zeros(shape, "float32")
        sub = rng.normal(0, 0.2, shape[:2] + (len(ins), len(outs))).astype("float32")
        sub[0, 0] += np.sign(sub[0, 0]) * 0.1 + (sub[0, 0] == 0)  # no all-zero pair
        w[np.ix_(range(shape[0]), range(shape[1]), ins, outs)] = sub
        return w

    conv1 = model.get_layer("conv1")
    w = conv_kernel((5, 5, 1, 20), [0], f1)
    conv1.set_weights([w, rng.normal(0, 0.1, 20).astype("float32")])
    conv2 = model.get_layer("conv2")
    w = conv_kernel((5, 5, 20, 50), f1, f2)
    conv2.set_weights([w, rng.normal(0, 0.1, 50).astype("float32")])
    fc1 = model.get_layer("fc1")
    w = np.zeros((800, 500), "float32")
    w[np.ix_(feats, h)] = _sparse_block(rng, len(feats), len(h))
    fc1.set_weights([w, rng.normal(0, 0.1, 500).astype("float32")])
    fc2 = model.get_layer("fc2")
    w = np.zeros((500, 10), "float32")
    w[h] = _sparse_block(rng, len(h), 10)
    fc2.set_weights([w, rng.normal(0, 0.1, 10).astype("float32")])
    return model, f1, f2, feats, h


def residual_net(module, dead_channel=2, dead_in="both", seed=0):
    """A small residual block whose Add channel `dead_channel` is dead in `dead_in`.

    stem conv 3x3 (6) -> BN -> ReLU = a; branch_a conv 1x1 (4) -> ReLU ->
    branch_b conv 1x1 (6); add = a + branch_b; ReLU -> head conv 1x1 (5) ->
    global average pooling -> out Dense (3). `dead_in` is ``"both"``
    (the stem and branch_b filters of the channel are zero), ``"stem"`` or
    ``"branch"`` (only one of them is).
    """
    rng = np.random.default_rng(seed)
    layers = module.layers
    inp = module.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="stem")(inp)
    a = layers.Activation("relu", name="stem_relu")(layers.BatchNormalization(name="bn")(x))
    b = layers.Conv2D(4, 1, activation="relu", name="branch_a")(a)
    b = layers.Conv2D(6, 1, name="branch_b")(b)
    s = layers.ReLU(name="add_relu")(layers.Add(name="add")([a, b]))
    h = layers.Conv2D(5, 1, name="head")(s)
    out = layers.Dense(3, name="out")(layers.GlobalAveragePooling2D(name="gap")(h))
    model = module.Model(inp, out, name="residual")
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name == "bn":
            weights = [
                rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.1, 6),
                rng.normal(0, 0.1, 6), rng.uniform(0.5, 1.5, 6),
            ]
        else:
            weights = [rng.normal(0, 0.3, w.shape) for w in weights]
        layer.set_weights([w.astype("float32") for w in weights])
    for name in {"both": ("stem", "branch_b"), "stem": ("stem",), "branch": ("branch_b",)}[dead_in]:
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel[..., dead_channel] = 0.0
        layer.set_weights([kernel, bias])
    return model


def resnet50_with_dead_filters(module, seed=0, size=64):
    """keras.applications.ResNet50 (random weights, `size` x `size` input, 10 logits).

    BatchNormalization parameters are randomized, so dead filters emit
    nonzero constants. Dead units:

    * filters 0-7 of ``*_1_conv`` and 4-9 of ``*_2_conv`` in three bottleneck
      blocks (constants entering the zero-padded 3x3 ``*_2_conv``: kept
      unless zero after ReLU; entering the 1x1 ``*_3_conv``: folded);
    * residual channels 7 and 9 of stage 2, dead in every producer
      (``conv2_block1_0_conv`` and the three ``conv2_block*_3_conv``): removed;
    * residual channel 5 of ``conv2_block2_3_conv`` only: kept.
    """
    rng = np.random.default_rng(seed)
    model = module.applications.ResNet50(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
    )
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, n).astype("float32"),
                rng.normal(0, 0.2, n).astype("float32"),
                rng.normal(0, 0.2, n).astype("float32"),
                rng.uniform(0.5, 1.5, n).astype("float32"),
            ])

    def kill(name, filters):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel[..., list(filters)] = 0.0
        layer.set_weights([kernel, bias])

    for block in ("conv2_block1", "conv3_block2", "conv4_block3"):
        kill(f"{block}_1_conv", range(0, 8))
        kill(f"{block}_2_conv", range(4, 10))
    kill("conv2_block2_3_conv", [5])
    for name in ("conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv",
                 "conv2_block3_3_conv"):
        kill(name, [7, 9])
    return model


def _sparse_block(rng, rows, cols):
    """A (rows, cols) block, about half zeros, no all-zero row or column."""
    block = rng.normal(0, 0.2, (rows, cols)).astype("float32")
    block[rng.random((rows, cols)) < 0.5] = 0.0
    block[np.arange(rows), rng.integers(0, cols, rows)] = 0.3
    block[rng.integers(0, rows, cols), np.arange(cols)] = -0.3
    return block
