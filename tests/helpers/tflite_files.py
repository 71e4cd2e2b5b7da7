"""Helpers shared by the TFLite tests: sparsified models and running a file."""

import numpy as np

from deephoyer_tf.export import runtime

WITHOUT_DELEGATES = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


def sparsify(model, density, block=1, layers=None, seed=0):
    """Zeroes kernel entries at random, in runs of `block` along the input axis."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not hasattr(layer, "kernel") or (layers is not None and layer.name not in layers):
            continue
        w, b = layer.get_weights()
        rows = -(-w.shape[-2] // block)
        keep = rng.random(w.shape[:-2] + (rows, w.shape[-1])) < density
        keep = np.repeat(keep, block, axis=-2)[..., : w.shape[-2], :]
        layer.set_weights([w * keep, b + 0.05])
    return model


def run_file(path, x, op_resolver="BUILTIN"):
    it = runtime.interpreter(open(path, "rb").read(), op_resolver)
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    ys = []
    for sample in x:
        it.set_tensor(inp["index"], sample[np.newaxis])
        it.invoke()
        ys.append(it.get_tensor(out["index"])[0])
    return np.stack(ys)
