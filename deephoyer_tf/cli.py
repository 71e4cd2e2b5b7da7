"""The ``deephoyer-tf`` command line.

    deephoyer-tf reproduce {lenet-300-100,lenet-5} --method {hs,hoyer,group-hs,l1,group-lasso,magnitude}
                 [--dataset {mnist,fashion-mnist}] [--data-dir DIR] [--output DIR] [--quick]
                 [--std-ratio R] [--strength S] ...
    deephoyer-tf reproduce --model-file dense.keras --method M (--data FILE.npz | --dataset D) ...
    deephoyer-tf search {lenet-300-100,lenet-5} --method M --trials N [--storage URL] [--study-name NAME]
                 [--output DIR] [--max-drop POINTS] [--per-layer] [--quick] [--data-dir DIR] ...
    deephoyer-tf search --model-file dense.keras --method M --trials N (--data FILE.npz | --dataset D) ...
    deephoyer-tf report MODEL.keras [--json] [--unsafe]
    deephoyer-tf evaluate MODEL.keras [--dataset {mnist,fashion-mnist}] [--data-dir DIR] [--split test] [--unsafe]
    deephoyer-tf export MODEL.keras OUT.tflite [--shrink] [--sparse {auto,on,off}] [--quantize {dynamic,int8}]
                 [--representative-data X.npy] [--labels Y.npy] [--atol A] [--rtol R] [--min-agreement F] [--unsafe]
    deephoyer-tf plot {histograms,descent,pareto} ...

Quiet by default: TensorFlow's start-up logs are silenced before TensorFlow
is imported (`deephoyer_tf._internal.quiet`), unless ``--verbose`` is given
or ``TF_CPP_MIN_LOG_LEVEL`` is set to 0 or 1. Commands that write files end
by listing them, one line each.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys

from deephoyer_tf._internal import quiet
from deephoyer_tf._internal.written import print_written  # noqa: F401 - cli.print_written


class _Default(str):
    """A default value argparse fills in, told apart from the same value given on the line."""


def _given(value):
    return value is not None and not isinstance(value, _Default)


def _fail(command, error):
    print(f"deephoyer-tf {command}: error: {error}", file=sys.stderr)
    return 2


def _user_inputs(args):
    """Checks the model arguments (a LeNet or --model-file, --data or --dataset); True for --model-file."""
    if args.model is None and args.model_file is None:
        raise ValueError("Expected a model: lenet-300-100, lenet-5, or --model-file FILE.keras. Received none")
    if args.model is not None and args.model_file is not None:
        raise ValueError(f"Expected either a LeNet or --model-file, not both. Received: model={args.model!r}, "
                         f"model_file={args.model_file!r}")
    if args.data is not None and args.model_file is None:
        raise ValueError("--data FILE.npz goes with --model-file (the LeNets read --dataset). "
                         f"Received: data={args.data!r}")
    if args.data is not None and _given(args.dataset):
        raise ValueError(f"Expected either --data or --dataset, not both. Received: data={args.data!r}, "
                         f"dataset={args.dataset!r}")
    return args.model_file is not None


def _load_user_model(args, inputs):
    """The user's model and data, shaped and checked; ``(model, data, scale_offset, label)``."""
    from deephoyer_tf.paper import user_data

    if not os.path.exists(args.model_file):
        raise FileNotFoundError(f"no such file: {args.model_file}")
    if args.data is not None:
        data, scale_offset, label = user_data.load_arrays(args.data), None, os.path.basename(args.data)
    else:
        label = str(args.dataset)
        data, scale_offset = user_data.dataset_arrays(label, args.data_dir, inputs)
    model = _load_any(args.model_file, args.unsafe)
    data = user_data.fit_to_model(data, user_data.model_input_shape(model), args.data or label)
    user_data.check_classifier(model, data.n_classes)
    return model, data, scale_offset, label


