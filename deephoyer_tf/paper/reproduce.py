"""The paper's MNIST experiments, end to end, under an honest protocol.

`run(model_name, method, ...)` is what ``deephoyer-tf reproduce`` calls:

1. Dense pretraining, Adam with a cosine-decayed learning rate (cached in
   `cache_dir`, reused by later runs).
2. Training with the regularizer (`method`), the strength warmed up linearly.
3. Pruning: ``|w| < std_ratio * std(W)`` set to zero per layer. The std ratio
   is chosen on the validation split: the largest candidate whose validation
   accuracy after pruning and a short fine-tune (`select_finetune_epochs`)
   stays within `tolerance` of the dense model's; or given (`std_ratio`).
4. Fine-tuning with the penalties off and the zeros held fixed.
5. The final model's test accuracy (never the best seen during training) and
   its sparsity report.

``method="magnitude"`` runs TFMOT's `prune_low_magnitude` with a
`PolynomialDecay` schedule from the same pretrained model, with the same epoch
budget (regularized training + fine-tuning), aiming at a target sparsity
(by default the one DeepHoyer's Hoyer-Square reached in the paper).

Only the validation split (the last 5,000 training images) guides choices; the
test images give the final number only.

`run_model(model, method, data, ...)` runs the same stages on a user's trained
dense model and arrays (``deephoyer-tf reproduce --model-file``; the recipe
is `user_recipe`, the data `user_data.ArraySplits`).

Long schedules run in pieces: every epoch of pretraining (in the cache
folder), of the regularized training and of the fine-tuning (in
``OUTPUT/checkpoints``) is backed up with Keras' `BackupAndRestore`, and each
completed stage (the regularized weights, the chosen std ratio, the
fine-tuned weights) is recorded; run the same command again after an
interruption and it continues at the epoch it was in. Each stage's
checkpoints are stamped with what the stage depends on: a stage of a
different run (another recipe for it or an earlier stage, another method,
dataset or dense model) is discarded with the stages after it, the earlier
ones kept; all are removed once a run completes. Every file is written to a
temporary name and renamed; an unreadable checkpoint or cached model is
reported and redone. TFMOT ``magnitude`` runs are not resumable.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import shutil
import time

import keras
import numpy as np

from deephoyer_tf._internal import atomic
from deephoyer_tf._internal import loading
from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation
from deephoyer_tf.callbacks.strength_schedule import StrengthSchedule
from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import evaluate
from deephoyer_tf.paper import models as models_lib
from deephoyer_tf.paper import preprocessing
from deephoyer_tf.paper import recipe_checks
from deephoyer_tf.regularizers import regularizers
from deephoyer_tf.regularizers.regularize_model import regularize
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.sparsity.fixed_zeros import fix_zeros
from deephoyer_tf.sparsity.fixed_zeros import strip_zero_masks
from deephoyer_tf.sparsity.thresholding import prune
from deephoyer_tf.structure import registry
from deephoyer_tf.structure import report as report_lib
from deephoyer_tf.training.resumable import fit_resumable  # noqa: F401 - also used by search
from deephoyer_tf.training.resumable import load_weights  # noqa: F401
from deephoyer_tf.training.resumable import save_weights  # noqa: F401

MODELS = ("lenet-300-100", "lenet-5")
METHODS = ("hs", "hoyer", "group-hs", "l1", "group-lasso", "magnitude")
STRUCTURAL = ("group-hs", "group-lasso")

# The paper's own rows (ICLR 2020, Tables 1, 2, 4, 5), as targets.
PAPER = {
    ("lenet-300-100", "hs"): {"test_accuracy": 0.984, "nonzero_weights": 6200},
    ("lenet-5", "hs"): {"test_accuracy": 0.992, "nonzero_weights": 3550},
    ("lenet-300-100", "group-hs"): {
        "test_accuracy": 0.982, "macs": 16490, "structure": "353-45-11"},
    ("lenet-5", "group-hs"): {
        "test_accuracy": 0.990, "macs": 169937, "structure": "5-12-139-13"},
}


@dataclasses.dataclass
class Recipe:
    """Hyperparameters of one reproduction run (all overridable)."""

    strength: float = 1e-4
    pretrain_epochs: int = 30
    regularize_epochs: int = 30
    finetune_epochs: int = 15
    warmup_epochs: int = 5
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-3
    batch_size: int = 128
    std_ratios: tuple = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    tolerance: float = 0.002
    select_finetune_epochs: int = 3
    std_ratio: float = None  # fixed instead of chosen on validation
    target_sparsity: float = None  # magnitude only
    train_subset: int = None  # use only the first N training images (quick)
    seed: int = 0
    # How the authors' public code (yanghr/DeepHoyer, mnist/) differs; the
    # defaults are this package's protocol, `AUTHORS` holds the other values.
    inputs: str = "standardize"  # or "unit": pixels / 255 (the authors' code)
    init: str = "keras"  # or "torch": kernels and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    pretrain_schedule: str = "cosine"  # learning rate of each stage: "cosine" (to 0) or "constant"
    # Cosine in the regularized stage: the weights the penalty drives to zero
    # settle near zero instead of oscillating at about +-lr under Adam, so a
    # small std ratio separates them (BENCHMARKS.md, "Replicating DeepHoyer").
    regularize_schedule: str = "cosine"
    finetune_schedule: str = "cosine"
    biases: bool = False  # the penalty on biases too, and biases pruned (per tensor)
    finetune_weight_decay: float = 0.0  # L2 added to the gradient, as torch Adam's weight_decay
    select_average_epochs: int = 2  # selection: validation accuracy averaged over the last N epochs
    select_screen_drop: float = 0.05  # selection: skip the fine-tune of a ratio this far below right after pruning
    # selection: "plateau" judges pruning against min(dense accuracy, the regularized model's own, measured at
    # the smallest ratio); "dense" against the dense model's only
    select_reference: str = "plateau"
    track_test: bool = False  # record test accuracy after pruning and each fine-tune epoch


# Strengths: for LeNet-300-100, the sparsest of a sweep (BENCHMARKS.md) whose
# final validation accuracy is within 0.3 points of the dense model's, at a
# constant learning rate; Hoyer-Square's re-chosen (2e-4) with the cosine
# schedule of the regularized stage (BENCHMARKS.md, "Replicating DeepHoyer"),
# Group-HS's scaled by the same 2/3. For LeNet-5, strengths scaled from those
# (no sweep yet).
_LENET5 = dict(pretrain_epochs=12, regularize_epochs=25, finetune_epochs=10, select_finetune_epochs=2,
               select_average_epochs=1)

RECIPES = {
    ("lenet-300-100", "hs"): Recipe(strength=2e-4),
    ("lenet-300-100", "hoyer"): Recipe(strength=3e-3),
    ("lenet-300-100", "group-hs"): Recipe(strength=2e-3),
    ("lenet-300-100", "l1"): Recipe(strength=1e-4),
    ("lenet-300-100", "group-lasso"): Recipe(strength=3e-4),
    ("lenet-300-100", "magnitude"): Recipe(),
    ("lenet-5", "hs"): Recipe(strength=2e-4, **_LENET5),
    ("lenet-5", "hoyer"): Recipe(strength=3e-3, **_LENET5),
    ("lenet-5", "group-hs"): Recipe(strength=7e-3, **_LENET5),
    ("lenet-5", "l1"): Recipe(strength=3e-5, **_LENET5),
    ("lenet-5", "group-lasso"): Recipe(strength=3e-4, **_LENET5),
    ("lenet-5", "magnitude"): Recipe(**_LENET5),
}

# The authors' public MNIST code (GitHub yanghr/DeepHoyer, mnist/MLP and
# mnist/CNN), read from its files: pixels / 255, Adam 1e-3 constant, batch 100,
# 250 dense + 250 regularized epochs (a fresh Adam), the penalty on every
# parameter tensor (biases too), pruning |w| < s * std per tensor (biases
# too), 50 fine-tuning epochs of Adam 1e-3 with weight decay 1e-4 and the
# zeros' gradients masked; the best test accuracy over the fine-tuning is
# what the script prints. Strengths and std ratios: the paper's Table 7 where
# it gives them (Hoyer-Square), else the code's defaults (decay 1e-3, s 0.25).
_AUTHORS = dict(
    pretrain_epochs=250, regularize_epochs=250, finetune_epochs=50, warmup_epochs=0,
    learning_rate=1e-3, finetune_learning_rate=1e-3, batch_size=100, inputs="unit", init="torch",
    pretrain_schedule="constant", regularize_schedule="constant", finetune_schedule="constant",
    biases=True, finetune_weight_decay=1e-4, track_test=True,
)
AUTHORS = {
    ("lenet-300-100", "hs"): Recipe(strength=2e-4, std_ratio=0.02, **_AUTHORS),
    ("lenet-5", "hs"): Recipe(strength=1e-4, std_ratio=0.03, **_AUTHORS),
    ("lenet-300-100", "group-hs"): Recipe(strength=1e-3, std_ratio=0.25, **_AUTHORS),
    ("lenet-5", "group-hs"): Recipe(strength=1e-3, std_ratio=0.25, **_AUTHORS),
}
RECIPE_NAMES = ("default", "authors")

QUICK = dict(
    pretrain_epochs=1, regularize_epochs=2, finetune_epochs=1, warmup_epochs=1,
    train_subset=6000,
)


def recipe_for(model_name, method, quick=False, name="default", **overrides):
    """The recipe `name` of (`model_name`, `method`), with `overrides` applied.

    `name` is ``"default"`` (this package's protocol) or ``"authors"`` (the
    authors' public code, for ``hs`` and ``group-hs``).
    """
    validation.check_choice(model_name, "model", MODELS)
    validation.check_choice(method, "method", METHODS)
    validation.check_choice(name, "recipe", RECIPE_NAMES)
    if name == "authors":
        if (model_name, method) not in AUTHORS:
            raise ValueError(
                "Invalid value for argument `recipe`: the authors' code has recipes for "
                f"{sorted(AUTHORS)} only. Received: recipe='authors' with "
                f"({model_name!r}, {method!r})"
            )
        recipe = dataclasses.replace(AUTHORS[(model_name, method)])
    else:
        recipe = dataclasses.replace(RECIPES[(model_name, method)])
    if quick:
        recipe = dataclasses.replace(recipe, **QUICK)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Recipe)})
    if unknown:
        raise ValueError(f"Unknown recipe fields: {unknown}")
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    return recipe_checks.validate_recipe(recipe, method)


#: The recipe of a user's model (`run_model`): the LeNet-300-100 recipe of the method, without
#: pretraining (the model file is the trained dense model) and without a training subset.
USER_MODEL = "model-file"


def user_recipe(method, quick=False, **overrides):
    """The recipe for a user's model (``--model-file``): LeNet-300-100's for `method`, no pretraining.

    The model file is taken as the trained dense model, so `pretrain_epochs`
    is 0 unless given (then it is trained that many more epochs first);
    ``quick`` shortens the other stages as for the LeNets (the first 6,000
    training examples, a few epochs). ``magnitude`` needs a
    `target_sparsity` (no paper row to aim at).
    """
    validation.check_choice(method, "method", METHODS)
    recipe = dataclasses.replace(RECIPES[("lenet-300-100", method)], pretrain_epochs=0)
    if quick:
        recipe = dataclasses.replace(recipe, **{**QUICK, "pretrain_epochs": 0})
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Recipe)})
    if unknown:
        raise ValueError(f"Unknown recipe fields: {unknown}")
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    if method == "magnitude" and recipe.target_sparsity is None:
        raise ValueError("Invalid value for argument `target_sparsity`. Method 'magnitude' on a user's "
                         "model needs the final sparsity (e.g. 0.9). Received: target_sparsity=None")
    return recipe_checks.validate_recipe(recipe, method, pretrain_minimum=0)


def make_regularizer(method, strength):
    """The regularizer of `method` with `strength` (None for magnitude)."""
    return {
        "hs": lambda: regularizers.HoyerSquare(strength),
        "hoyer": lambda: regularizers.Hoyer(strength),
        "group-hs": lambda: regularizers.GroupHoyerSquare(strength, "both"),
        "l1": lambda: keras.regularizers.L1(strength),
        "group-lasso": lambda: regularizers.GroupLasso(strength, "both"),
        "magnitude": lambda: None,
    }[method]()


def build_model(model_name, flavour="keras", init="keras", seed=0):
    """The network `model_name`; ``init="torch"`` initializes as PyTorch's layers do.

    PyTorch's `Linear` and `Conv2d` draw kernels and biases from
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the authors' code); Keras draws
    kernels from Glorot-uniform and sets biases to 0.
    """
    builder = {"lenet-300-100": models_lib.lenet_300_100, "lenet-5": models_lib.lenet_5}
    model = builder[model_name](flavour=flavour)
    if init == "torch":
        _torch_init(model, seed)
    return model


def _torch_init(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        fan_in = int(np.prod(kernel.shape[:-1]))
        bound = 1.0 / np.sqrt(fan_in)
        kernel.assign(rng.uniform(-bound, bound, kernel.shape).astype(np.float32))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype(np.float32))


def compile_classifier(model, learning_rate, module=keras, decay_steps=None):
    """Adam with `learning_rate`, cosine-decayed to 0 over `decay_steps` if given; logits loss, accuracy."""
    if decay_steps:
        learning_rate = module.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=module.optimizers.Adam(learning_rate),
        loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _decay_steps(schedule, epochs, train_size, batch_size):
    """The cosine decay length of a stage, or None for a constant learning rate."""
    if schedule == "constant":
        return None
    return epochs * int(np.ceil(train_size / batch_size))


def _accuracy(model, x, y, batch_size=1000):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _training_arrays(data, recipe):
    if recipe.train_subset:
        return data.x_train[: recipe.train_subset], data.y_train[: recipe.train_subset]
    return data.x_train, data.y_train


def data_fingerprint(x, y):
    """A short hash of training arrays (their shapes, dtypes and bytes)."""
    digest = hashlib.sha1()
    for array in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


def _architecture_digest(model_name):
    """A short hash of the network's config, so a changed architecture is not reused."""
    config = json.dumps(build_model(model_name).get_config(), sort_keys=True, default=str)
    return hashlib.sha1(config.encode()).hexdigest()[:8]


def pretrained(model_name, data, recipe, cache_dir, log=print):
    """The dense model: loaded from `cache_dir` if trained before, else trained.

    The cache key holds everything the dense model depends on: the network's
    architecture (a hash of its config), its initialization, the input
    scaling, the pretraining epochs, learning rate and schedule, batch size
    and seed, the training subset and a fingerprint of the training data. The
    model is written under its key only once complete (a temporary file, then
    a rename), so an interrupted run never leaves a half-trained model in the
    cache; pretraining itself backs up every epoch (`cache_dir/KEY.backup`)
    and an interrupted pretraining resumes there.

    `data` holds the images as the recipe feeds them (`recipe.inputs`).
    """
    x, y = _training_arrays(data, recipe)
    schedule = "cos" if recipe.pretrain_schedule == "cosine" else "const"
    key = (f"{model_name}-{_architecture_digest(model_name)}-dense-{schedule}-e{recipe.pretrain_epochs}"
           f"-lr{recipe.learning_rate:g}-b{recipe.batch_size}-s{recipe.seed}")
    if recipe.init != "keras":
        key += f"-init{recipe.init}"
    if recipe.train_subset:
        key += f"-n{recipe.train_subset}"
    # The data are part of the key: a Fashion-MNIST run must not reuse an MNIST
    # model, nor a [0, 1]-input run a standardized one.
    key += f"-d{data_fingerprint(x, y)}"
    path = pathlib.Path(cache_dir) / f"{key}.keras"
    cached = _load_cached_model(path, log)
    if cached is not None:
        return cached, 0
    keras.utils.set_random_seed(recipe.seed)
    model = build_model(model_name, init=recipe.init, seed=recipe.seed)
    compile_classifier(model, recipe.learning_rate, decay_steps=_decay_steps(
        recipe.pretrain_schedule, recipe.pretrain_epochs, len(x), recipe.batch_size))
    log(f"[pretrain] {model_name}: {recipe.pretrain_epochs} epochs, learning rate "
        f"{recipe.learning_rate:g} ({recipe.pretrain_schedule})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fit_resumable(model, x, y, epochs=recipe.pretrain_epochs, backup_dir=path.with_suffix(".backup"),
                  log=log, stage="pretrain", batch_size=recipe.batch_size,
                  validation_data=(data.x_val, data.y_val), verbose=2)
    with atomic.atomic_path(path) as partial:
        model.save(partial)
    return model, recipe.pretrain_epochs


def _load_cached_model(path, log, stage="pretrain"):
    """The model cached at `path`, or None if there is none or it cannot be read (then removed)."""
    path = pathlib.Path(path)
    if not path.exists():
        return None
    try:
        model = loading.load_model(path, safe_mode=True)
    except loading.UnsafeModelError:
        raise  # code in a cache entry: someone put it there; say so, replace nothing
    except Exception as error:  # noqa: BLE001 - truncated, garbled: train it again
        import zipfile

        if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras says "File not found"
            why = "not a .keras archive: truncated or another kind of file"
        else:
            why = f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0][:300]
        log(f"[{stage}] the cached model {path} cannot be loaded ({why}); training it again")
        path.unlink(missing_ok=True)
        return None
    log(f"[{stage}] reusing {path}")
    return model


