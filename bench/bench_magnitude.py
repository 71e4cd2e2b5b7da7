"""Magnitude pruning on Keras 3 (deephoyer_tf.MagnitudePruning) against TFMOT (tf_keras).

Stages (each writes OUT/<stage>.json with command, date, wall time, machine):

* ``quality``: per seed, one dense model trained on Keras 3 (the MNIST
  training part; validation split held out), then pruned with
  ``PolynomialDecay(0, target)`` and fine-tuned by both methods from the same
  dense weights, same optimizer, batch size, schedule and epochs:
  ``MagnitudePruning`` (Keras 3; KERAS_BACKEND of this process) and TFMOT's
  ``prune_low_magnitude`` + ``UpdatePruningStep`` (tf_keras, in a separate
  process: importing TFMOT switches tf.keras to Keras 2). Validation and test
  accuracy at the end (test read once per run; nothing is chosen by it).
* ``latency``: LeNet-300-100 pruned to 90% in 1x4 blocks (float) and 1x16
  blocks (int8), exported with `export_tflite`, timed single-threaded with
  `tflite_latency` against the dense float and dense int8 files, interleaved
  in one run.
* ``patterns``: DeepHoyer on the pattern (Group-HS on 1x4 blocks; Hoyer-Square
  before 2:4) then pruning to the pattern and fine-tuning, against magnitude
  pruning to the same pattern from the same dense model, same total epochs;
  validation accuracy.

Usage (the machine is shared: run with nice)::

    nice -n 10 python bench/bench_magnitude.py quality --model lenet_300_100 --seeds 0 1 2
    nice -n 10 python bench/bench_magnitude.py latency
    nice -n 10 python bench/bench_magnitude.py patterns --seeds 0 1 2
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # this checkout's package, not an installed one
import common  # noqa: E402


def _data():
    import deephoyer_tf

    return deephoyer_tf.datasets.load_mnist(os.environ.get("DEEPHOYER_DATA_DIR"))


def _steps(n, batch):
    return int(np.ceil(n / batch))


def _schedule_args(args, n):
    steps = _steps(n, args.batch_size)
    frequency = max(steps // 4, 1)
    end = frequency * ((steps * args.prune_epochs) // frequency)
    return dict(initial_sparsity=0.0, final_sparsity=args.target, begin_step=0,
                end_step=end, frequency=frequency)


def _compile(model, module, lr):
    model.compile(optimizer=module.optimizers.Adam(lr),
                  loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def _kernel_sparsity(arrays):
    kernels = [a for a in arrays if a.ndim >= 2]
    zeros = sum(int(np.sum(a == 0)) for a in kernels)
    return zeros / sum(a.size for a in kernels), [float(np.mean(a == 0)) for a in kernels]


def dense_weights(args, seed, out):
    """Trains (or reuses) the dense model of `seed`; returns the .npz path."""
    path = out / f"dense_{args.model}_seed{seed}.npz"
    if path.exists():
        return path
    import keras

    import deephoyer_tf

    data = _data()
    keras.utils.set_random_seed(seed)
    model = getattr(deephoyer_tf.models, args.model)()
    _compile(model, keras, args.lr)
    model.fit(data.x_train, data.y_train, batch_size=args.batch_size, epochs=args.dense_epochs,
              verbose=2)
    np.savez(path, *model.get_weights())
    return path


def run_ours(args, seed, dense_path):
    import keras

    import deephoyer_tf

    data = _data()
    keras.utils.set_random_seed(seed + 1000)
    model = getattr(deephoyer_tf.models, args.model)()
    with np.load(dense_path) as f:
        model.set_weights([f[k] for k in f.files])
    _compile(model, keras, args.lr)
    schedule = deephoyer_tf.PolynomialDecay(**_schedule_args(args, len(data.x_train)))
    started = time.time()
    model.fit(data.x_train, data.y_train, batch_size=args.batch_size,
              epochs=args.prune_epochs + args.finetune_epochs, verbose=2,
              callbacks=[deephoyer_tf.MagnitudePruning(schedule)])
    wall = time.time() - started
    deephoyer_tf.strip_zero_masks(model)
    return model, wall, keras.backend.backend()


def run_tfmot(args, seed, dense_path):
    import tensorflow_model_optimization as tfmot  # switches tf.keras to Keras 2
    import tf_keras

    import deephoyer_tf

    data = _data()
    tf_keras.utils.set_random_seed(seed + 1000)
    model = getattr(deephoyer_tf.models, args.model)(flavour="tf_keras")
    with np.load(dense_path) as f:
        model.set_weights([f[k] for k in f.files])
    schedule = tfmot.sparsity.keras.PolynomialDecay(**_schedule_args(args, len(data.x_train)))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _compile(pruned, tf_keras, args.lr)
    started = time.time()
    pruned.fit(data.x_train, data.y_train, batch_size=args.batch_size,
               epochs=args.prune_epochs + args.finetune_epochs, verbose=2,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    wall = time.time() - started
    return tfmot.sparsity.keras.strip_pruning(pruned), wall, "tensorflow (tf_keras)"


def one_run(args):
    """One (method, seed) run in this process; prints its JSON result."""
    dense_path = pathlib.Path(args.dense)
    runner = run_tfmot if args.method == "tfmot" else run_ours
    model, wall, where = runner(args, args.seed, dense_path)
    data = _data()
    sparsity, per_kernel = _kernel_sparsity(model.get_weights())
    result = dict(method=args.method, seed=args.seed, backend=where, fit_seconds=round(wall, 1),
                  val_accuracy=common.accuracy(model, data.x_val, data.y_val),
                  test_accuracy=common.accuracy(model, data.x_test, data.y_test),
                  sparsity=sparsity, kernel_sparsity=per_kernel)
    print("RESULT " + json.dumps(result), flush=True)


def quality(args):
    started = time.time()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        dense = dense_weights(args, seed, out)
        for method in args.methods:
            env = dict(os.environ)
            if method == "ours":
                env["KERAS_BACKEND"] = args.backend
            cmd = [sys.executable, __file__, "one", "--method", method, "--seed", str(seed),
                   "--dense", str(dense), "--model", args.model, "--target", str(args.target),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                   "--prune-epochs", str(args.prune_epochs),
                   "--finetune-epochs", str(args.finetune_epochs)]
            text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            line = [t for t in text.splitlines() if t.startswith("RESULT ")][-1]
            runs.append(json.loads(line[len("RESULT "):]))
            print(runs[-1], flush=True)
    summary = {}
    for method in args.methods:
        acc = np.array([r["test_accuracy"] for r in runs if r["method"] == method])
        val = np.array([r["val_accuracy"] for r in runs if r["method"] == method])
        summary[method] = dict(test_mean=float(acc.mean()), test_std=float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                               val_mean=float(val.mean()))
    result = dict(model=args.model, target=args.target, dense_epochs=args.dense_epochs,
                  prune_epochs=args.prune_epochs, finetune_epochs=args.finetune_epochs,
                  batch_size=args.batch_size, lr=args.lr, schedule=_schedule_args(args, 55000),
                  runs=runs, summary=summary)
    common.save(out, f"quality_{args.model}", result, started)


def latency(args):
    import keras

    import deephoyer_tf

    started = time.time()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _data()
    dense = dense_weights(argparse.Namespace(**{**vars(args), "model": "lenet_300_100"}), 0, out)
    calib = data.x_train[:256]
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, block, quantize in [("dense_float", None, None), ("block1x4_float", (1, 4), None),
                                      ("dense_int8", None, "int8"), ("block1x16_int8", (1, 16), "int8")]:
            keras.utils.set_random_seed(0)
            model = deephoyer_tf.models.lenet_300_100()
            with np.load(dense) as f:
                model.set_weights([f[k] for k in f.files])
            if block is not None:
                _compile(model, keras, args.lr)
                schedule = deephoyer_tf.PolynomialDecay(
                    **{**_schedule_args(args, len(data.x_train)), "final_sparsity": 0.9})
                model.fit(data.x_train, data.y_train, batch_size=args.batch_size,
                          epochs=args.prune_epochs + args.finetune_epochs, verbose=2,
                          callbacks=[deephoyer_tf.MagnitudePruning(schedule, block_size=block)])
                deephoyer_tf.strip_zero_masks(model)
            export = deephoyer_tf.export_tflite(
                model, tmp / f"{name}.tflite", sparse=block is not None, quantize=quantize,
                representative_data=calib if quantize else None, sample_inputs=data.x_val[:16])
            files[name] = dict(export=export, val_accuracy=common.accuracy(model, data.x_val, data.y_val),
                               pattern=str(deephoyer_tf.pattern_summary(model)))
        # The int8 sparse file runs only without XNNPACK (see export_tflite): the dense
        # int8 file is timed both ways, so the ratio can be read kernel for kernel.
        timed = [(name, info["export"].path, info["export"].op_resolver) for name, info in files.items()]
        timed.append(("dense_int8_without_xnnpack", files["dense_int8"]["export"].path,
                      "BUILTIN_WITHOUT_DEFAULT_DELEGATES"))
        timed.append(("dense_float_without_xnnpack", files["dense_float"]["export"].path,
                      "BUILTIN_WITHOUT_DEFAULT_DELEGATES"))
        timed.append(("block1x4_float_without_xnnpack", files["block1x4_float"]["export"].path,
                      "BUILTIN_WITHOUT_DEFAULT_DELEGATES"))
        times = {name: [] for name, _, _ in timed}
        for _ in range(args.rounds):  # interleaved, so load changes hit every file alike
            for name, path, resolver in timed:
                r = deephoyer_tf.tflite_latency(path, runs=args.runs, warmup=50, num_threads=1,
                                                op_resolver=resolver)
                times[name].append(r.median_s)
    rows = {}
    for name, info in files.items():
        e = info["export"]
        rows[name] = dict(median_us=float(np.median(times[name]) * 1e6), size_bytes=e.size_bytes,
                          sparse_tensors=e.sparse_tensors, stored_dense=list(e.stored_dense),
                          op_resolver=e.op_resolver, val_accuracy=info["val_accuracy"],
                          pattern=info["pattern"])
    median = {name: float(np.median(t) * 1e6) for name, t in times.items()}
    ratios = {
        "float 1x4 / dense float (XNNPACK both)": median["block1x4_float"] / median["dense_float"],
        "float 1x4 / dense float (builtin kernels both)":
            median["block1x4_float_without_xnnpack"] / median["dense_float_without_xnnpack"],
        "int8 1x16 (builtin) / dense int8 (XNNPACK)": median["block1x16_int8"] / median["dense_int8"],
        "int8 1x16 / dense int8 (builtin kernels both)":
            median["block1x16_int8"] / median["dense_int8_without_xnnpack"],
    }
    common.save(out, "latency", dict(files=rows, median_us=median, ratios=ratios, rounds=args.rounds,
                                     runs=args.runs, prune_epochs=args.prune_epochs,
                                     finetune_epochs=args.finetune_epochs), started)


def patterns(args):
    import keras

    import deephoyer_tf

    started = time.time()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _data()
    n_steps = _steps(len(data.x_train), args.batch_size)
    runs = []
    plans = [
        ("1x4 blocks", dict(block_size=(1, 4)), args.target,
         lambda: deephoyer_tf.GroupHoyerSquare(args.strength, groups="blocks", block_size=(1, 4))),
        ("2:4", dict(m_by_n=(2, 4)), 0.5, lambda: deephoyer_tf.HoyerSquare(args.strength)),
    ]
    for seed in args.seeds:
        dense = dense_weights(argparse.Namespace(**{**vars(args), "model": "lenet_300_100"}), seed, out)
        for label, pattern, target, make_reg in plans:
            for method in ("magnitude", "deephoyer"):
                keras.utils.set_random_seed(seed + 2000)
                reg = make_reg() if method == "deephoyer" else None
                model = deephoyer_tf.models.lenet_300_100(kernel_regularizer=reg)
                with np.load(dense) as f:
                    model.set_weights([f[k] for k in f.files])
                _compile(model, keras, args.lr)
                epochs = args.prune_epochs + args.finetune_epochs
                if method == "magnitude":
                    # Gradual magnitude pruning over prune_epochs, then fine-tuning.
                    schedule = deephoyer_tf.PolynomialDecay(
                        **{**_schedule_args(args, len(data.x_train)), "final_sparsity": target})
                else:
                    # Regularized training for prune_epochs, then one-shot pruning to the
                    # pattern and fine-tuning with the penalty off.
                    schedule = deephoyer_tf.ConstantSparsity(target, begin_step=n_steps * args.prune_epochs)
                callbacks = [deephoyer_tf.MagnitudePruning(schedule, **pattern)]
                if method == "deephoyer":
                    callbacks.insert(0, deephoyer_tf.StrengthSchedule(
                        lambda epoch: 1.0 if epoch < args.prune_epochs else 0.0))
                model.fit(data.x_train, data.y_train, batch_size=args.batch_size, epochs=epochs,
                          verbose=2, callbacks=callbacks)
                deephoyer_tf.strip_zero_masks(model)
                sparsity, _ = _kernel_sparsity(model.get_weights())
                runs.append(dict(pattern=label, method=method, seed=seed, sparsity=sparsity,
                                 val_accuracy=common.accuracy(model, data.x_val, data.y_val),
                                 holds=str(deephoyer_tf.pattern_summary(model))))
                print(runs[-1], flush=True)
    summary = {}
    for label, *_ in plans:
        for method in ("magnitude", "deephoyer"):
            val = [r["val_accuracy"] for r in runs if r["pattern"] == label and r["method"] == method]
            summary[f"{label} / {method}"] = dict(val_mean=float(np.mean(val)), val=val)
    common.save(out, "patterns", dict(strength=args.strength, target_blocks=args.target,
                                      prune_epochs=args.prune_epochs, finetune_epochs=args.finetune_epochs,
                                      runs=runs, summary=summary), started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["quality", "latency", "patterns", "one"])
    parser.add_argument("--model", default="lenet_300_100", choices=["lenet_300_100", "lenet_5"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["ours", "tfmot"])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--strength", type=float, default=2e-4)
    parser.add_argument("--dense-epochs", type=int, default=3)
    parser.add_argument("--prune-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "magnitude"))
    parser.add_argument("--method")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dense")
    args = parser.parse_args()
    {"quality": quality, "latency": latency, "patterns": patterns, "one": one_run}[args.stage](args)


if __name__ == "__main__":
    main()