def _reproduce(args):
    from deephoyer_tf.paper import reproduce

    overrides = {
        "strength": args.strength,
        "std_ratio": args.std_ratio,
        "pretrain_epochs": args.pretrain_epochs,
        "regularize_epochs": args.regularize_epochs,
        "finetune_epochs": args.finetune_epochs,
        "warmup_epochs": args.warmup_epochs,
        "learning_rate": args.learning_rate,
        "finetune_learning_rate": args.finetune_learning_rate,
        "batch_size": args.batch_size,
        "tolerance": args.tolerance,
        "target_sparsity": args.target_sparsity,
        "seed": args.seed,
    }
    try:  # every value checked before any data is read or any epoch trained
        user = _user_inputs(args)
        if args.match is not None:
            from deephoyer_tf.paper import recipe_checks

            if args.target_sparsity is not None:
                raise ValueError("Invalid value for argument `match`. Expected either --match or "
                                 "--target-sparsity, not both. "
                                 f"Received: match={args.match!r}, target_sparsity={args.target_sparsity!r}")
            overrides["target_sparsity"] = recipe_checks.target_sparsity_from_results(args.match)
        overrides.update({
            "inputs": args.inputs,
            "regularize_schedule": args.regularize_schedule,
            "biases": args.biases,
        })
        if user:
            if args.recipe != "default":
                raise ValueError("Invalid value for argument `recipe`: the authors' recipe is for the "
                                 f"LeNets only. Received: recipe={args.recipe!r} with --model-file")
            recipe = reproduce.user_recipe(args.method, args.quick, **overrides)
        else:
            recipe = reproduce.recipe_for(args.model, args.method, args.quick, name=args.recipe, **overrides)
        if args.print_recipe:
            print(json.dumps(dataclasses.asdict(recipe), indent=2))
            return 0
        if user:
            model, data, scale_offset, label = _load_user_model(args, recipe.inputs)
    except (TypeError, ValueError, FileNotFoundError) as error:
        return _fail("reproduce", error)
    name = pathlib.Path(args.model_file).stem if user else args.model
    output = pathlib.Path(args.output or os.path.join("runs", f"{name}-{args.method}"))
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    if user:
        results = reproduce.run_model(model, args.method, data, output=output, recipe=recipe, quick=args.quick,
                                      name=name, dataset=label, scale_offset=scale_offset, log=log)
    else:
        results = reproduce.run(
            args.model, args.method, data_dir=args.data_dir, output=output,
            quick=args.quick, cache_dir=args.cache_dir, recipe=recipe, dataset=str(args.dataset),
            log=log,
        )
    if args.plots:
        from deephoyer_tf.paper import plots

        plots.reproduction_histograms(output, results)
    takes = ("raw pixels (0 to 255; its first layer scales them)" if not user or scale_offset
             else "inputs as in the .npz")
    print_written([
        (output / "model.keras", f"the final sparse model; takes {takes}; read by evaluate, report, export"),
        (output / "results.json", "accuracies, nonzero weights, MACs, structure, per-layer counts, the recipe"),
        (output / "stages.npz", "every layer's kernel at each stage (dense, regularized, final), for plot "
                                "histograms"),
        *([(output / "histograms.png", "nonzero weights per layer and stage")] if args.plots else []),
    ])
    return 0


def _search(args):
    from deephoyer_tf import search

    try:  # every value checked before any data is read or any epoch trained
        user = _user_inputs(args)
        common = dict(n_trials=args.trials, storage=args.storage, max_drop=args.max_drop, quick=args.quick,
                      regularize_epochs=args.regularize_epochs, finetune_epochs=args.finetune_epochs,
                      warmup_epochs=args.warmup_epochs, seed=args.seed)
        if user:
            recipe, _ = search.model_file.check_arguments(args.method, **common)
            model, data, _, _ = _load_user_model(args, recipe.inputs)
        else:
            search.mnist.check_arguments(args.model, args.method, dataset=str(args.dataset), **common)
    except (TypeError, ValueError, FileNotFoundError) as error:
        return _fail("search", error)
    name = pathlib.Path(args.model_file).stem if user else args.model
    output = pathlib.Path(args.output or os.path.join("runs", f"search-{name}-{args.method}"))
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    verbose = 2 if args.verbose else 1
    if user:
        result = search.search_model(
            model, data, args.method, output=output, name=name, study_name=args.study_name,
            per_layer=args.per_layer, log=log, verbose=verbose, **common)
    else:
        result = search.lenet(
            args.model, args.method, output=output, study_name=args.study_name, data_dir=args.data_dir,
            dataset=str(args.dataset), cache_dir=args.cache_dir, per_layer=args.per_layer, log=log,
            verbose=verbose, **common)
    models = sorted((output / "models").glob("trial-*.keras")) if (output / "models").is_dir() else []
    chosen = f"; the chosen: {pathlib.Path(result.chosen['model_path']).name}" if result.chosen else ""
    print_written([
        (output / "search.json", "every trial (parameters, state, accuracy, size), the Pareto front, the chosen "
                                 "trial"),
        (output / "pareto.png", "validation accuracy against size: trials, front, dense and max-drop lines"),
        *([(output / "study.db", "the Optuna study: run the same command again to continue it")]
          if args.storage is None else []),
        (output / "dense.keras", "the dense model the trials start from"),
        *([(output / "models", f"{len(models)} trial model{'s' if len(models) != 1 else ''} "
                               f"(models/trial-N.keras){chosen}")] if models else []),
    ])
    return 0