def select_std_ratio(model, data, recipe, reference, log=print):
    """Largest candidate std ratio whose validation accuracy stays within tolerance.

    Candidates are tried from the largest down on a copy of the weights:
    prune, fine-tune `recipe.select_finetune_epochs` epochs with the zeros
    held fixed and no penalty (0: none), evaluate on the validation split.
    The accuracy a candidate is judged by is `selection_accuracy`: the mean
    over the last `recipe.select_average_epochs` epochs of that fine-tune,
    which is steadier than one epoch's. The first candidate whose accuracy is
    at least ``reference - recipe.tolerance`` wins.

    With ``recipe.select_reference == "plateau"`` (the default), the smallest
    candidate is measured first: it prunes almost nothing, so its accuracy is
    the regularized model's own. When that is below `reference` (the
    regularization itself cost accuracy; how much is the strength's choice,
    not the threshold's), pruning is judged against it instead: the chosen
    ratio is the largest that keeps the accuracy the regularized model has.
    Without this, a model whose regularized accuracy sits just below the cut
    fails every candidate and falls back to the smallest ratio, the least
    sparse choice, on a difference of a few images (BENCHMARKS.md). With
    `recipe.select_screen_drop`, a candidate whose accuracy right after
    pruning is more than that below the reference is rejected without its
    fine-tune (a large ratio that destroyed the network), which saves the
    epochs a longer selection fine-tune costs. The original weights are
    restored after each try.

    Returns:
        ``(ratio, tries)``: the chosen ratio and, per candidate tried, a dict
        of its ratio, nonzero weights, MACs and validation accuracies.
    """
    saved = model.get_weights()
    x_train, y_train = _training_arrays(data, recipe)
    chosen = None
    tries = []
    ratios = sorted(recipe.std_ratios, reverse=True)
    plateau = None
    if recipe.select_reference == "plateau":
        # The smallest ratio first: its accuracy is the regularized model's own
        # (it prunes almost nothing), the level pruning must not fall below.
        smallest = ratios.pop()
        report = prune(model, std_ratio=smallest, biases=recipe.biases)
        accuracies = _selection_finetune(model, data, x_train, y_train, recipe)
        plateau = selection_accuracy(accuracies, recipe.select_average_epochs)
        model.set_weights(saved)
        smallest_try = {"std_ratio": smallest, "nonzero_weights": report.nonzero_weights, "macs": report.macs,
                        "validation_accuracies": accuracies, "selection_accuracy": plateau}
        log(f"[select] std_ratio={smallest:g} (the regularized model's own level): val acc {plateau:.4f} "
            f"(per epoch {', '.join(f'{a:.4f}' for a in accuracies)}), nonzero {report.nonzero_weights}")
        if plateau < reference:
            log(f"[select] the regularized model reaches val acc {plateau:.4f} (std_ratio={smallest:g}, "
                f"{report.nonzero_weights} nonzero), below the dense model's {reference:.4f}: pruning "
                "is judged against it")
            reference = plateau
        ratios.append(smallest)
    for ratio in ratios:
        if plateau is not None and ratio == ratios[-1]:
            tries.append(smallest_try)
            chosen = ratio
            break
        report = prune(model, std_ratio=ratio, biases=recipe.biases)
        if recipe.select_screen_drop is not None and recipe.select_finetune_epochs:
            pruned_accuracy = _accuracy(model, data.x_val, data.y_val)
            if pruned_accuracy < reference - recipe.select_screen_drop:
                model.set_weights(saved)
                tries.append({"std_ratio": ratio, "nonzero_weights": report.nonzero_weights, "macs": report.macs,
                              "pruned_accuracy": pruned_accuracy, "screened_out": True})
                log(f"[select] std_ratio={ratio:g}: val acc {pruned_accuracy:.4f} right after pruning, "
                    f"more than {recipe.select_screen_drop:g} below the reference: not fine-tuned")
                continue
        accuracies = _selection_finetune(model, data, x_train, y_train, recipe)
        accuracy = selection_accuracy(accuracies, recipe.select_average_epochs)
        model.set_weights(saved)
        tries.append({"std_ratio": ratio, "nonzero_weights": report.nonzero_weights, "macs": report.macs,
                      "validation_accuracies": accuracies, "selection_accuracy": accuracy})
        log(f"[select] std_ratio={ratio:g}: val acc {accuracy:.4f} "
            f"(per epoch {', '.join(f'{a:.4f}' for a in accuracies)}), "
            f"nonzero {report.nonzero_weights}, MACs {report.macs}")
        if accuracy >= reference - recipe.tolerance:
            chosen = ratio
            break
    if chosen is None:
        chosen = min(recipe.std_ratios)
        log(f"[select] no candidate within tolerance; using the smallest, {chosen:g}")
    return chosen, tries


