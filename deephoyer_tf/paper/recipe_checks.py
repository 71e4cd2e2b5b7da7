"""Checks of a reproduction recipe, all made before any data is read or any epoch trained.

`validate_recipe(recipe, method)` checks every field of a `reproduce.Recipe`
it knows (fields added later pass through unchecked) with the package's
argument rules and messages::

    Invalid value for argument `learning_rate`. Expected a finite float > 0. Received: learning_rate=-1.0

`target_sparsity_from_results(path)` reads the sparsity of a ``results.json``
(``deephoyer-tf reproduce --match``) and checks what it reads.
`stage_identities(recipe, base)` splits a run's identity by stage, so that a
resumed run keeps every finished stage whose inputs did not change.
"""

from __future__ import annotations

import json
import numbers
import pathlib

from deephoyer_tf._internal import validation
from deephoyer_tf.paper import preprocessing

#: Fields only the stages after the regularized training read (the rest may change the regularized weights).
_SELECT_FIELDS = ("std_ratios", "tolerance", "select_finetune_epochs", "select_average_epochs",
                  "select_screen_drop", "select_reference")
# The selection fine-tunes its candidates with these too.
_FINETUNE_OPTIMIZER = ("finetune_learning_rate", "finetune_schedule", "finetune_weight_decay")
_FINETUNE_FIELDS = ("finetune_epochs", *_FINETUNE_OPTIMIZER, "track_test")
_LATER_FIELDS = (*_SELECT_FIELDS, *_FINETUNE_FIELDS, "std_ratio", "target_sparsity")


def _field(recipe, name, check):
    if hasattr(recipe, name):
        check(getattr(recipe, name), name)


def validate_recipe(recipe, method=None, pretrain_minimum=1):
    """Raises `ValueError`/`TypeError` naming the first bad field of `recipe`; returns `recipe`.

    Epochs are ints >= 0 (pretraining >= 1), learning rates floats > 0, the
    batch size an int >= 1, the tolerance, the strength and the std ratios
    floats >= 0, the target sparsity a float in [0, 1). With `method`, a
    field the method does not read is refused rather than ignored
    (`pretrain_minimum` 0: a user's model file is already trained):
    `target_sparsity` is for ``magnitude`` only, `std_ratio` for every other
    method.
    """
    def epochs(minimum):
        return lambda value, name: validation.check_int(value, name, minimum=minimum)

    def positive(value, name):
        validation.check_float(value, name, greater_than=0.0)

    def non_negative(value, name):
        validation.check_float(value, name, minimum=0.0)

    _field(recipe, "pretrain_epochs", epochs(pretrain_minimum))
    for name in ("regularize_epochs", "finetune_epochs", "warmup_epochs", "select_finetune_epochs"):
        _field(recipe, name, epochs(0))
    for name in ("learning_rate", "finetune_learning_rate"):
        _field(recipe, name, positive)
    for name in ("strength", "tolerance"):
        _field(recipe, name, non_negative)
    _field(recipe, "batch_size", lambda v, n: validation.check_int(v, n, minimum=1))
    _field(recipe, "seed", lambda v, n: validation.check_int(v, n, minimum=0))
    _field(recipe, "train_subset",
           lambda v, n: v is None or validation.check_int(v, n, minimum=1, expected="None or an int >= 1"))
    _field(recipe, "std_ratio", lambda v, n: validation.check_float(v, n, minimum=0.0, allow_none=True))
    _field(recipe, "select_average_epochs", epochs(1))
    _field(recipe, "select_screen_drop",
           lambda v, n: validation.check_float(v, n, minimum=0.0, allow_none=True))
    _field(recipe, "select_reference", lambda v, n: validation.check_choice(v, n, ("plateau", "dense")))
    _field(recipe, "finetune_weight_decay", non_negative)
    for name in ("biases", "track_test"):
        _field(recipe, name, validation.check_bool)
    _field(recipe, "inputs", lambda v, n: validation.check_choice(v, n, preprocessing.INPUTS))
    _field(recipe, "init", lambda v, n: validation.check_choice(v, n, ("keras", "torch")))
    for name in ("pretrain_schedule", "regularize_schedule", "finetune_schedule"):
        _field(recipe, name, lambda v, n: validation.check_choice(v, n, ("cosine", "constant")))
    _field(recipe, "target_sparsity", lambda v, n: validation.check_float(
        v, n, minimum=0.0, below=1.0, allow_none=True))
    if hasattr(recipe, "std_ratios"):
        ratios = recipe.std_ratios
        if isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__iter__"):
            raise TypeError("Invalid type for argument `std_ratios`. Expected a sequence of floats >= 0. "
                            f"Received: std_ratios={ratios!r} of type {type(ratios).__name__}")
        ratios = list(ratios)
        if not ratios:
            raise ValueError("Invalid value for argument `std_ratios`. Expected at least one std ratio. "
                             "Received: std_ratios=()")
        for i, ratio in enumerate(ratios):
            validation.check_float(ratio, "std_ratios", minimum=0.0, label=f"std_ratios[{i}]")
    if method is not None:
        if method == "magnitude" and getattr(recipe, "std_ratio", None) is not None:
            raise ValueError(
                "Invalid value for argument `std_ratio`. Expected None for method 'magnitude' (TFMOT "
                "prunes to a target sparsity; use target_sparsity). "
                f"Received: std_ratio={recipe.std_ratio!r}")
        if method != "magnitude" and getattr(recipe, "target_sparsity", None) is not None:
            raise ValueError(
                f"Invalid value for argument `target_sparsity`. Expected None for method {method!r} "
                "(only 'magnitude' prunes to a target sparsity; this method's threshold is a std ratio). "
                f"Received: target_sparsity={recipe.target_sparsity!r}")
    return recipe