_UNSAFE_HELP = ("load the model even if the file holds code (a Lambda layer, a serialized function, "
                "a module outside Keras): that code then runs with your rights; only for files you trust")


def _load_any(path, unsafe=False):
    """Loads a `.keras`/`.h5` model (Keras 3, else tf_keras), refusing code unless `unsafe`."""
    from deephoyer_tf._internal import loading

    try:
        return loading.load_model(path, compile=False, safe_mode=not unsafe)
    except loading.UnsafeModelError as error:
        raise SystemExit(f"deephoyer-tf: {error}") from None


def _report(args):
    from deephoyer_tf.structure import report

    if not os.path.exists(args.model):
        print(f"deephoyer-tf report: no such file: {args.model}", file=sys.stderr)
        return 2
    result = report.sparsity_report(_load_any(args.model, args.unsafe))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0


def _export(args):
    from deephoyer_tf.export import tflite as export

    def fail(message, code):
        print(f"deephoyer-tf export: {message}", file=sys.stderr)
        return code

    if not os.path.exists(args.model):
        return fail(f"no such file: {args.model}", 2)
    for option, value in (("--representative-data", args.representative_data),
                          ("--labels", args.labels)):
        if value is not None and not os.path.exists(value):
            return fail(f"{option}: no such file: {value}", 2)
    if args.quantize == "int8" and args.representative_data is None:
        return fail("--quantize int8 needs --representative-data FILE.npy "
                    "(a few hundred typical inputs)", 2)
    model = _load_any(args.model, args.unsafe)
    if args.shrink:
        from deephoyer_tf.structure import report
        from deephoyer_tf.structure import surgery

        before_params = model.count_params()
        model = surgery.shrink(model)
        before_macs = model.shrink_summary.report.dense_macs
        after_macs = report.sparsity_report(model).dense_macs
        after_params = model.count_params()
        print(f"shrink: parameters {before_params:,} -> {after_params:,} "
              f"({before_params / max(after_params, 1):.2f}x fewer), MACs per example "
              f"{before_macs:,} -> {after_macs:,} ({before_macs / max(after_macs, 1):.2f}x fewer)")
    import numpy as np

    representative = labels = None
    if args.representative_data:
        representative = np.load(args.representative_data, allow_pickle=False)
    if args.labels:
        labels = np.load(args.labels, allow_pickle=False)
    sparse = {"auto": "auto", "on": True, "off": False}[args.sparse]
    if args.dense:
        sparse = False
    try:
        result = export.export_tflite(
            model, args.output, sparse=sparse, quantize=args.quantize,
            representative_data=representative, labels=labels, atol=args.atol,
            rtol=args.rtol, min_agreement=args.min_agreement, verbose=int(not args.quiet),
        )
    except RuntimeError as error:  # the check rejected the file: nothing was written
        return fail(error, 1)
    except (TypeError, ValueError) as error:
        return fail(error, 2)
    sparse_count = sum(1 for s in result.storage if s.sparse)
    print(f"check: {result.check_summary()} (with {result.runtime}, op resolver "
          f"{result.op_resolver})")
    print(f"storage: {sparse_count} of {len(result.storage)} weight tensors sparse")
    for line in result.storage:
        print(f"  {line}")
    print("wrote:")
    print(f"  {result.path}: {result.size_bytes:,} bytes ({result.gzip_bytes:,} gzipped), "
          f"the .tflite file ({args.quantize or 'float32'})")
    return 0