def selection_accuracy(accuracies, average_epochs):
    """The mean of the last `average_epochs` validation accuracies (all if fewer)."""
    if not accuracies:
        raise ValueError("selection_accuracy() needs at least one accuracy. Received: []")
    if isinstance(average_epochs, bool) or not isinstance(average_epochs, int) or average_epochs < 1:
        raise ValueError(
            "Invalid value for argument `average_epochs`. Expected an int >= 1. "
            f"Received: average_epochs={average_epochs!r}")
    return float(np.mean(accuracies[-average_epochs:]))


def _selection_finetune(model, data, x_train, y_train, recipe):
    """Validation accuracies of a pruned `model` after each selection fine-tune epoch."""
    if not recipe.select_finetune_epochs:
        return [_accuracy(model, data.x_val, data.y_val)]
    trial = _finetune_copy(model, recipe, recipe.select_finetune_epochs, len(x_train))
    accuracies = []
    for _ in range(recipe.select_finetune_epochs):
        trial.fit(x_train, y_train, batch_size=recipe.batch_size, epochs=1, verbose=0)
        accuracies.append(_accuracy(trial, data.x_val, data.y_val))
    return accuracies


def _finetune_copy(model, recipe, epochs, train_size):
    """A compiled copy of `model` without penalties, its zeros held fixed.

    Its learning rate starts at `recipe.finetune_learning_rate` and, with
    ``recipe.finetune_schedule == "cosine"``, decays to 0 along a cosine over
    `epochs` epochs of `train_size` images. With `recipe.finetune_weight_decay`
    an L2 penalty ``wd / 2 * sum(w^2)`` goes on kernels and biases (the
    gradient ``wd * w`` of PyTorch Adam's `weight_decay`); with
    `recipe.biases`, the biases' zeros are held too.
    """
    plain = keras.models.clone_model(model, clone_function=_without_regularizers)
    plain.set_weights(model.get_weights())
    if recipe.finetune_weight_decay:
        l2 = keras.regularizers.L2(recipe.finetune_weight_decay / 2)
        plain = regularize(plain, l2, bias_regularizer=l2)
        plain.set_weights(model.get_weights())
    compile_classifier(plain, recipe.finetune_learning_rate, decay_steps=_decay_steps(
        recipe.finetune_schedule, epochs, train_size, recipe.batch_size))
    plain = fix_zeros(plain)
    if recipe.biases:
        _hold_bias_zeros(plain)
    return plain


