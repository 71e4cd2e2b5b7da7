"""The search on a user's model file and data (``deephoyer-tf search --model-file dense.keras``).

`search_model` takes the user's trained dense Keras model and
`user_data.ArraySplits` (from ``--data FILE.npz`` or ``--dataset``), and
calls `study.run` with the training and validation arrays only; the test
arrays, if any, are never passed on. The schedule is the user-model recipe
of `reproduce.user_recipe` (``quick``: its tiny budget), with the epochs given
here overriding it; in a new study the recipe's strength and std ratio 0.1
(``magnitude``: target sparsity 0.9) is the first trial.
"""

from __future__ import annotations

import os

import keras

from deephoyer_tf._internal import validation
from deephoyer_tf.paper import reproduce
from deephoyer_tf.paper import user_data
from deephoyer_tf.search import objective
from deephoyer_tf.search import storage as storage_lib
from deephoyer_tf.search import study as study_lib

#: Methods the search runs on a user's model (TFMOT's needs a tf_keras twin of the architecture).
METHODS = tuple(m for m in objective.METHODS if m != "tfmot-magnitude")


def check_arguments(method, *, n_trials, storage=None, max_drop=0.2, quick=False, regularize_epochs=None,
                    finetune_epochs=None, warmup_epochs=None, seed=0):
    """Checks `search_model`'s arguments before any model or data is read; returns the recipe and `Schedule`."""
    validation.check_choice(method, "method", METHODS)
    validation.check_int(n_trials, "n_trials", minimum=1)
    validation.check_float(max_drop, "max_drop", minimum=0.0)
    if storage is not None:
        storage_lib.check_storage(storage)
    overrides = {"target_sparsity": 0.9} if method == "magnitude" else {}
    recipe = reproduce.user_recipe(method, quick, seed=seed, **overrides)
    schedule = objective.Schedule.from_recipe(recipe, regularize_epochs, finetune_epochs, warmup_epochs)
    return recipe, schedule


def search_model(
    model,
    data: user_data.ArraySplits,
    method: str,
    *,
    n_trials: int,
    output: str | os.PathLike,
    name: str = "model",
    storage: str | None = None,
    study_name: str | None = None,
    max_drop: float = 0.2,
    quick: bool = False,
    per_layer: bool = False,
    regularize_epochs: int | None = None,
    finetune_epochs: int | None = None,
    warmup_epochs: int | None = None,
    seed: int = 0,
    log=print,
    **kwargs,
) -> study_lib.SearchResult:
    """Searches `method` on the user's trained dense `model` and `data` (see `study.run`).

    Args:
        model: a built Keras 3 classifier (one input, logits out), trained.
        data: `user_data.ArraySplits`; its test arrays are not used.
        method: one of `METHODS`.
        name: the model's name, for the default study name ``NAME-METHOD``.
        Others: as `study.run` and `mnist.lenet`.
    """
    recipe, schedule = check_arguments(
        method, n_trials=n_trials, storage=storage, max_drop=max_drop, quick=quick,
        regularize_epochs=regularize_epochs, finetune_epochs=finetune_epochs,
        warmup_epochs=warmup_epochs, seed=seed)
    data = user_data.fit_to_model(data, user_data.model_input_shape(model), "the data")
    user_data.check_classifier(model, data.n_classes)
    first = study_lib.recipe_trial(method, recipe.strength, model, per_layer=per_layer,
                                   strength_range=kwargs.get("strength_range"), target_sparsity=0.9)

    def build_model():
        return keras.models.clone_model(model)

    # Only the training and validation arrays go on; the test arrays stay here.
    return study_lib.run(
        build_model, (data.x_train, data.y_train), (data.x_val, data.y_val), method=method,
        n_trials=n_trials, output=output, storage=storage, study_name=study_name or f"{name}-{method}",
        max_drop=max_drop, dense_model=model, schedule=schedule, per_layer=per_layer,
        enqueue=[first] if first else None, seed=seed, log=log, **kwargs)
