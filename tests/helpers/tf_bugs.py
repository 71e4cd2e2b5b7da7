"""Gates for tests that pin bugs of TF 2.21 / LiteRT 2.3 (see deephoyer_tf.export.tflite).

A test that exists to show such a bug is skipped on other releases
(`pins_tf_2_21`), so that the release that fixes it does not fail the suite;
a test that only meets the bug's warning on its way expects it on TF 2.21
alone (`warns_on_tf_2_21`).
"""

import contextlib

import pytest
import tensorflow as tf

TF_2_21 = tf.__version__.startswith("2.21.")

pins_tf_2_21 = pytest.mark.skipif(
    not TF_2_21,
    reason=f"pins a TF 2.21 converter/XNNPACK bug; TensorFlow {tf.__version__} may have fixed it",
)


def warns_on_tf_2_21(match):
    """`pytest.warns(RuntimeWarning, match=...)` on TF 2.21, no expectation elsewhere."""
    if TF_2_21:
        return pytest.warns(RuntimeWarning, match=match)
    return contextlib.nullcontext()