def _hold_bias_zeros(model):
    """Holds the zeros of every bias at zero (`fix_zeros` holds kernels only)."""
    for layer in model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None and not zero_mask.is_fixed(bias):
            mask = keras.Variable(np.not_equal(bias.numpy(), 0).astype(np.float32), trainable=False,
                                  name="bias_zero_mask")
            private_api.set_variable_constraint(bias, zero_mask.ZeroMask(mask, bias.constraint))


def _release_bias_zeros(model):
    for layer in model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None and zero_mask.is_fixed(bias):
            private_api.set_variable_constraint(bias, bias.constraint.previous)


def run(model_name, method, data_dir=None, output=None, quick=False, cache_dir=None,
        recipe=None, log=print, dataset="mnist"):
    """Runs one reproduction and returns its results (also written to `output`).

    `dataset` is ``"mnist"`` (the paper's) or ``"fashion-mnist"`` (same
    format, harder; the paper's row is then not shown beside ours).
    """
    start = time.time()
    validation.check_choice(dataset, "dataset", datasets.DATASETS)
    validation.check_choice(model_name, "model", MODELS)
    validation.check_choice(method, "method", METHODS)
    recipe = recipe_checks.validate_recipe(recipe or recipe_for(model_name, method, quick), method)
    output = pathlib.Path(output or f"runs/{model_name}-{method}")
    output.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or os.environ.get(
        "DEEPHOYER_CACHE_DIR", pathlib.Path.home() / ".cache" / "deephoyer_tf")
    data = datasets.load_dataset(dataset, data_dir)
    scale, offset = preprocessing.scale_and_offset(recipe.inputs, data.mean, data.std)
    data = preprocessing.recipe_inputs(data, recipe.inputs)
    x_train, y_train = _training_arrays(data, recipe)

    dense, pretrain_epochs_run = pretrained(model_name, data, recipe, cache_dir, log)
    dense_val = _accuracy(dense, data.x_val, data.y_val)
    dense_test = _accuracy(dense, data.x_test, data.y_test)
    log(f"[dense] validation accuracy {dense_val:.4f}")

    keras.utils.set_random_seed(recipe.seed + 1)
    extra = {}
    if method == "magnitude":
        model, extra = _run_magnitude(model_name, dense, data, recipe, log)
    else:
        checkpoints = _checkpoints(output / "checkpoints", {
            "model": model_name, "method": method, "dataset": dataset,
            "recipe": dataclasses.asdict(recipe),
            "dense": data_fingerprint(*[w for w in dense.get_weights()[:2]]),
        }, log)
        model, extra = _run_deephoyer(method, dense, data, x_train, y_train, recipe, dense_val, log,
                                      checkpoints)

    results = _finish(model_name, method, dense, model, extra, data, recipe, output, log, start,
                      dataset=dataset, quick=quick, scale_offset=(scale, offset),
                      dense_test=dense_test, dense_val=dense_val,
                      pretrain_cached=pretrain_epochs_run == 0,
                      paper=PAPER.get((model_name, method)) if dataset == "mnist" else None)
    return results


