"""Tests for deephoyer_tf.sparsity.tfmot_wrapper: TFMOT's PruneLowMagnitude with frozen masks."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import fixed_zeros
from deephoyer_tf.sparsity import zero_mask as masks
from deephoyer_tf.structure import registry
from tests.helpers.fixed_zeros import fit
from tests.helpers.fixed_zeros import kernels
from tests.helpers.fixed_zeros import make_pruned


def test_tfmot_wrapper_masks_frozen_and_schedule(tfmot):
    model = make_pruned(tf_keras)
    zeros = {name: k == 0 for name, k in kernels(model).items()}
    wrapped = deephoyer_tf.fix_zeros_tfmot(model)
    assert [type(layer).__name__ for layer in wrapped.layers] == [
        "PruneLowMagnitude", "Flatten", "PruneLowMagnitude", "PruneLowMagnitude",
    ]
    fit(tf_keras, wrapped, tf_keras.optimizers.Adam(0.05), [], epochs=1)
    for wrapper in (layer for layer in wrapped.layers if hasattr(layer, "pruning_vars")):
        (weight, mask, _), = wrapper.pruning_vars
        np.testing.assert_array_equal(mask.numpy(), (~zeros[wrapper.layer.name]).astype("float32"))
    schedule = wrapped.layers[0].pruning_schedule
    assert isinstance(schedule, tfmot.sparsity.keras.PruningSchedule)
    assert not any(bool(schedule(step)[0]) for step in (0, 1, 100, 10**6))
    # The stub registered at `import deephoyer_tf` builds the real schedule.
    assert type(fixed_zeros._FrozenZerosScheduleLoader.from_config({})) is type(schedule)


@pytest.mark.parametrize("previous", [None, "0"])
def test_tfmot_import_puts_env_back(tfmot, monkeypatch, tmp_path, previous):
    from deephoyer_tf.sparsity import tfmot_wrapper as _tfmot

    name = f"fake_tfmot_{previous}"
    # What TFMOT's first import does.
    (tmp_path / f"{name}.py").write_text(
        "import os\nos.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    if previous is None:
        monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    else:
        monkeypatch.setenv("TF_USE_LEGACY_KERAS", previous)
    assert _tfmot._import_keeping_env(name).__name__ == name
    assert os.environ.get("TF_USE_LEGACY_KERAS") == previous


def test_frozen_schedule_never_prunes_and_round_trips(tfmot):
    from deephoyer_tf.sparsity import tfmot_wrapper

    schedule = tfmot_wrapper.FrozenZerosSchedule()
    for step in (0, 7, tf.constant(10**6, tf.int64)):
        should_prune, sparsity = schedule(step)
        assert should_prune.dtype == tf.bool and not bool(should_prune)
        assert sparsity.dtype == tf.float32 and float(sparsity) == 0.0
    assert schedule.get_config() == {"class_name": "FrozenZerosSchedule", "config": {}}
    assert type(tfmot_wrapper.FrozenZerosSchedule.from_config({})) is tfmot_wrapper.FrozenZerosSchedule


def test_schedule_registered_with_tf_keras_under_both_names(tfmot):
    from deephoyer_tf.sparsity import tfmot_wrapper

    objects = tf_keras.utils.get_custom_objects()
    assert objects["FrozenZerosSchedule"] is tfmot_wrapper.FrozenZerosSchedule
    assert objects["deephoyer_tf>FrozenZerosSchedule"] is tfmot_wrapper.FrozenZerosSchedule


def test_wrap_selected_types_masks_from_zeros_and_strip(tfmot):
    from deephoyer_tf.sparsity import tfmot_wrapper

    model = make_pruned(tf_keras)
    before = kernels(model)
    wrapped = tfmot_wrapper.wrap(model, registry.check_layer_types(["Dense"]))
    assert wrapped is not model
    assert [type(layer).__name__ for layer in wrapped.layers] == [
        "Conv2D", "Flatten", "PruneLowMagnitude", "PruneLowMagnitude",
    ]
    for wrapper in wrapped.layers[2:]:
        (weight, mask, _), = wrapper.pruning_vars
        np.testing.assert_array_equal(mask.numpy(), (before[wrapper.layer.name] != 0).astype("float32"))
        assert masks.is_fixed(weight)
        np.testing.assert_array_equal(masks.mask_of(weight), mask.numpy())
        assert isinstance(wrapper.pruning_schedule, tfmot_wrapper.FrozenZerosSchedule)
    assert not masks.is_fixed(wrapped.layers[0].kernel)
    stripped = tfmot_wrapper.strip(wrapped)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Flatten", "Dense", "Dense"]
    for got, want in zip(stripped.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_wrap_rejects_a_subclassed_model_exact_message(tfmot):
    from deephoyer_tf.sparsity import tfmot_wrapper

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.fc = tf_keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError) as error:
        tfmot_wrapper.wrap(net, ("Dense",))
    assert str(error.value) == (
        "fix_zeros_tfmot() cannot wrap tf_keras model 'net' of type Net: TFMOT's "
        "PruneLowMagnitude supports Sequential and functional models only."
    )


def test_import_keeping_env_propagates_import_errors_and_restores(tfmot, monkeypatch):
    from deephoyer_tf.sparsity import tfmot_wrapper

    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    with pytest.raises(ModuleNotFoundError):
        tfmot_wrapper._import_keeping_env("no_such_module_deephoyer_tf_test")
    assert os.environ["TF_USE_LEGACY_KERAS"] == "0"
