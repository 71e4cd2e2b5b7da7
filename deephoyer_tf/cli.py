"""The ``deephoyer-tf`` command line.

    deephoyer-tf reproduce {lenet-300-100,lenet-5} --method {hs,hoyer,group-hs,l1,group-lasso,magnitude}
                 [--dataset {mnist,fashion-mnist}] [--data-dir DIR] [--output DIR] [--quick]
                 [--std-ratio R] [--strength S] ...
    deephoyer-tf search {lenet-300-100,lenet-5} --method M --trials N [--storage URL] [--study-name NAME]
                 [--output DIR] [--max-drop POINTS] [--per-layer] [--quick] [--data-dir DIR] ...
    deephoyer-tf report MODEL.keras [--json] [--unsafe]
    deephoyer-tf evaluate MODEL.keras [--dataset {mnist,fashion-mnist}] [--data-dir DIR] [--split test] [--unsafe]
    deephoyer-tf export MODEL.keras OUT.tflite [--shrink] [--sparse {auto,on,off}] [--quantize {dynamic,int8}]
                 [--representative-data X.npy] [--labels Y.npy] [--atol A] [--rtol R] [--min-agreement F] [--unsafe]
    deephoyer-tf plot {histograms,descent,pareto} ...
"""

import argparse
import json
import os
import sys


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
        recipe = reproduce.recipe_for(args.model, args.method, args.quick, name=args.recipe, **overrides)
    except (TypeError, ValueError) as error:
        print(f"deephoyer-tf reproduce: error: {error}", file=sys.stderr)
        return 2
    output = args.output or os.path.join("runs", f"{args.model}-{args.method}")
    results = reproduce.run(
        args.model, args.method, data_dir=args.data_dir, output=output,
        quick=args.quick, cache_dir=args.cache_dir, recipe=recipe, dataset=args.dataset,
        log=lambda *a: print(*a, flush=True),
    )
    if args.plots:
        from deephoyer_tf.paper import plots

        plots.reproduction_histograms(output, results)
    print(f"results written to {os.path.join(output, 'results.json')}")
    return 0