def run_model(model, method, data, *, output, recipe=None, quick=False, name="model", dataset=None,
              scale_offset=None, log=print):
    """Runs the reproduction's stages on a user's trained dense `model` and `data` (`ArraySplits`).

    What ``deephoyer-tf reproduce --model-file dense.keras`` runs: `model`
    is the dense starting point (trained `recipe.pretrain_epochs` more epochs
    first if that is above 0, the default being 0), then the method's stages
    as for the LeNets: regularize, choose the std ratio on the validation
    split, prune, fine-tune (or magnitude pruning to `recipe.target_sparsity`),
    each resumable. Writes ``model.keras``, ``results.json`` and
    ``stages.npz`` into `output`. The test accuracy is read once at the end,
    and only if `data` has a test split (else None).

    Args:
        model: a built Keras 3 classifier with one input and logits out.
        method: one of `METHODS`.
        data: `user_data.ArraySplits`, the images as `model` takes them.
        output: the output folder.
        recipe: default `user_recipe(method, quick)`.
        name: the model's name in ``results.json`` (the file's stem).
        dataset: the data's name in ``results.json`` (``FILE.npz``, ``mnist``).
        scale_offset: ``(scale, offset)`` when `data` are pixels scaled from
            0..255: the saved model then starts with that `Rescaling` and
            takes raw pixels, as the LeNets' do.
        log: where progress lines go.
    """
    from deephoyer_tf.paper import user_data

    start = time.time()
    validation.check_choice(method, "method", METHODS)
    recipe = recipe_checks.validate_recipe(recipe or user_recipe(method, quick), method, pretrain_minimum=0)
    if method == "magnitude" and recipe.target_sparsity is None:
        raise ValueError("Invalid value for argument `target_sparsity`. Method 'magnitude' on a user's "
                         "model needs the final sparsity (e.g. 0.9). Received: target_sparsity=None")
    data = user_data.fit_to_model(data, user_data.model_input_shape(model), dataset or "the data")
    user_data.check_classifier(model, data.n_classes)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    x_train, y_train = _training_arrays(data, recipe)
    dense = keras.models.clone_model(model)
    dense.set_weights(model.get_weights())
    if recipe.pretrain_epochs:
        keras.utils.set_random_seed(recipe.seed)
        compile_classifier(dense, recipe.learning_rate, decay_steps=_decay_steps(
            recipe.pretrain_schedule, recipe.pretrain_epochs, len(x_train), recipe.batch_size))
        log(f"[pretrain] {name}: {recipe.pretrain_epochs} more epochs")
        dense.fit(x_train, y_train, batch_size=recipe.batch_size, epochs=recipe.pretrain_epochs,
                  validation_data=(data.x_val, data.y_val), verbose=2)
    dense_val = _accuracy(dense, data.x_val, data.y_val)
    dense_test = _accuracy(dense, data.x_test, data.y_test) if data.has_test else None
    log(f"[dense] validation accuracy {dense_val:.4f}")

    keras.utils.set_random_seed(recipe.seed + 1)
    if method == "magnitude":
        final, extra = _run_magnitude(name, dense, data, recipe, log, build=lambda: keras.models.clone_model(dense))
    else:
        checkpoints = _checkpoints(output / "checkpoints", {
            "model": name, "method": method, "dataset": dataset, "recipe": dataclasses.asdict(recipe),
            "dense": data_fingerprint(*[w for w in dense.get_weights()[:2]]),
        }, log)
        final, extra = _run_deephoyer(method, dense, data, x_train, y_train, recipe, dense_val, log, checkpoints)
    return _finish(name, method, dense, final, extra, data, recipe, output, log, start, dataset=dataset,
                   quick=quick, scale_offset=scale_offset, dense_test=dense_test, dense_val=dense_val,
                   pretrain_cached=False, paper=None)