def target_sparsity_from_results(path):
    """``1 - nonzero_weights / total_weights`` of a ``results.json`` (``--match``), checked.

    Raises `ValueError` naming the file and the field if the file cannot be
    read, is not a JSON object, lacks either count, holds a non-integer
    count, or counts that are inconsistent (``0 < nonzero_weights <=
    total_weights``).
    """
    path = validation.check_path(path, "match")

    def bad(expected, received):
        return ValueError(f"Invalid value for argument `match`. Expected {expected}. Received: {received}")

    try:
        results = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise bad("an existing results.json of a reproduce run", f"match={str(path)!r}, no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise bad("a results.json of a reproduce run (JSON)",
                  f"match={str(path)!r}, unreadable: {type(error).__name__}: {error}") from None
    if not isinstance(results, dict):
        raise bad("a JSON object with nonzero_weights and total_weights",
                  f"{type(results).__name__} in {str(path)!r}")
    counts = {}
    for key in ("nonzero_weights", "total_weights"):
        if key not in results:
            raise bad(f"a results.json with the field {key!r}",
                      f"{str(path)!r} has fields {sorted(results)[:12]}")
        value = results[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad(f"an integer {key}", f"{key}={value!r} in {str(path)!r}")
        counts[key] = int(value)
    if not 0 < counts["nonzero_weights"] <= counts["total_weights"]:
        raise bad("0 < nonzero_weights <= total_weights",
                  f"nonzero_weights={counts['nonzero_weights']}, total_weights={counts['total_weights']} "
                  f"in {str(path)!r}")
    return 1.0 - counts["nonzero_weights"] / counts["total_weights"]


def stage_identities(recipe_fields: dict, base: dict) -> dict:
    """What each checkpointed stage of a DeepHoyer run depends on, stage by stage.

    `recipe_fields` is the recipe as a dict, `base` what the whole run
    depends on (model, method, dataset, dense weights). Each stage's identity
    holds the previous stage's, so a change invalidates that stage and the
    later ones only:

    * ``regularize``: `base` and every recipe field but those of the later
      stages (new fields count here: the safe side);
    * ``select``: the candidates, tolerance, selection fine-tuning (and its
      learning rate);
    * ``finetune``: the fixed std ratio (or the selection), the fine-tuning
      epochs and learning rate.
    """
    regularize = {**base, "recipe": {k: v for k, v in recipe_fields.items() if k not in _LATER_FIELDS}}
    select = {"regularize": regularize,
              **{k: recipe_fields.get(k) for k in (*_SELECT_FIELDS, *_FINETUNE_OPTIMIZER)}}
    fixed = recipe_fields.get("std_ratio")
    finetune = {"threshold": {"std_ratio": fixed} if fixed is not None else {"select": select},
                "regularize": regularize, **{k: recipe_fields.get(k) for k in _FINETUNE_FIELDS}}
    return {"regularize": regularize, "select": select, "finetune": finetune}
