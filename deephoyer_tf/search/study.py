"""The Optuna study: the sparsest model within a validation-accuracy drop.

`run` searches, for one method, the strength and the pruning threshold
(a global std ratio, or one per layer) that give the fewest nonzero weights
(fewest MACs for the structural methods ``group-hs`` and ``group-lasso``)
whose validation accuracy stays within `max_drop` points of the dense
model's. Everything is Optuna's:

* **Sampler**: `optuna.samplers.TPESampler` (multivariate), constrained:
  each trial sets ``trial.set_constraint("accuracy_drop", dense accuracy -
  max_drop - validation accuracy)``, feasible when <= 0, which TPE (and
  NSGA-II) use to prefer feasible trials; the objective (minimized) is the
  size. Any Optuna sampler can be passed.
* **Pruner**: the validation accuracy after every epoch is reported
  (``trial.report``, as the error ``1 - accuracy`` so that lower is better, as
  the objective); the default `optuna.pruners.ThresholdPruner` stops a trial
  whose error exceeds the dense model's by more than `prune_margin` points
  (training diverged or the strength is far too high: no fine-tuning will
  recover it); for the magnitude methods only once the sparsity ramp is over. Pass any Optuna pruner (e.g. ``MedianPruner``, which compares
  trials at the same epoch).
* **Storage**: an RDB storage (`storage`: a SQLAlchemy URL, ``sqlite:///s.db``
  on one machine, ``postgresql://...`` or ``mysql://...`` for several) with
  heartbeats; ``load_if_exists=True``, so calling `run` again with the same
  storage and study name continues the study, and several processes or
  machines can run it at once.
* **Interrupted trials**: a trial whose process died stays RUNNING until its
  heartbeat is `grace_period` seconds old; Optuna then marks it FAIL and
  `optuna.storages.RetryFailedTrialCallback` enqueues its parameters again. A
  trial that failed in-process (an exception, Ctrl-C) is FAIL at once and
  `run` enqueues its parameters again when it next starts (each trial at most
  `max_retry` times). Each trial backs up every epoch (folder keyed by its
  parameters), so the retried trial continues from the last completed epoch.

The study's trials are the results store: `run` writes ``search.json`` (every
trial with parameters, state, validation accuracy, nonzero weights, MACs; the
Pareto front; the chosen trial) and ``pareto.png`` into `output` after every
trial, from the storage, so the file always lists every process's trials.

The Pareto front is the set of completed trials not dominated in (size,
validation accuracy); the *chosen* trial is the smallest feasible one (ties:
higher validation accuracy). The test set is never an argument: evaluate the
chosen model (`SearchResult.load_model`) on it once, at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
import warnings
from typing import TYPE_CHECKING

import keras
import numpy as np

from deephoyer_tf._internal import atomic
from deephoyer_tf._internal import loading
from deephoyer_tf._internal import validation
from deephoyer_tf.search import objective
from deephoyer_tf.search import storage as storage_lib

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable

#: Default log-uniform strength ranges, per method (wide: a decade or more around the
#: values that worked on the LeNets, BENCHMARKS.md).
STRENGTHS = {
    "hs": (1e-5, 3e-3),
    "hoyer": (1e-4, 3e-2),
    "group-hs": (3e-4, 3e-2),
    "l1": (1e-6, 1e-3),
    "group-lasso": (3e-5, 3e-3),
}
#: Default log-uniform std-ratio range (the threshold is ``ratio * std(W)`` per layer).
STD_RATIOS = (0.01, 2.0)
#: Default uniform target-sparsity range of the magnitude methods.
SPARSITIES = (0.8, 0.995)


def _optuna():
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - optuna is a declared dependency of the extra
        raise ImportError(
            "deephoyer_tf.search needs Optuna: pip install 'deephoyer_tf[search]' (or pip install optuna)"
        ) from e
    return optuna


@dataclasses.dataclass
class SearchResult:
    """What `run` found (also written to ``output/search.json``).

    Attributes:
        study: the `optuna.Study` (its storage holds every trial).
        trials: one dict per trial (see ``search.json``).
        pareto: the trial numbers of the Pareto front, smallest first.
        chosen: the chosen trial's dict, or None if no trial is within `max_drop`.
        dense_validation_accuracy: the reference accuracy.
        output: the output folder.
        size_metric: ``"nonzero_weights"`` or ``"macs"``.
        max_drop, method, study_name: the search's, for `summary`.
    """

    study: Any
    trials: list
    pareto: list
    chosen: dict | None
    dense_validation_accuracy: float
    output: pathlib.Path
    size_metric: str
    max_drop: float | None = None
    method: str | None = None
    study_name: str | None = None

    def summary(self) -> str:
        """The study in a few lines: trials by state, the Pareto front, the chosen trial (or why none).

        `run` prints it at the end (unless ``verbose=0``); ``deephoyer-tf
        search`` prints it too.
        """
        return format_summary(self.trials, self.pareto, self.chosen, self.dense_validation_accuracy,
                              self.size_metric, self.max_drop, self.method, self.study_name)

    def __str__(self):
        return self.summary()

    def load_model(self, number: int | None = None, *, safe_mode: bool = True):
        """The final model of trial `number` (default: the chosen one), loaded from `output`.

        ``safe_mode`` as in `deephoyer_tf.load_model`: a file holding code is refused.
        """
        if number is None:
            if self.chosen is None:
                raise ValueError("No trial met the accuracy constraint: there is no chosen model.")
            number = self.chosen["number"]
        trial = next((t for t in self.trials if t["number"] == number), None)
        if trial is None or not trial.get("model_path"):
            raise ValueError(f"Trial {number} has no saved model (state {trial and trial['state']}).")
        return loading.load_model(trial["model_path"], compile=False, safe_mode=safe_mode)


def run(
    build_model: Callable[..., Any],
    train,
    validation_data,
    *,
    method: str,
    n_trials: int,
    output: str | os.PathLike,
    storage: str | None = None,
    study_name: str | None = None,
    max_drop: float = 0.2,
    dense_model=None,
    pretrain_epochs: int = 30,
    schedule: objective.Schedule | None = None,
    strength_range: tuple[float, float] | None = None,
    std_ratio_range: tuple[float, float] = STD_RATIOS,
    sparsity_range: tuple[float, float] = SPARSITIES,
    per_layer: bool = False,
    size_metric: str | None = None,
    sampler=None,
    pruner=None,
    prune_margin: float = 5.0,
    evaluate: Callable | None = None,
    enqueue: list[dict] | None = None,
    callbacks=(),
    seed: int = 0,
    timeout: float | None = None,
    heartbeat_interval: int = 30,
    grace_period: int | None = None,
    max_retry: int = 2,
    log: Callable[[str], None] = print,
    verbose: int = 1,
) -> SearchResult:
    """Searches strength and threshold for the sparsest model within `max_drop`.

    Args:
        build_model: ``build_model()`` returns a new, uncompiled Keras 3 model
            of the architecture (logits out); for ``method="tfmot-magnitude"``,
            ``build_model(flavour="tf_keras")`` must return the same
            architecture in tf_keras.
        train: training data, ``(x, y)`` arrays or a batched `tf.data.Dataset`.
        validation_data: validation data, same forms. Choices are made on it;
            the test set is not an argument.
        method: ``"hs"``, ``"hoyer"``, ``"group-hs"``, ``"l1"``,
            ``"group-lasso"``, ``"magnitude"`` (`MagnitudePruning`, Keras 3, any
            backend) or ``"tfmot-magnitude"`` (TFMOT on tf_keras, the cross-check;
            imports `tensorflow_model_optimization`, which switches `tf.keras` to
            Keras 2 for the process: run it in its own process).
        n_trials: trials to run now (the study may already hold others).
        output: folder for ``search.json``, ``pareto.png``, ``dense.keras``,
            the trials' models and per-epoch backups.
        storage: an Optuna storage URL (``sqlite:///search.db``); default
            ``sqlite:///OUTPUT/study.db``.
        study_name: default ``"METHOD"``.
        max_drop: allowed validation-accuracy drop below the dense model's,
            in percentage points.
        dense_model: the trained dense Keras 3 model (or a path to one);
            default: `build_model()` trained `pretrain_epochs` epochs (saved to
            ``output/dense.keras`` and reused when `run` is called again).
        schedule: a `Schedule` (epochs, learning rates, batch size).
        strength_range: log-uniform range of the strength (default
            `STRENGTHS`).
        std_ratio_range: log-uniform range of the std ratio(s).
        sparsity_range: magnitude methods: uniform range of the target sparsity.
        per_layer: one std ratio per kernel layer instead of one for all.
        size_metric: ``"nonzero_weights"`` or ``"macs"`` (default: MACs for
            group methods, nonzero weights otherwise).
        sampler: an Optuna sampler (default: TPE with the constraint; seeded
            with `seed` plus the trials already in the study).
        pruner: an Optuna pruner (default: `ThresholdPruner`, see above).
        prune_margin: points of validation accuracy below the dense model's
            at which the default pruner stops a trial.
        evaluate: ``evaluate(model, validation) -> accuracy``; default:
            argmax against integer (or one-hot) labels.
        enqueue: parameter dicts to try first (only in a study without
            trials; e.g. a known good recipe).
        callbacks: extra Keras callbacks for every trial's `fit` calls.
        seed: seed of the sampler and of each trial's training.
        timeout: stop starting trials after this many seconds.
        heartbeat_interval, grace_period: Optuna heartbeats (seconds); a
            RUNNING trial whose heartbeat is older than `grace_period`
            (default ``2 * heartbeat_interval``) is failed and retried.
        max_retry: times a failed trial's parameters are tried again.
        log: where progress lines go (one per trial).
        verbose: 0: nothing goes to `log`; 1 (default): the package's lines
            (one per trial, the summary at the end); 2: Optuna's own INFO
            lines too. Below 2, Optuna's logging is set to warnings for the
            search and restored after it.

    Returns:
        A `SearchResult`.
    """
    optuna = _optuna()
    verbose = validation.check_int(verbose, "verbose", minimum=0)
    if verbose == 0:
        log = _silent
    validation.check_callable(build_model, "build_model")
    validation.check_choice(method, "method", objective.METHODS)
    n_trials = validation.check_int(n_trials, "n_trials", minimum=1)
    max_drop = validation.check_float(max_drop, "max_drop", minimum=0.0)
    prune_margin = validation.check_float(prune_margin, "prune_margin", minimum=0.0)
    per_layer = validation.check_bool(per_layer, "per_layer")
    size_metric = size_metric or ("macs" if method in objective.STRUCTURAL else "nonzero_weights")
    validation.check_choice(size_metric, "size_metric", ("nonzero_weights", "macs"))
    strength_range = _check_range(strength_range or STRENGTHS.get(method, (1e-5, 1e-2)), "strength_range")
    std_ratio_range = _check_range(std_ratio_range, "std_ratio_range")
    sparsity_range = _check_range(sparsity_range, "sparsity_range", log=False)
    schedule = schedule or objective.Schedule()
    train_data = objective.Data.of(train, "train")
    val_data = objective.Data.of(validation_data, "validation_data")
    evaluate = evaluate or objective.accuracy
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    study_name = study_name or method
    storage_url = storage or f"sqlite:///{(output / 'study.db').resolve()}"

    # The package's one line per trial instead of Optuna's ("A new study created", "Best is
    # trial 0", which need not be the chosen one); Optuna's verbosity is restored after.
    with _optuna_logging(optuna, verbose):
        # The storage first: a bad URL or a damaged file is reported before any training.
        rdb = storage_lib.open_storage(storage_url, heartbeat_interval, grace_period or 2 * heartbeat_interval,
                                       max_retry)
        try:
            # The sampler is created before the study exists; its seed includes the trials already
            # stored, so a continued study does not draw the same random parameters again.
            existing = _existing_trials(optuna, rdb, study_name)
        except sqlalchemy_errors() as error:
            raise storage_lib.storage_error(storage_url, error) from None

        dense = _dense(build_model, dense_model, train_data, val_data, schedule, pretrain_epochs, output, seed, log)
        dense_val = float(evaluate(dense, val_data))
        layers = objective.kernel_layer_names(dense)

        # TPE reads each trial's constraint (`trial.set_constraint`, set in the objective).
        sampler = sampler or optuna.samplers.TPESampler(seed=seed + existing, multivariate=True,
                                                        n_startup_trials=5)
        # TFMOT's sparsity ramps up during the first `regularize_epochs`: judge it at the final sparsity only.
        pruner = pruner or optuna.pruners.ThresholdPruner(
            upper=1.0 - dense_val + prune_margin / 100.0,
            n_warmup_steps=schedule.regularize_epochs if method in objective.MAGNITUDE_METHODS else 0)
        study = optuna.create_study(
            storage=rdb, study_name=study_name, direction="minimize", sampler=sampler, pruner=pruner,
            load_if_exists=True)
        stored = study.user_attrs.get("dense_validation_accuracy")
        if stored is None:
            for key, value in {"dense_validation_accuracy": dense_val, "method": method,
                               "size_metric": size_metric, "max_drop_points": max_drop,
                               "per_layer": per_layer}.items():
                study.set_user_attr(key, value)
        else:
            if abs(stored - dense_val) > 1e-9:
                log(f"[search] this dense model's validation accuracy {dense_val:.4f} differs from the "
                    f"study's {stored:.4f}; the constraint uses the study's (pass the same dense_model "
                    "to every process)")
            dense_val = stored
            if study.user_attrs.get("method") != method:
                raise ValueError(
                    f"Invalid value for argument `method`. Study {study_name!r} in {storage_url} searches "
                    f"{study.user_attrs.get('method')!r}. Received: method={method!r}"
                )
        stored_trials = len(study.trials)
        if not study.trials and enqueue:
            for params in enqueue:
                study.enqueue_trial(params)
        _retry_failed(optuna, study, max_retry, log, rdb)

        def objective_fn(trial):
            storage_lib.claim(trial)  # a rerun on this host retries the trial at once if this process dies
            params = _suggest(trial, method, layers, per_layer, strength_range, std_ratio_range, sparsity_range)
            keras.utils.set_random_seed(seed + 1)
            backup = output / "backups" / _params_key(study_name, params)

            def report(step, accuracy):
                trial.report(1.0 - accuracy, step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at_epoch", step)
                    trial.set_user_attr("pruned_validation_accuracy", accuracy)
                    raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} at epoch {step}")

            try:
                model, info = objective.train_trial(
                    dense, train_data, val_data, method, _trial_params(params, layers), schedule,
                    evaluate=evaluate, report=report, backup_dir=backup, callbacks=callbacks,
                    build_tf_keras=(lambda: build_model(flavour="tf_keras")) if method == "tfmot-magnitude" else None,
                    log=lambda line: log(f"[trial {trial.number}] {line}"))
            except ValueError as e:  # e.g. training diverged (NaN kernels): not retried
                trial.set_user_attr("error", str(e)[:500])
                _remove_tree(backup)
                _remove_empty_dir(backup.parent)
                raise
            except optuna.TrialPruned:  # stopped for good: its backups are of no use
                _remove_tree(backup)
                _remove_empty_dir(backup.parent)
                raise
            path = output / "models" / f"trial-{trial.number}.keras"
            with atomic.atomic_path(path) as partial:
                model.save(partial)
            for key, value in info.items():
                trial.set_user_attr(key, value)
            # Feasible when <= 0: the accuracy drop within max_drop points.
            trial.set_constraint("accuracy_drop", dense_val - max_drop / 100.0 - info["validation_accuracy"])
            trial.set_user_attr("model_path", str(path))
            _remove_tree(backup)
            _remove_empty_dir(backup.parent)
            return float(info[size_metric])

        def after_trial(study_, frozen):
            log(_progress_line(frozen, dense_val, max_drop, size_metric))
            write_outputs(study_, output, size_metric, max_drop)

        log(f"[search] {method} on {study_name!r} ({storage_url}): dense validation accuracy "
            f"{dense_val:.4f}, max drop {max_drop:g} points, size = {size_metric}, "
            f"{stored_trials} trials stored, running {n_trials} more")
        study.optimize(objective_fn, n_trials=n_trials, timeout=timeout, callbacks=[after_trial],
                       catch=(ValueError,))
        summary = write_outputs(study, output, size_metric, max_drop)
        _remove_empty_dir(output / "backups")
        result = SearchResult(study, summary["trials"], summary["pareto"], summary["chosen"], dense_val, output,
                              size_metric, max_drop=max_drop, method=method, study_name=study_name)
        log(result.summary())
        return result


@contextlib.contextmanager
def _optuna_logging(optuna, verbose):
    """Optuna's logging at warnings (``verbose`` < 2) for the block; its previous verbosity after."""
    previous = optuna.logging.get_verbosity()
    if verbose < 2:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _silent(*args, **kwargs):
    """`log` for ``verbose=0``."""


def _remove_empty_dir(path):
    """Removes the folder `path` if it exists and holds nothing."""
    try:
        pathlib.Path(path).rmdir()
    except OSError:  # absent, or not empty (a trial's backups kept for its retry)
        pass


def format_summary(trials, pareto, chosen, dense_val, size_metric, max_drop, method=None, study_name=None):
    """`SearchResult.summary`'s text, from the records `write_outputs` makes."""
    metric = "MACs" if size_metric == "macs" else "nonzero weights"
    states = {}
    for t in trials:
        states[t["state"].lower()] = states.get(t["state"].lower(), 0) + 1
    head = f"Search {method or '?'}" + (f" ({study_name!r})" if study_name else "")
    lines = [f"{head}: {len(trials)} trials ({', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'none'}); "
             f"dense validation accuracy {_pct(dense_val)}"
             + (f", max drop {max_drop:g} points" if max_drop is not None else "")]
    by_number = {t["number"]: t for t in trials}
    if pareto:
        lines.append(f"Pareto front ({metric} / validation accuracy):")
        lines.append(f"  {'trial':>6} {metric:>16} {'val acc':>8} {'drop':>6}  {'within':<6}  parameters")
        for number in pareto:
            t = by_number[number]
            params = ", ".join(f"{k}={v:.3g}" for k, v in t["params"].items())
            lines.append(f"  {'#' + str(number):>6} {t['size']:>16,.0f} {_pct(t['validation_accuracy']):>8} "
                         f"{t['drop_points']:>6.2f}  {'yes' if t['feasible'] else 'no':<6}  {params}")
    else:
        lines.append("Pareto front: empty (no completed trial)")
    if chosen is None:
        lines.append("Chosen: none; no completed trial is within "
                     + (f"{max_drop:g} points" if max_drop is not None else "the allowed drop")
                     + f" of the dense validation accuracy ({_pct(dense_val)}): run more trials or "
                       "allow a larger max drop")
    else:
        params = ", ".join(f"{k}={v:.3g}" for k, v in chosen["params"].items())
        lines.append(f"Chosen: trial {chosen['number']} ({params}): {chosen['size']:,.0f} {metric}, validation "
                     f"{_pct(chosen['validation_accuracy'])} (drop {chosen['drop_points']:.2f} points), "
                     f"model {chosen['model_path']}")
    return "\n".join(lines)


def _pct(value):
    return "-" if value is None else f"{value:.2%}"


def recipe_trial(method, strength, dense_model, *, per_layer=False, strength_range=None, target_sparsity=0.9):
    """The parameters of a study's first trial: the recipe's own (None if its strength is out of range).

    Magnitude methods start at `target_sparsity`; the others at the recipe's
    `strength` and std ratio 0.1 (per kernel layer of `dense_model` with
    `per_layer`), unless `strength` lies outside `strength_range` (default:
    `STRENGTHS[method]`), where the trial could not be suggested.
    """
    if method in objective.MAGNITUDE_METHODS:
        return {"target_sparsity": target_sparsity}
    first = {"strength": strength}
    if per_layer:
        first.update({f"std_ratio:{name}": 0.1 for name in objective.kernel_layer_names(dense_model)})
    else:
        first["std_ratio"] = 0.1
    low, high = strength_range or STRENGTHS[method]
    return first if low <= strength <= high else None


def _check_range(value, name, log=True):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid type for argument `{name}`. Expected a pair (low, high) of floats. "
                        f"Received: {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high or (log and low <= 0):
        raise ValueError(f"Invalid value for argument `{name}`. Expected finite low <= high"
                         f"{' and low > 0 (log scale)' if log else ''}. Received: {value!r}")
    return low, high


def sqlalchemy_errors():
    """The exception classes a damaged or unreachable database raises (SQLAlchemy's base class)."""
    import sqlalchemy

    return (sqlalchemy.exc.SQLAlchemyError,)


def _existing_trials(optuna, storage, study_name):
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _dense(build_model, dense_model, train, val, schedule, epochs, output, seed, log):
    """The trained dense model: given, loaded from output/dense.keras, or trained (and saved there)."""
    if dense_model is not None:
        if isinstance(dense_model, (str, os.PathLike)):
            return loading.load_model(dense_model, safe_mode=True)
        return dense_model
    from deephoyer_tf.paper import reproduce

    path = output / "dense.keras"
    cached = reproduce._load_cached_model(path, log, stage="search")  # None if absent or unreadable
    if cached is not None:
        return cached
    epochs = validation.check_int(epochs, "pretrain_epochs", minimum=1)
    keras.utils.set_random_seed(seed)
    model = build_model()
    steps = train.steps_per_epoch(schedule.batch_size)
    objective.reproduce.compile_classifier(model, schedule.learning_rate, decay_steps=epochs * steps if steps else None)
    log(f"[search] dense model: training {epochs} epochs")
    reproduce.fit_resumable(model, **train.fit_arguments(schedule.batch_size), epochs=epochs,
                            backup_dir=output / "dense.backup", log=log, stage="pretrain", verbose=0)
    with atomic.atomic_path(path) as partial:
        model.save(partial)
    return model


def _suggest(trial, method, layers, per_layer, strength_range, std_ratio_range, sparsity_range):
    if method in objective.MAGNITUDE_METHODS:
        return {"target_sparsity": trial.suggest_float("target_sparsity", *sparsity_range)}
    params = {"strength": trial.suggest_float("strength", *strength_range, log=True)}
    if per_layer:
        for name in layers:
            params[f"std_ratio:{name}"] = trial.suggest_float(f"std_ratio:{name}", *std_ratio_range, log=True)
    else:
        params["std_ratio"] = trial.suggest_float("std_ratio", *std_ratio_range, log=True)
    return params


def _trial_params(params, layers):
    """Optuna's flat parameters as `train_trial` takes them (per-layer ratios as a dict)."""
    if any(key.startswith("std_ratio:") for key in params):
        out = {k: v for k, v in params.items() if not k.startswith("std_ratio:")}
        out["std_ratio"] = {name: params[f"std_ratio:{name}"] for name in layers}
        return out
    return dict(params)


def _params_key(study_name, params):
    text = json.dumps([study_name, sorted(params.items())])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _remove_tree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _retry_failed(optuna, study, max_retry, log, storage=None):
    """Enqueues again the parameters of FAIL trials not yet retried (at most `max_retry` deep).

    First marks FAIL the RUNNING trials of dead processes: those of this host
    whose process is gone (`storage.fail_orphaned_trials`), then those whose
    heartbeat is older than the grace period.
    """
    if storage is not None:
        storage_lib.fail_orphaned_trials(study, storage, log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # dead processes' RUNNING trials: FAIL, then retried
    trials = study.get_trials(deepcopy=False)
    source = {}
    for t in trials:
        origin = t.user_attrs.get("retry_of")
        if origin is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                origin = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        if origin is not None:
            source[t.number] = origin
    retried = set(source.values())

    def depth(number):
        d = 0
        while number in source:
            number, d = source[number], d + 1
        return d

    for t in trials:
        if (t.state == optuna.trial.TrialState.FAIL and t.number not in retried and t.params
                and "error" not in t.user_attrs):
            if depth(t.number) >= max_retry:
                continue
            log(f"[search] trial {t.number} failed or was interrupted; trying its parameters again")
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _progress_line(frozen, dense_val, max_drop, size_metric):
    params = ", ".join(f"{k}={v:.3g}" for k, v in frozen.params.items())
    head = f"[trial {frozen.number}] {frozen.state.name:<8} {params}"
    attrs = frozen.user_attrs
    if "validation_accuracy" in attrs:
        accuracy = attrs["validation_accuracy"]
        drop = 100 * (dense_val - accuracy)
        feasible = drop <= max_drop + 1e-9
        return (f"{head}: val {accuracy:.2%} (drop {drop:.2f} points, {'within' if feasible else 'over'} "
                f"{max_drop:g}), nonzero {attrs['nonzero_weights']:,}, MACs {attrs['macs']:,}, "
                f"{attrs.get('train_seconds', 0):.0f} s")
    if "pruned_at_epoch" in attrs:
        return f"{head}: stopped at epoch {attrs['pruned_at_epoch']} (val {attrs['pruned_validation_accuracy']:.2%})"
    return head


def trial_records(study, size_metric, max_drop):
    """Every trial of `study` as a JSON-ready dict, with feasibility."""
    dense_val = study.user_attrs.get("dense_validation_accuracy")
    records = []
    for t in study.get_trials(deepcopy=False):
        attrs = dict(t.user_attrs)
        accuracy = attrs.get("validation_accuracy")
        record = {
            "number": t.number,
            "state": t.state.name,
            "params": dict(t.params),
            "validation_accuracy": accuracy,
            "nonzero_weights": attrs.get("nonzero_weights"),
            "macs": attrs.get("macs"),
            "total_weights": attrs.get("total_weights"),
            "dense_macs": attrs.get("dense_macs"),
            "structure": attrs.get("structure"),
            "per_layer": attrs.get("per_layer"),
            "size": t.value if t.state.name == "COMPLETE" else None,
            "drop_points": None if accuracy is None else round(100 * (dense_val - accuracy), 6),
            "feasible": None if accuracy is None else bool(100 * (dense_val - accuracy) <= max_drop + 1e-9),
            "model_path": attrs.get("model_path"),
            "retry_of": attrs.get("retry_of"),
            "pruned_at_epoch": attrs.get("pruned_at_epoch"),
            "error": attrs.get("error"),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
            "train_seconds": attrs.get("train_seconds"),
        }
        records.append(record)
    return records


def pareto_front(records):
    """Numbers of the completed trials not dominated in (smaller size, higher accuracy), smallest first."""
    done = [r for r in records if r["state"] == "COMPLETE" and r["size"] is not None]
    front = []
    for r in done:
        dominated = any(
            o["size"] <= r["size"] and o["validation_accuracy"] >= r["validation_accuracy"]
            and (o["size"] < r["size"] or o["validation_accuracy"] > r["validation_accuracy"])
            for o in done)
        if not dominated:
            front.append(r)
    front.sort(key=lambda r: (r["size"], -r["validation_accuracy"]))
    return [r["number"] for r in front]


def choose(records):
    """The smallest feasible completed trial (ties: higher validation accuracy), or None."""
    feasible = [r for r in records if r["state"] == "COMPLETE" and r["feasible"]]
    if not feasible:
        return None
    return min(feasible, key=lambda r: (r["size"], -r["validation_accuracy"], r["number"]))


def write_outputs(study, output, size_metric, max_drop):
    """Writes ``search.json`` and ``pareto.png`` from the storage; returns the summary dict."""
    records = trial_records(study, size_metric, max_drop)
    front = pareto_front(records)
    chosen = choose(records)
    summary = {
        "study_name": study.study_name,
        "method": study.user_attrs.get("method"),
        "size_metric": size_metric,
        "max_drop_points": max_drop,
        "dense_validation_accuracy": study.user_attrs.get("dense_validation_accuracy"),
        "per_layer": study.user_attrs.get("per_layer"),
        "n_trials": len(records),
        "states": {s: sum(r["state"] == s for r in records) for s in sorted({r["state"] for r in records})},
        "trials": records,
        "pareto": front,
        "chosen": chosen,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    output = pathlib.Path(output)
    atomic.atomic_write_text(output / "search.json", json.dumps(summary, indent=2, default=_json_default))
    try:
        plot_pareto(summary, output / "pareto.png")
    except ImportError:  # matplotlib is optional
        pass
    return summary


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dense_size(summary):
    """The dense model's size in the summary's metric (total weights or dense MACs), or None."""
    field = "dense_macs" if summary["size_metric"] == "macs" else "total_weights"
    return next((r[field] for r in summary["trials"] if r.get(field)), None)


def draw_pareto(ax, summary, title=None):
    """Draws the search on `ax`: trials, front, dense and max-drop lines, dense size, chosen trial.

    The axes' limits hold every completed trial, the dense accuracy and the
    max-drop line (so both horizontal lines are on the axes), and the dense
    size (a vertical line, at the right).
    """
    records = {r["number"]: r for r in summary["trials"]}
    done = [r for r in records.values() if r["state"] == "COMPLETE" and r["size"] is not None]
    metric = "MACs" if summary["size_metric"] == "macs" else "nonzero weights"
    if done:
        ax.scatter([r["size"] for r in done], [100 * r["validation_accuracy"] for r in done],
                   s=18, color="0.6", label="trials", zorder=2)
        front = [records[n] for n in summary["pareto"]]
        ax.plot([r["size"] for r in front], [100 * r["validation_accuracy"] for r in front],
                "o-", color="C0", label="Pareto front", zorder=3)
    dense = summary["dense_validation_accuracy"]
    max_drop = summary["max_drop_points"]
    if dense is not None:
        ax.axhline(100 * dense, color="k", lw=0.8, ls=":", label=f"dense {100 * dense:.2f}%")
        ax.axhline(100 * dense - max_drop, color="C3", lw=0.8, ls="--",
                   label=f"max drop {max_drop:g} points")
    full = dense_size(summary)
    if full:
        ax.axvline(full, color="k", lw=0.8, ls="-.", label=f"dense size {full:,.0f}")
    if summary["chosen"]:
        c = summary["chosen"]
        ax.plot([c["size"]], [100 * c["validation_accuracy"]], "*", ms=14, color="C1",
                label=f"chosen (trial {c['number']})", zorder=4)
        ax.annotate(f"trial {c['number']}: {c['size']:,.0f}\n{100 * c['validation_accuracy']:.2f}%",
                    (c["size"], 100 * c["validation_accuracy"]), textcoords="offset points",
                    xytext=(8, -22), fontsize=8, color="C1")
    sizes = [r["size"] for r in done] + ([full] if full else [])
    if sizes and min(sizes) > 0:
        ax.set_xscale("log")
        ax.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
    accuracies = [100 * r["validation_accuracy"] for r in done]
    if dense is not None:
        accuracies += [100 * dense, 100 * dense - max_drop]
    if accuracies:
        top = max(accuracies)
        # Collapsed trials are left below the axes, never the two lines.
        low = max(min(accuracies), top - max(5.0, 2 * max_drop))
        if dense is not None:
            low = min(low, 100 * dense - max_drop)
        margin = max(0.1 * (top - low), 0.1)
        ax.set_ylim(low - margin, top + margin)
    ax.set_xlabel(metric + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or f"{summary['method']}: {summary['study_name']}")
    ax.legend(fontsize=8, loc="best")


def plot_pareto(summary, path, title=None):
    """Validation accuracy against size for every completed trial (`draw_pareto`), written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    draw_pareto(ax, summary, title)
    fig.tight_layout()
    with atomic.atomic_path(path) as partial:
        fig.savefig(partial, dpi=110, format=pathlib.Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