def _finish(model_name, method, dense, model, extra, data, recipe, output, log, start, *, dataset, quick,
            scale_offset, dense_test, dense_val, pretrain_cached, paper):
    """Writes ``stages.npz``, ``model.keras`` and ``results.json``; logs the report; returns the results."""
    stages = {"dense": _kernel_arrays(dense), "final": _kernel_arrays(model)}
    if "regularized_kernels" in extra:
        stages["regularized"] = extra.pop("regularized_kernels")
    save_stages(output / "stages.npz", stages)
    report = report_lib.sparsity_report(model)
    validation_accuracy = _accuracy(model, data.x_val, data.y_val)
    has_test = getattr(data, "x_test", None) is not None
    test_accuracy = _accuracy(model, data.x_test, data.y_test) if has_test else None  # the final number, once
    model_path = output / "model.keras"
    # With a scaling, the saved model takes raw pixels (0 to 255): the input scaling is its first layer.
    saved = preprocessing.with_preprocessing(model, *scale_offset) if scale_offset else model
    with atomic.atomic_path(model_path) as partial:
        saved.save(partial)
    summary = report.to_dict()
    results = {
        "model": model_name,
        "method": method,
        "dataset": dataset,
        "test_accuracy": test_accuracy,
        "validation_accuracy": validation_accuracy,
        "dense_test_accuracy": dense_test,
        "dense_validation_accuracy": dense_val,
        **evaluate.size_numbers(report),
        "per_layer": summary.get("layers"),
        "epochs": {
            "pretrain": recipe.pretrain_epochs,
            "regularize": recipe.regularize_epochs,
            "finetune": recipe.finetune_epochs,
        },
        "wall_seconds": round(time.time() - start, 1),
        "pretrain_cached": pretrain_cached,
        "recipe": dataclasses.asdict(recipe),
        "paper": paper,
        "model_path": str(model_path),
        "quick": quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"tensorflow": _tf_version(), "keras": keras.__version__},
        **extra,
    }
    if "best_test_epoch_accuracy" in results:
        results["accuracy_labels"] = {
            "test_accuracy": "the final model's test accuracy, read once (no choice made on test)",
            "best_test_epoch_accuracy": "the authors' report: the best test accuracy over the "
                                        "fine-tuning epochs (selection on the test split)",
        }
    _write_json(output / "results.json", results)
    if method != "magnitude":
        shutil.rmtree(output / "checkpoints", ignore_errors=True)  # complete: nothing to resume
    log("")
    log(report)
    log(format_results(results))
    return results


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


#: The files of each checkpointed stage, in the order the stages run.
STAGE_FILES = {
    "regularize": ("regularize.backup", "regularized.npz"),
    "select": ("std_ratio.json",),
    "finetune": ("finetune.backup", "finetuned.npz", "finetune_test.json"),
}


def _checkpoints(folder, identity, log):
    """The checkpoint folder of a run, without the stages that belong to another run.

    `identity` (model, method, dataset, recipe, dense weights) is split by
    stage (`recipe_checks.stage_identities`) and written as ``run.json``. A
    stage whose identity differs from the stored one (another recipe for it,
    or for a stage before it) is removed with the stages after it; the
    stages before it are kept, so changing a later-stage argument (std ratio,
    fine-tuning epochs, tolerance) never loses a finished stage.
    """
    folder = pathlib.Path(folder)
    stamp = folder / "run.json"
    base = {k: v for k, v in identity.items() if k != "recipe"}
    stages = json.loads(json.dumps(recipe_checks.stage_identities(identity.get("recipe", {}), base),
                                   sort_keys=True, default=_json_default))
    stored = None
    if stamp.exists():
        try:
            stored = json.loads(stamp.read_text(encoding="utf-8"))
            if not isinstance(stored, dict):
                raise ValueError(f"a JSON {type(stored).__name__}, not an object")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            log(f"[resume] {stamp} is unreadable ({type(error).__name__}: {error}); starting afresh")
            stored = {}
    elif folder.exists() and any(folder.iterdir()):
        stored = {}  # files of an unknown run
    if stored is not None:
        names = list(STAGE_FILES)
        stale = next((i for i, name in enumerate(names) if stored.get(name) != stages[name]), None)
        if stale is not None:
            kept = names[:stale]
            old = (stored.get(names[stale]) or {})
            changed = _changed_fields(old, stages[names[stale]])
            log(f"[resume] {folder} holds checkpoints of a different run"
                + (f" (changed: {', '.join(changed)})" if changed else "")
                + (f"; keeping the finished stage{'s' if len(kept) > 1 else ''} {', '.join(kept)} and "
                   "redoing the rest" if kept else "; starting afresh"))
            if not kept:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                for name in names[stale:]:
                    for file in STAGE_FILES[name]:
                        target = folder / file
                        if target.is_dir():
                            shutil.rmtree(target, ignore_errors=True)
                        else:
                            target.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write_text(stamp, json.dumps(stages, sort_keys=True))
    return folder