def _evaluate(args):
    from deephoyer_tf.paper import evaluate

    if not os.path.exists(args.model):
        print(f"deephoyer-tf evaluate: no such file: {args.model}", file=sys.stderr)
        return 2
    try:
        result = evaluate.evaluate(_load_any(args.model, args.unsafe), dataset=args.dataset,
                                   data_dir=args.data_dir, split=args.split)
    except ValueError as error:
        print(f"deephoyer-tf evaluate: {error}", file=sys.stderr)
        return 2
    print(f"{args.model}: {args.split} accuracy {result['accuracy']:.2%} on {result['examples']:,} "
          f"{args.dataset} images; {result['nonzero_weights']:,} of {result['total_weights']:,} "
          f"weights nonzero (+ {result['nonzero_biases']:,} of {result['total_biases']:,} biases); "
          f"{result['macs']:,} MACs; structure {result['structure']}")
    print(json.dumps(result))
    return 0


def _plot(args):
    from deephoyer_tf.paper import plots

    return plots.main(args)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="deephoyer-tf",
        description="DeepHoyer sparsity training, reports and export for Keras. Quiet by default; "
        "each command that writes files lists them at the end.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's logs and Optuna's own lines (default: quiet)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="run the paper's MNIST pipeline end to end (the LeNets, or "
                       "your model with --model-file)",
                       description="Dense model, regularized training, pruning threshold chosen on the "
                       "validation split, fine-tuning with the zeros held, test accuracy of the final "
                       "model. Writes model.keras, results.json, stages.npz (and histograms.png).")
    p.add_argument("model", nargs="?", choices=["lenet-300-100", "lenet-5"],
                   help="the paper's network (or give --model-file)")
    _add_user_model(p, "the trained dense model to sparsify (its weights are the starting point; "
                       "no pretraining unless --pretrain-epochs)")
    p.add_argument("--method", required=True,
                   choices=["hs", "hoyer", "group-hs", "l1", "group-lasso", "magnitude"],
                   help="hs: Hoyer-Square, hoyer, group-hs: Group-HS, l1, group-lasso, magnitude: "
                   "gradual magnitude pruning to --target-sparsity")
    _add_dataset(p)
    p.add_argument("--output", help="output folder (default: runs/MODEL-METHOD)")
    p.add_argument("--cache-dir", help="where pretrained dense models are cached "
                   "(default: $DEEPHOYER_CACHE_DIR or ~/.cache/deephoyer_tf)")
    p.add_argument("--quick", action="store_true", help="tiny budget: a smoke run in minutes "
                   "(6,000 training images, 1-2 epochs per stage)")
    p.add_argument("--plots", action="store_true", help="also write histograms.png (nonzero weights per "
                   "layer and stage) to the output folder")
    p.add_argument("--print-recipe", action="store_true", help="print the recipe (every hyperparameter, "
                   "with the options given applied) as JSON and exit, training nothing")
    p.add_argument("--recipe", choices=["default", "authors"], default="default",
                   help="default: this package's protocol; authors: the authors' public code "
                   "(pixels / 255, Adam 1e-3 constant, batch 100, 250 + 250 + 50 epochs, biases "
                   "regularized and pruned, Table 7's strength and std ratio), which also records the "
                   "best test accuracy over the fine-tuning, as the authors report it")
    recipe = " (default: the recipe's, per model and method; --print-recipe shows it)"
    p.add_argument("--inputs", choices=["standardize", "unit"],
                   help="input scaling: (pixel - mean) / std, or pixel / 255" + recipe)
    p.add_argument("--regularize-schedule", choices=["constant", "cosine"],
                   help="learning rate of the regularized training" + recipe)
    p.add_argument("--biases", action=argparse.BooleanOptionalAction, default=None,
                   help="also regularize (element-wise methods) and prune the biases" + recipe)
    p.add_argument("--strength", type=float, help="regularization strength: the weight of the penalty "
                   "in the loss" + recipe)
    p.add_argument("--std-ratio", type=float, help="fixed pruning threshold, in std of each kernel "
                   "(default: chosen on the validation split)")
    p.add_argument("--tolerance", type=float, help="validation accuracy drop allowed when choosing the "
                   "threshold, a fraction (0.002: 0.2 points)" + recipe)
    p.add_argument("--pretrain-epochs", type=int, help="epochs of dense training (with --model-file: more "
                   "epochs on the given model; default 0 there)" + recipe)
    p.add_argument("--regularize-epochs", type=int, help="epochs of training with the penalty" + recipe)
    p.add_argument("--finetune-epochs", type=int, help="epochs of fine-tuning after pruning, zeros held"
                   + recipe)
    p.add_argument("--warmup-epochs", type=int, help="epochs over which the DeepHoyer strength rises "
                   "linearly from 0" + recipe)
    p.add_argument("--learning-rate", type=float, help="Adam's learning rate (dense and regularized "
                   "training)" + recipe)
    p.add_argument("--finetune-learning-rate", type=float, help="Adam's learning rate when fine-tuning"
                   + recipe)
    p.add_argument("--batch-size", type=int, help="training batch size" + recipe)
    p.add_argument("--seed", type=int, help="seed of initialization and shuffling" + recipe)
    p.add_argument("--target-sparsity", type=float, help="magnitude: the final sparsity, a fraction "
                   "(default: Hoyer-Square's in the paper; required with --model-file)")
    p.add_argument("--match", help="magnitude: aim at the sparsity of this results.json "
                   "(default: none)")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("search", help="search strength and threshold (Optuna) for the sparsest "
                       "model within a validation-accuracy drop",
                       description="An Optuna study over the strength and the pruning threshold (or the "
                       "target sparsity): the smallest model whose validation accuracy stays within "
                       "--max-drop points of the dense model's. Writes search.json, pareto.png, the "
                       "trials' models and (by default) study.db.")
    p.add_argument("model", nargs="?", choices=["lenet-300-100", "lenet-5"],
                   help="the paper's network (or give --model-file)")
    _add_user_model(p, "the trained dense model the trials start from")
    p.add_argument("--method", required=True,
                   choices=["hs", "hoyer", "group-hs", "l1", "group-lasso", "magnitude", "tfmot-magnitude"],
                   help="what each trial trains (tfmot-magnitude: the LeNets only)")
    p.add_argument("--trials", type=int, required=True, help="trials to run now; the study may hold more")
    p.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///search.db (a database "
                   "server URL lets several machines share the study) (default: OUTPUT/study.db)")
    p.add_argument("--study-name", help="the same name continues the study (default: MODEL-METHOD)")
    p.add_argument("--output", help="folder for search.json, pareto.png and the trials' models "
                   "(default: runs/search-MODEL-METHOD)")
    p.add_argument("--max-drop", type=float, default=0.2,
                   help="allowed validation-accuracy drop below the dense model, in points")
    p.add_argument("--per-layer", action="store_true", help="one std ratio per layer instead of one for all")
    p.add_argument("--quick", action="store_true", help="tiny budget (6,000 images, a few epochs)")
    _add_dataset(p)
    p.add_argument("--cache-dir", help="where pretrained dense models are cached, shared with reproduce "
                   "(default: $DEEPHOYER_CACHE_DIR or ~/.cache/deephoyer_tf)")
    p.add_argument("--regularize-epochs", type=int, help="epochs with the penalty per trial (default: the "
                   "recipe's; reproduce --print-recipe shows it)")
    p.add_argument("--finetune-epochs", type=int, help="epochs of fine-tuning per trial (default: the "
                   "recipe's)")
    p.add_argument("--warmup-epochs", type=int, help="epochs of strength warm-up per trial (default: the "
                   "recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of each trial's training")
    p.set_defaults(func=_search)

    p = sub.add_parser("report", help="print the sparsity table of a saved model")
    p.add_argument("model", help="a .keras or .h5 file")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)
    p.set_defaults(func=_report)

    p = sub.add_parser("export", help="export a saved model to TFLite, checked against the model")
    p.add_argument("model", help="a .keras or .h5 file")
    p.add_argument("output", help="the .tflite file to write (only once the check passed)")
    p.add_argument("--shrink", action="store_true",
                   help="remove dead units first, and print parameters and MACs before and after")
    p.add_argument("--sparse", choices=["auto", "on", "off"], default="auto",
                   help="weight storage: auto stores a tensor sparse only where that makes the "
                   "file smaller without slowing it (int8: only 1x16 blocks); on: every tensor "
                   "with at least 30%% zeros; off: dense (default: auto)")
    p.add_argument("--dense", action="store_true", help="same as --sparse off")
    p.add_argument("--quantize", choices=["dynamic", "int8"],
                   help="dynamic-range or full-integer quantization (int8 needs "
                   "--representative-data) (default: none, float32)")
    p.add_argument("--representative-data", metavar="FILE.npy",
                   help="int8: typical inputs, for calibration and the check")
    p.add_argument("--labels", metavar="FILE.npy",
                   help="labels of the checked samples (int8: of --representative-data), "
                   "to report the file's accuracy")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance of the check (default: 1e-4 float, 1e-3 quantized; "
                   "int8 classifiers: checked only when --atol or --rtol is given)")
    p.add_argument("--rtol", type=float, default=None,
                   help="tolerance relative to the largest output (default: 1e-4 float, "
                   "0.05 dynamic, 0.1 int8)")
    p.add_argument("--min-agreement", type=float, default=None, metavar="FRACTION",
                   help="int8: least fraction of samples whose predicted class must match "
                   "the Keras model's (default: 0.99)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)
    p.set_defaults(func=_export)

    p = sub.add_parser("evaluate", help="accuracy, nonzero weights and MACs of a saved model "
                       "(JSON on the last line)")
    p.add_argument("model", help="a .keras file that takes raw pixels (0 to 255) and starts with its "
                   "own Rescaling or Normalization layer, as reproduce saves them")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist",
                   help="default: mnist")
    p.add_argument("--data-dir", help="folder of the dataset's *-ubyte.gz files (default: "
                   "$DEEPHOYER_DATA_DIR or $DEEPHOYER_FASHION_DATA_DIR, else download)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test",
                   help="val: the last 5,000 training images (default: test)")
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("plot", help="the paper's figures from runs")
    p.set_defaults(func=_plot)
    plot = p.add_subparsers(dest="plot_command", required=True)
    q = plot.add_parser("histograms", help="nonzero weights per layer and stage (Figures 3, 4)")
    q.add_argument("source", help="a reproduce output folder or its stages.npz")
    q.add_argument("--out", help="PNG to write (default: histograms.png beside the source)")
    q = plot.add_parser("descent", help="gradient descent on Hoyer-Square (Figure 2)")
    q.add_argument("--out", default="descent-path.png", help="PNG to write")
    q.add_argument("--dim", type=int, default=20, help="length of the random vector")
    q.add_argument("--seed", type=int, default=0, help="seed of the random vector")
    q.add_argument("--steps", type=int, default=2000, help="gradient descent steps")
    q.add_argument("--learning-rate", type=float, default=2e-3, help="step size")
    q = plot.add_parser("pareto", help="test accuracy against size, from results.json files")
    q.add_argument("results", nargs="+", help="results.json files or run folders")
    q.add_argument("--metric", choices=["nonzero_weights", "macs"], default="nonzero_weights",
                   help="the size on the horizontal axis")
    q.add_argument("--out", default="pareto.png", help="PNG to write")
    return _finish_parser(parser)


