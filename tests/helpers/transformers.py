"""Small transformer models for the attention tests, in either Keras flavour."""

import numpy as np


def block(module, tokens=6, dim=12, heads=3, key_dim=4, hidden=10, einsum=True, seed=0):
    """One pre-norm transformer block and a classifier.

    attention ``mha`` (``heads`` x ``key_dim``), a feed-forward block ``ff1``
    (GELU, ``hidden`` units) / ``ff2`` (`EinsumDense` projections, or Dense
    with ``einsum=False``), residual Adds into LayerNormalization, a Dense
    classifier ``head``. Weights are random normal (biases too).
    """
    layers = module.layers
    inp = module.Input((tokens, dim), name="x")
    h = layers.LayerNormalization(name="ln1")(inp)
    h = layers.MultiHeadAttention(heads, key_dim, name="mha")(h, h)
    x = layers.Add(name="res1")([inp, h])
    h = layers.LayerNormalization(name="ln2")(x)
    if einsum:
        einsum_dense = getattr(layers, "EinsumDense", None) or layers.experimental.EinsumDense
        h = einsum_dense("abc,cd->abd", output_shape=(tokens, hidden), bias_axes="d",
                         activation="gelu", name="ff1")(h)
        h = einsum_dense("abc,cd->abd", output_shape=(tokens, dim), bias_axes="d", name="ff2")(h)
    else:
        h = layers.Dense(hidden, activation="gelu", name="ff1")(h)
        h = layers.Dense(dim, name="ff2")(h)
    x = layers.Add(name="res2")([x, h])
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    out = layers.Dense(4, name="head")(x)
    model = module.Model(inp, out)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def projections(model, name="mha"):
    """``{role: EinsumDense}`` of the attention layer `name`."""
    from deephoyer_tf.structure import attention

    return attention.attention_projections(model.get_layer(name))


def kill_head(model, head, name="mha"):
    """Zeroes head `head`'s query, key and value slices (kernels, biases) and output rows."""
    for role, sub in projections(model, name).items():
        kernel = sub.kernel.numpy()
        if role == "output":
            kernel[head] = 0
        else:
            kernel[:, head] = 0
            bias = sub.bias.numpy()
            bias[head] = 0
            sub.bias.assign(bias)
        sub.kernel.assign(kernel)


def data(tokens=6, dim=12, n=8, seed=1):
    return np.random.default_rng(seed).normal(size=(n, tokens, dim)).astype("float32")


def kernel_sizes(model):
    """Total size of every kernel (rank >= 2 trainable weights that are not biases)."""
    from deephoyer_tf.structure import attention

    total = 0
    for layer in model.layers:
        if type(layer).__name__ == "MultiHeadAttention":
            total += sum(int(np.prod(s.kernel.shape)) for s in attention.attention_projections(layer).values())
        elif hasattr(layer, "kernel"):
            total += int(np.prod(layer.kernel.shape))
    return total
