"""MagnitudePruning under keras.distribution.DataParallel on two JAX host devices (slow, subprocess)."""

import json

import keras
import pytest

from tests.helpers import backends

pytest.importorskip("jax")

_TRAIN = r"""
import json
import numpy as np, keras, jax, deephoyer_tf

def run(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(24, activation="relu", name="fc1"),
                              keras.layers.Dense(8, name="fc2")])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 16)).astype("float32"), rng.normal(size=(64, 8)).astype("float32")
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16, frequency=4)
    model.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0,
              callbacks=[deephoyer_tf.MagnitudePruning(schedule, block_size=(1, 4))])
    return model

assert len(jax.devices()) == 2, jax.devices()
one = run(None)
two = run(keras.distribution.DataParallel(devices=jax.devices()))
print(json.dumps({
    "sharding": str(two.get_layer("fc1").kernel.value.sharding),
    "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights())),
    "same_zeros": all(bool(np.array_equal(a == 0, b == 0)) for a, b in zip(one.get_weights(), two.get_weights())),
    "kept": [int(np.sum(w != 0)) for w in two.get_weights()[::2]],
    "pattern": deephoyer_tf.pattern_summary(two).pattern,
}))
"""


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX suite")
def test_data_parallel_on_two_host_devices_prunes_as_one_device():
    out = backends.run_python(_TRAIN, "jax", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    result = json.loads(out.strip().splitlines()[-1])
    assert "NamedSharding" in result["sharding"]
    assert result["same_zeros"] and result["max_diff"] < 1e-4
    # 16x24 kernel: 24 * 4 blocks of 1x4, 25% kept; 24x8: 8 * 6 blocks.
    assert result["kept"] == [4 * round(96 * 0.25), 4 * round(48 * 0.25)]
    assert result["pattern"] == "1x4 blocks"