def _changed_fields(old, new, prefix=""):
    """Dotted names of the leaves that differ between two identity dicts (recipe fields by name)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix.rstrip(".")] if old != new else []
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            name = key if key not in ("recipe", "regularize", "select", "threshold") else ""
            inner = _changed_fields(old.get(key), new.get(key), prefix + (f"{name}." if name else ""))
            changed.extend(c for c in inner if c not in changed)
    return changed


def _read_chosen_std_ratio(path, log):
    """``(std_ratio, tries)`` an earlier run chose (``std_ratio.json``), or None if absent or unreadable."""
    if path is None or not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        ratio, tries = stored["std_ratio"], stored.get("tries")
        validation.check_float(ratio, "std_ratio", minimum=0.0)
    except Exception as error:  # noqa: BLE001 - truncated, not JSON, no field, not a number
        log(f"[select] {path} is unreadable ({type(error).__name__}: {error}); choosing the std ratio again")
        path.unlink(missing_ok=True)
        return None
    return float(ratio), tries


def _run_deephoyer(method, dense, data, x_train, y_train, recipe, dense_val, log, checkpoints=None):
    """Regularize, choose the threshold, prune, fine-tune; each stage resumable.

    With `checkpoints` (a folder), every epoch of the regularized training
    and of the fine-tuning is backed up there, and each completed stage is
    recorded, so an interrupted run called again continues where it stopped.
    """
    ckpt = (lambda name: checkpoints / name) if checkpoints is not None else (lambda name: None)
    regularizer = make_regularizer(method, recipe.strength)
    bias_regularizer = None
    if recipe.biases and method not in STRUCTURAL:
        bias_regularizer = regularizer  # the authors' code: every parameter tensor
    model = regularize(dense, regularizer, bias_regularizer=bias_regularizer)
    compile_classifier(model, recipe.learning_rate, decay_steps=_decay_steps(
        recipe.regularize_schedule, recipe.regularize_epochs, len(x_train), recipe.batch_size))
    callbacks = []
    if isinstance(regularizer, regularizers.DeepHoyerRegularizer) and recipe.warmup_epochs:
        callbacks.append(StrengthSchedule.linear_warmup(recipe.warmup_epochs))
    log(f"[regularize] {method} strength {recipe.strength:g}: {recipe.regularize_epochs} epochs, "
        f"learning rate {recipe.learning_rate:g} ({recipe.regularize_schedule})"
        + (", biases too" if bias_regularizer is not None else ""))
    fit_resumable(model, x_train, y_train, epochs=recipe.regularize_epochs,
                  backup_dir=ckpt("regularize.backup"), done_path=ckpt("regularized.npz"),
                  log=log, stage="regularize", callbacks=callbacks, batch_size=recipe.batch_size,
                  validation_data=(data.x_val, data.y_val), verbose=2)
    regularized_val = _accuracy(model, data.x_val, data.y_val)
    regularized_kernels = _kernel_arrays(model)
    chosen_path = ckpt("std_ratio.json")
    tries = None
    if recipe.std_ratio is not None:
        ratio = recipe.std_ratio
    elif (chosen := _read_chosen_std_ratio(chosen_path, log)) is not None:
        ratio, tries = chosen
        log(f"[select] chosen in an earlier run: std_ratio {ratio:g}")
    else:
        ratio, tries = select_std_ratio(model, data, recipe, dense_val, log)
        if chosen_path is not None:
            _write_json(chosen_path, {"std_ratio": ratio, "tries": tries})
    report = prune(model, std_ratio=ratio, biases=recipe.biases)
    log(f"[prune] std_ratio {ratio:g}{' (biases too)' if recipe.biases else ''}: "
        f"{report.nonzero_weights} nonzero of {report.total_weights} weights, "
        f"{sum(r.nonzero_biases for r in report.layers)} nonzero biases")

    # Fine-tune: a plain copy of the architecture (no penalty), zeros fixed.
    plain = _finetune_copy(model, recipe, recipe.finetune_epochs, len(x_train))
    callbacks = []
    tracker = None
    if recipe.track_test:
        tracker = _TestTracker(data.x_test, data.y_test, ckpt("finetune_test.json"))
        tracker.after_pruning(plain)
        callbacks.append(tracker)
    log(f"[finetune] {recipe.finetune_epochs} epochs, zeros fixed, learning rate "
        f"{recipe.finetune_learning_rate:g} ({recipe.finetune_schedule})"
        + (f", weight decay {recipe.finetune_weight_decay:g}" if recipe.finetune_weight_decay else ""))
    fit_resumable(plain, x_train, y_train, epochs=recipe.finetune_epochs,
                  backup_dir=ckpt("finetune.backup"), done_path=ckpt("finetuned.npz"),
                  log=log, stage="finetune", batch_size=recipe.batch_size, callbacks=callbacks,
                  validation_data=(data.x_val, data.y_val), verbose=2)
    _release_bias_zeros(plain)
    final = strip_zero_masks(plain)
    if recipe.finetune_weight_decay:
        final = keras.models.clone_model(final, clone_function=_without_regularizers)
        final.set_weights(plain.get_weights())
    extra = {
        "std_ratio": ratio,
        "strength": recipe.strength,
        "regularized_validation_accuracy": regularized_val,
        "pruned_nonzero_weights": report.nonzero_weights,
        "regularized_kernels": regularized_kernels,
    }
    if tries is not None:
        extra["selection"] = tries
    if tracker is not None:
        extra["test_accuracy_by_finetune_epoch"] = tracker.history()
        extra["best_test_epoch_accuracy"] = tracker.authors_best()
    return final, extra


class _TestTracker(keras.callbacks.Callback):
    """Test accuracy after pruning and after each fine-tuning epoch (the authors' report).

    The authors' fine-tuning script evaluates the test split before each
    epoch and prints the best accuracy seen: after pruning and after epochs
    1 to N-1 (the last epoch's result is never evaluated). `authors_best`
    is that number. It is selection on the test split, so it is recorded
    for comparison only; the run's own number is the final model's. The
    history is kept in `path` (JSON) so that a resumed run keeps it.
    """

    def __init__(self, x, y, path=None):
        super().__init__()
        self.x, self.y, self.path = x, y, path
        self._history = {}
        if path is not None and pathlib.Path(path).exists():
            try:
                self._history = {int(k): float(v) for k, v in json.loads(pathlib.Path(path).read_text()).items()}
            except (OSError, ValueError, TypeError, AttributeError):  # damaged: recorded afresh
                self._history = {}

    def after_pruning(self, model):
        if 0 not in self._history:
            self._record(0, _accuracy(model, self.x, self.y))

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1, _accuracy(self.model, self.x, self.y))

    def _record(self, epoch, accuracy):
        self._history[epoch] = accuracy
        if self.path is not None:
            _write_json(self.path, {str(k): v for k, v in sorted(self._history.items())})

    def history(self):
        """``[accuracy after pruning, after epoch 1, ...]``."""
        return [self._history[k] for k in sorted(self._history)]

    def authors_best(self):
        history = self.history()
        return max(history[:-1] if len(history) > 1 else history)


def _write_json(path, value):
    """Writes `value` as JSON to `path` atomically (a temporary file, then a rename)."""
    atomic.atomic_write_text(path, json.dumps(value, indent=2, default=_json_default))


def _without_regularizers(layer):
    """A copy of `layer` without the weight regularizers the layer registry names (bias too)."""
    config = layer.get_config()
    for key in (*registry.weight_regularizer_attributes(layer), "bias_regularizer"):
        if key in config:
            config[key] = None
    return type(layer).from_config(config)


def _run_magnitude(model_name, dense, data, recipe, log, engine="keras", build=None):
    """Magnitude pruning with a polynomial schedule to the target sparsity.

    ``engine="keras"`` (default): `deephoyer_tf.MagnitudePruning` on Keras 3,
    any backend. ``engine="tfmot"``: TFMOT's ``prune_low_magnitude`` on
    tf_keras (TensorFlow only; importing TFMOT switches tf.keras to Keras 2),
    kept as a cross-check. Same schedule, optimizer and epochs in both.
    `build` builds a fresh copy of the architecture (default: the LeNet
    `model_name`; a user's model passes its own and a target sparsity).
    """
    from deephoyer_tf._internal import backend
    from deephoyer_tf.callbacks.magnitude_pruning import MagnitudePruning
    from deephoyer_tf.pruning.schedules import PolynomialDecay

    target = recipe.target_sparsity
    if target is None:
        paper = PAPER[(model_name, "hs")]["nonzero_weights"]
        total = sum(int(np.prod(w.shape)) for w in _kernels_of(dense))
        target = 1.0 - paper / total
    x_train, y_train = _training_arrays(data, recipe)
    steps_per_epoch = int(np.ceil(len(x_train) / recipe.batch_size))
    frequency = max(steps_per_epoch // 4, 1)
    # end_step a multiple of the frequency, so the last update reaches the target
    end_step = max(frequency * ((steps_per_epoch * recipe.regularize_epochs) // frequency), frequency)
    schedule = dict(initial_sparsity=0.0, final_sparsity=float(target), begin_step=0,
                    end_step=end_step, frequency=frequency)
    epochs = recipe.regularize_epochs + recipe.finetune_epochs
    fit_args = dict(batch_size=recipe.batch_size, epochs=epochs,
                    validation_data=(data.x_val, data.y_val), verbose=2)
    if engine == "tfmot":
        backend.require_tensorflow("reproduce's TFMOT magnitude cross-check (tf_keras)")
        import tensorflow_model_optimization as tfmot  # lazy: switches tf.keras to Keras 2
        import tf_keras

        model = build_model(model_name, flavour="tf_keras")
        model.set_weights(dense.get_weights())
        pruned = tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(**schedule))
        compile_classifier(pruned, recipe.learning_rate, tf_keras)
        log(f"[magnitude] TFMOT prune_low_magnitude to sparsity {target:.4f}: {epochs} epochs")
        pruned.fit(x_train, y_train, **fit_args, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        weights = tfmot.sparsity.keras.strip_pruning(pruned).get_weights()
    else:
        build = build or (lambda: build_model(model_name))
        model = build()
        model.set_weights(dense.get_weights())
        compile_classifier(model, recipe.learning_rate)
        log(f"[magnitude] MagnitudePruning to sparsity {target:.4f} "
            f"({keras.backend.backend()}): {epochs} epochs")
        model.fit(x_train, y_train, **fit_args,
                  callbacks=[MagnitudePruning(PolynomialDecay(**schedule))])
        weights = strip_zero_masks(model).get_weights()
    final = build() if build is not None else build_model(model_name)
    final.set_weights(weights)
    return final, {"target_sparsity": float(target), "magnitude_engine": engine}


def _kernel_arrays(model):
    return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}


def save_stages(path, stages):
    """Saves kernels per stage as ``{stage}/{layer}`` arrays in an `.npz` file.

    Stages: ``dense`` (pretrained), ``regularized`` (after training with the
    regularizer, before pruning; absent for magnitude pruning), ``final``
    (after pruning and fine-tuning).
    """
    with atomic.atomic_path(path) as partial, open(partial, "wb") as f:
        np.savez_compressed(f, **{
            f"{stage}/{layer}": kernel
            for stage, kernels in stages.items() for layer, kernel in kernels.items()
        })


def _kernels_of(model):
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


def format_results(results):
    """The run's result lines, with the paper's row beside ours."""
    paper = results.get("paper") or {}
    ratio = results["total_weights"] / max(results["nonzero_weights"], 1)
    mac_ratio = results["dense_macs"] / max(results["macs"], 1)
    lines = [
        f"{results['model']} / {results['method']}:",
        f"  {'':<10}{'test acc':>10}{'nonzero':>10}{'ratio':>9}{'MACs':>10}{'MAC ratio':>11}  structure",
        f"  {'ours':<10}{_percent(results['test_accuracy'])}{results['nonzero_weights']:>10,}"
        f"{ratio:>8.1f}x{results['macs']:>10,}{mac_ratio:>10.1f}x  {results['structure']}",
    ]
    if paper:
        nonzero, macs = paper.get("nonzero_weights"), paper.get("macs")
        total, dense_macs = results["total_weights"], results["dense_macs"]
        cells = [
            f"{paper['test_accuracy']:>10.2%}",
            f"{nonzero:>10,}" if nonzero else f"{'-':>10}",
            f"{total / nonzero:>8.1f}x" if nonzero else f"{'-':>9}",
            f"{macs:>10,}" if macs else f"{'-':>10}",
            f"{dense_macs / macs:>10.1f}x" if macs else f"{'-':>11}",
        ]
        lines.append(f"  {'paper':<10}" + "".join(cells) + f"  {paper.get('structure', '-')}")
    dense_test = results.get("dense_test_accuracy")
    lines.append(
        (f"  dense test accuracy {dense_test:.2%}; " if dense_test is not None else
         f"  no test split (validation accuracy {results['validation_accuracy']:.2%}, dense "
         f"{results['dense_validation_accuracy']:.2%}); ")
        + f"wall time {results['wall_seconds']:.0f} s"
    )
    return "\n".join(lines)


def _percent(value):
    return f"{value:>10.2%}" if value is not None else f"{'-':>10}"