def _search(args):
    import optuna

    from deephoyer_tf import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one progress line per trial instead
    output = args.output or os.path.join("runs", f"search-{args.model}-{args.method}")
    try:  # every value checked before any data is read or any epoch trained
        search.mnist.check_arguments(
            args.model, args.method, n_trials=args.trials, storage=args.storage, max_drop=args.max_drop,
            quick=args.quick, dataset=args.dataset, regularize_epochs=args.regularize_epochs,
            finetune_epochs=args.finetune_epochs, warmup_epochs=args.warmup_epochs, seed=args.seed)
    except (TypeError, ValueError) as error:
        print(f"deephoyer-tf search: error: {error}", file=sys.stderr)
        return 2
    result = search.lenet(
        args.model, args.method, n_trials=args.trials, output=output, storage=args.storage,
        study_name=args.study_name, max_drop=args.max_drop, quick=args.quick, data_dir=args.data_dir,
        dataset=args.dataset, cache_dir=args.cache_dir, per_layer=args.per_layer,
        regularize_epochs=args.regularize_epochs, finetune_epochs=args.finetune_epochs,
        warmup_epochs=args.warmup_epochs, seed=args.seed, log=lambda *a: print(*a, flush=True),
    )
    metric = "MACs" if result.size_metric == "macs" else "nonzero weights"
    print(f"Pareto front ({metric} / validation accuracy): " + ", ".join(
        f"#{n} {t['size']:,.0f} / {t['validation_accuracy']:.2%}"
        for n in result.pareto for t in result.trials if t["number"] == n))
    if result.chosen is None:
        print(f"no trial within {args.max_drop:g} points of the dense validation accuracy "
              f"({result.dense_validation_accuracy:.2%}); run more trials or allow a larger --max-drop")
    else:
        c = result.chosen
        print(f"chosen: trial {c['number']} {c['params']}: {c['size']:,.0f} {metric}, validation "
              f"{c['validation_accuracy']:.2%} (dense {result.dense_validation_accuracy:.2%}), "
              f"model {c['model_path']}")
    print(f"search written to {os.path.join(output, 'search.json')}")
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
        description="DeepHoyer sparsity training, reports and export for Keras.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="run the paper's MNIST pipeline end to end")
    p.add_argument("model", choices=["lenet-300-100", "lenet-5"])
    p.add_argument("--method", required=True,
                   choices=["hs", "hoyer", "group-hs", "l1", "group-lasso", "magnitude"])
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist",
                   help="the paper's MNIST (default) or Fashion-MNIST (same format, harder)")
    p.add_argument("--data-dir", help="folder of the dataset's *-ubyte.gz files (default: "
                   "$DEEPHOYER_DATA_DIR or $DEEPHOYER_FASHION_DATA_DIR, else download)")
    p.add_argument("--output", help="output folder (default runs/MODEL-METHOD)")
    p.add_argument("--cache-dir", help="where pretrained dense models are cached "
                   "(default $DEEPHOYER_CACHE_DIR or ~/.cache/deephoyer_tf)")
    p.add_argument("--quick", action="store_true", help="tiny budget: a smoke run in minutes")
    p.add_argument("--plots", action="store_true", help="write weight histograms to the output folder")
    p.add_argument("--recipe", choices=["default", "authors"], default="default",
                   help="default: this package's protocol; authors: the authors' public code "
                   "(pixels / 255, Adam 1e-3 constant, batch 100, 250 + 250 + 50 epochs, biases "
                   "regularized and pruned, Table 7's strength and std ratio), which also records the "
                   "best test accuracy over the fine-tuning, as the authors report it (default: default)")
    p.add_argument("--inputs", choices=["standardize", "unit"],
                   help="input scaling: (pixel - mean) / std, or pixel / 255 (default: the recipe's)")
    p.add_argument("--regularize-schedule", choices=["constant", "cosine"],
                   help="learning rate of the regularized training (default: the recipe's)")
    p.add_argument("--biases", action=argparse.BooleanOptionalAction, default=None,
                   help="also regularize (element-wise methods) and prune the biases "
                   "(default: the recipe's)")
    p.add_argument("--strength", type=float, help="regularization strength")
    p.add_argument("--std-ratio", type=float, help="fixed pruning threshold, in std of each kernel "
                   "(default: chosen on the validation split)")
    p.add_argument("--tolerance", type=float, help="validation accuracy drop allowed when choosing the threshold")
    p.add_argument("--pretrain-epochs", type=int)
    p.add_argument("--regularize-epochs", type=int)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--finetune-learning-rate", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--target-sparsity", type=float, help="magnitude: the final sparsity")
    p.add_argument("--match", help="magnitude: aim at the sparsity of this results.json")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("search", help="search strength and threshold (Optuna) for the sparsest "
                       "model within a validation-accuracy drop")
    p.add_argument("model", choices=["lenet-300-100", "lenet-5"])
    p.add_argument("--method", required=True,
                   choices=["hs", "hoyer", "group-hs", "l1", "group-lasso", "magnitude", "tfmot-magnitude"])
    p.add_argument("--trials", type=int, required=True, help="trials to run now (the study may hold more)")
    p.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///search.db (a database "
                   "server URL lets several machines share the study; default OUTPUT/study.db)")
    p.add_argument("--study-name", help="default MODEL-METHOD; the same name continues the study")
    p.add_argument("--output", help="folder for search.json, pareto.png and the trials' models "
                   "(default runs/search-MODEL-METHOD)")
    p.add_argument("--max-drop", type=float, default=0.2,
                   help="allowed validation-accuracy drop below the dense model, in points (default 0.2)")
    p.add_argument("--per-layer", action="store_true", help="one std ratio per layer")
    p.add_argument("--quick", action="store_true", help="tiny budget (6,000 images, a few epochs)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    p.add_argument("--data-dir", help="folder of the dataset's *-ubyte.gz files")
    p.add_argument("--cache-dir", help="where pretrained dense models are cached (shared with reproduce)")
    p.add_argument("--regularize-epochs", type=int)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
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
    q.add_argument("--dim", type=int, default=20)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--steps", type=int, default=2000)
    q.add_argument("--learning-rate", type=float, default=2e-3)
    q = plot.add_parser("pareto", help="test accuracy against size, from results.json files")
    q.add_argument("results", nargs="+", help="results.json files or run folders")
    q.add_argument("--metric", choices=["nonzero_weights", "macs"], default="nonzero_weights")
    q.add_argument("--out", default="pareto.png", help="PNG to write")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
