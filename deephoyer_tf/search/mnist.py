"""The search on the paper's networks and MNIST (what ``deephoyer-tf search`` runs).

`lenet` loads MNIST (or Fashion-MNIST), takes the dense model from the same
cache as ``deephoyer-tf reproduce`` (`reproduce.pretrained`), and calls
`study.run` with the training images and the validation split (the last
5,000 training images) only: the test images are loaded with the rest of the
files but never passed on, and nothing here reads them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

from deephoyer_tf._internal import validation
from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import reproduce
from deephoyer_tf.search import objective
from deephoyer_tf.search import storage as storage_lib
from deephoyer_tf.search import study as study_lib


def lenet(
    model_name: str,
    method: str,
    *,
    n_trials: int,
    output: str | os.PathLike,
    storage: str | None = None,
    study_name: str | None = None,
    max_drop: float = 0.2,
    quick: bool = False,
    data_dir: str | None = None,
    dataset: str = "mnist",
    cache_dir: str | os.PathLike | None = None,
    per_layer: bool = False,
    regularize_epochs: int | None = None,
    finetune_epochs: int | None = None,
    warmup_epochs: int | None = None,
    strength_range: tuple[float, float] | None = None,
    std_ratio_range: tuple[float, float] = study_lib.STD_RATIOS,
    seed: int = 0,
    log=print,
    **kwargs,
) -> study_lib.SearchResult:
    """Searches `method` on LeNet-300-100 or LeNet-5 (see `study.run` for the search itself).

    The schedule is `reproduce`'s recipe for (`model_name`, `method`)
    (``quick``: its tiny budget, 6,000 training images), with the epochs
    given here overriding it. In a new study the recipe's own strength (and
    std ratio 0.1, or target sparsity 0.98 for ``magnitude``) is the first
    trial.
    """
    recipe, schedule = check_arguments(
        model_name, method, n_trials=n_trials, storage=storage, max_drop=max_drop, quick=quick,
        dataset=dataset, regularize_epochs=regularize_epochs, finetune_epochs=finetune_epochs,
        warmup_epochs=warmup_epochs, seed=seed)
    cache_dir = cache_dir or os.environ.get(
        "DEEPHOYER_CACHE_DIR", pathlib.Path.home() / ".cache" / "deephoyer_tf")
    data = datasets.load_dataset(dataset, data_dir)
    train = reproduce._training_arrays(data, recipe)
    # Only the training and validation arrays go on; the test arrays stay here.
    splits = _TrainAndValidation(train[0], train[1], data.x_val, data.y_val)
    dense, _ = reproduce.pretrained(model_name, splits, recipe, cache_dir, log)
    strength_range = strength_range or study_lib.STRENGTHS.get(method)
    first = study_lib.recipe_trial(method, recipe.strength, dense, per_layer=per_layer,
                                   strength_range=strength_range, target_sparsity=0.98)
    return study_lib.run(
        functools.partial(reproduce.build_model, model_name), (train[0], train[1]),
        (data.x_val, data.y_val), method=method, n_trials=n_trials, output=output, storage=storage,
        study_name=study_name or f"{model_name}-{method}", max_drop=max_drop, dense_model=dense,
        schedule=schedule, strength_range=strength_range, std_ratio_range=std_ratio_range,
        per_layer=per_layer, enqueue=[first] if first else None, seed=seed, log=log, **kwargs)


def check_arguments(model_name, method, *, n_trials, storage=None, max_drop=0.2, quick=False,
                    dataset="mnist", regularize_epochs=None, finetune_epochs=None, warmup_epochs=None,
                    seed=0):
    """Checks `lenet`'s arguments (before any data is read); returns its recipe and `Schedule`.

    Raises `ValueError`/`TypeError` naming the argument, what was expected
    and what was received. An epoch count given as 0 is 0, never the
    recipe's default.
    """
    validation.check_choice(model_name, "model", reproduce.MODELS)
    validation.check_choice(method, "method", objective.METHODS)
    validation.check_choice(dataset, "dataset", datasets.DATASETS)
    # Everything is checked before the data are read or the dense model trained.
    validation.check_int(n_trials, "n_trials", minimum=1)
    validation.check_float(max_drop, "max_drop", minimum=0.0)
    if storage is not None:
        storage_lib.check_storage(storage)
    recipe = reproduce.recipe_for(model_name, method, quick, seed=seed)
    schedule = objective.Schedule.from_recipe(recipe, regularize_epochs, finetune_epochs, warmup_epochs)
    return recipe, schedule


@dataclasses.dataclass(frozen=True)
class _TrainAndValidation:
    """What `reproduce.pretrained` reads (training and validation arrays): no test split."""

    x_train: object
    y_train: object
    x_val: object
    y_val: object
