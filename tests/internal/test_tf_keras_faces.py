"""The tf_keras faces register themselves without `import deephoyer_tf` importing tf_keras."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # fresh processes


def _run(code, timeout=240):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_import_deephoyer_tf_imports_neither_tf_keras_nor_tfmot():
    lines = _run(
        """
        import os, sys
        import deephoyer_tf
        print('tf_keras' in sys.modules, 'tensorflow_model_optimization' in sys.modules)
        print(os.environ.get('TF_USE_LEGACY_KERAS'))
        """
    )
    assert lines[-2:] == ["False False", "None"]


@pytest.mark.parametrize("order", ["deephoyer_tf first", "tf_keras first"])
def test_tf_keras_models_round_trip_without_custom_objects(order, tmp_path):
    """Saved and loaded in fresh processes, tf_keras imported before or after deephoyer_tf."""
    imports = "import deephoyer_tf\nimport tf_keras" if order == "deephoyer_tf first" else "import tf_keras\nimport deephoyer_tf"
    common = imports + "\nimport numpy as np, os, sys\nout = %r\n" % str(tmp_path)
    _run(
        common
        + """
m = tf_keras.Sequential([tf_keras.Input((6,)),
    tf_keras.layers.Dense(5, kernel_regularizer=deephoyer_tf.GroupHoyerSquare(1e-3), name="fc1"),
    tf_keras.layers.Dense(2, name="fc2")])
w = m.get_weights(); w[0][:3] = 0.0; m.set_weights(w)   # dead input units 0-2
small = deephoyer_tf.shrink(m)                          # starts with a GatherUnits
small.save(os.path.join(out, "small.keras"))
m.save(os.path.join(out, "m.h5"))
np.save(os.path.join(out, "x.npy"), np.ones((2, 6), "float32"))
np.save(os.path.join(out, "y.npy"), small.predict(np.ones((2, 6), "float32"), verbose=0))
"""
    )
    lines = _run(
        common
        + """
x = np.load(os.path.join(out, "x.npy"))
small = tf_keras.models.load_model(os.path.join(out, "small.keras"))
m = tf_keras.models.load_model(os.path.join(out, "m.h5"))
print(type(small.layers[1]).__name__, type(m.layers[0].kernel_regularizer).__name__)
print(bool(np.allclose(small.predict(x, verbose=0), np.load(os.path.join(out, "y.npy")))))
print(deephoyer_tf.structure.registry.layer_type(m.layers[0]))
print('tensorflow_model_optimization' in sys.modules)
"""
    )
    assert lines[-4:] == ["GatherUnits GroupHoyerSquare", "True", "Dense", "False"]