def _add_user_model(p, what):
    p.add_argument("--model-file", metavar="FILE.keras",
                   help=f"your Keras model instead of a LeNet: {what}; one input, logits out (no final "
                   "softmax); loaded with code refused unless --unsafe (default: none)")
    p.add_argument("--data", metavar="FILE.npz",
                   help="with --model-file: arrays x_train, y_train, x_val, y_val (optionally x_test, "
                   "y_test), inputs as the model takes them, integer labels (default: --dataset)")
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)


def _add_dataset(p):
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default=_Default("mnist"),
                   help="the paper's MNIST or Fashion-MNIST (same format, harder); with --model-file, "
                   "scaled as --inputs says and reshaped to the model's input (default: mnist)")
    p.add_argument("--data-dir", help="folder of the dataset's *-ubyte.gz files (default: "
                   "$DEEPHOYER_DATA_DIR or $DEEPHOYER_FASHION_DATA_DIR, else download)")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.required:
            return text if "required" in text else f"{text} (required)"
        if action.nargs == 0 and action.default in (False, None):
            return f"{text} (default: off)"
        if action.default is None:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def _finish_parser(parser):
    """The help formatter and ``--verbose`` on `parser` and every subcommand below it."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--verbose" in a.option_strings for a in child._actions):
                    child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="show TensorFlow's logs and Optuna's own lines (default: "
                                       "quiet)")
                _finish_parser(child)
    return parser


def main(argv=None):
    arguments = sys.argv[1:] if argv is None else list(argv)
    verbose = quiet.wants_verbose(arguments)
    if not verbose:
        os.environ.setdefault(quiet.ENV_VAR, quiet.QUIET_LEVEL)  # when called from Python, before TF loads
    args = build_parser().parse_args(argv)
    quiet.settle(verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
