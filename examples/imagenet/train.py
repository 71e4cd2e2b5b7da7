"""DeepHoyer on ImageNet: AlexNet (Hoyer-Square) and ResNet-50 (Group-HS).

The paper's ImageNet recipe (Yang, Wen, Li, ICLR 2020; settings of its
appendix B) on `tf.distribute`, from one device to many machines, with no
change to the code but flags:

1. train with the DeepHoyer penalty (plus L2 weight decay), SGD momentum 0.9;
2. prune: ``|w| < t`` set to zero, ``t`` an absolute threshold (1e-4) for
   convolutions and ``0.5 * std(W)`` for AlexNet's fully connected layers
   (1e-4 for ResNet-50's classifier);
3. fine-tune with the penalty off and the zeros held at zero;
4. print the sparsity report; save the model, cut its dead units (`shrink`)
   and export it to a sparse ``.tflite`` file.

Stages 1-3 run in one `fit` (`ThresholdPruning` at epoch ``--epochs``) with
`keras.callbacks.BackupAndRestore`, so a preempted job started again with the
same command resumes at the epoch it was in. Keras 3 `fit` does not support
`MultiWorkerMirroredStrategy`; there, the recipe trains with
`deephoyer_tf.fit_custom` and its own per-epoch checkpoint (``--keras keras``,
the default), or with tf_keras `fit` and `BackupAndRestore`
(``--keras tf_keras``).

Examples::

    # one machine (one GPU, or CPU)
    python examples/imagenet/train.py --model alexnet --method hs \\
        --data-dir ~/tensorflow_datasets --manual-dir ~/imagenet-tars
    # 8 GPUs on one machine
    python examples/imagenet/train.py --model resnet50 --method group-hs \\
        --decay-preset B --strategy mirrored --mixed-precision --data-dir ...
    # several machines: the same command on each, with its own TF_CONFIG
    TF_CONFIG='{"cluster": {"worker": ["h0:12345", "h1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
    python examples/imagenet/train.py --model resnet50 --method group-hs \\
        --strategy multi-worker --data-dir gs://bucket/tfds --out gs://bucket/run
    # a fake-data run of every stage on CPU, in about a minute
    python examples/imagenet/train.py --model resnet50 --method group-hs --smoke
"""

import argparse
import importlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import alexnet as alexnet_lib  # noqa: E402
import custom_loop  # noqa: E402
import data as data_lib  # noqa: E402
import penalties  # noqa: E402

import deephoyer_tf  # noqa: E402

# Defaults of the flags. The paper's (appendix B): SGD with momentum 0.9, batch
# 256, 90 epochs, the DeepHoyer decays, weight decay 1e-4 and the pruning
# thresholds. Ours: the learning rates and their step decay (the standard
# ImageNet schedules of Caffe's AlexNet and PyTorch's ResNet-50: 0.01 and 0.1,
# divided by 10 every 30 epochs; for batch 256, scaled linearly with the
# batch size), 30 fine-tuning epochs, the crops.
DECAY_PRESETS = {"A": 1e-5, "B": 2e-5, "C": 4e-5, "D": 5e-5}  # ResNet-50 Group-HS
PAPER_DECAY = {("alexnet", "hs"): 1e-6}
DEFAULTS = {
    "alexnet": {
        "image_size": alexnet_lib.INPUT_SIZE, "lr": 0.01, "train_crop": "fixed",
        "conv_threshold": 1e-4, "fc_std_ratio": 0.5, "fc_threshold": None,
    },
    "resnet50": {
        "image_size": 224, "lr": 0.1, "train_crop": "resized",
        "conv_threshold": 1e-4, "fc_std_ratio": None, "fc_threshold": 1e-4,
    },
}
COMMON = {
    "batch_size": 256, "epochs": 90, "finetune_epochs": 30, "momentum": 0.9,
    "weight_decay": 1e-4, "lr_decay_epochs": 30, "lr_decay_factor": 0.1,
}
# --smoke: every stage on a few steps of fake data, on CPU.
SMOKE = {
    "image_size": {"alexnet": alexnet_lib.MIN_INPUT_SIZE, "resnet50": 64},
    "batch_size": 4, "epochs": 1, "finetune_epochs": 1, "steps_per_epoch": 2,
    "validation_steps": 1, "mock_examples": 8,
}
LOG = "[imagenet]"


_START = time.time()


def log(*parts):
    print(f"{LOG} {time.time() - _START:6.1f}s", *parts, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " Defaults in [brackets].")
    p.add_argument("--model", choices=["alexnet", "resnet50"], required=True)
    p.add_argument("--method", choices=["hs", "group-hs", "none"], required=True,
                   help="hs: Hoyer-Square (element-wise); group-hs: Group-HS on "
                   "filters and channels (eq. 8); none: dense baseline (L2 only)")
    g = p.add_argument_group("penalty and pruning (defaults: the paper's)")
    g.add_argument("--decay", type=float, help="DeepHoyer strength; default 1e-6 "
                   "for alexnet/hs, the --decay-preset for resnet50/group-hs")
    g.add_argument("--decay-preset", choices=sorted(DECAY_PRESETS),
                   help="ResNet-50 Group-HS decays of the paper: A=1e-5, B=2e-5, "
                   "C=4e-5, D=5e-5 (default A)")
    g.add_argument("--weight-decay", type=float,
                   help=f"SGD weight decay (coupled, as L2 wd/2 in the loss) [{COMMON['weight_decay']}]")
    g.add_argument("--conv-threshold", type=float, help="prune Conv2D |w| below this [1e-4]")
    g.add_argument("--fc-std-ratio", type=float,
                   help="prune Dense |w| below this times std(W) [alexnet 0.5]")
    g.add_argument("--fc-threshold", type=float,
                   help="prune Dense |w| below this [resnet50 1e-4]")
    t = p.add_argument_group("training (defaults: the paper's, the learning rates and fine-tuning length ours)")
    t.add_argument("--epochs", type=int, help="epochs with the penalty [90]")
    t.add_argument("--finetune-epochs", type=int,
                   help="epochs of fine-tuning after pruning [30]")
    t.add_argument("--batch-size", type=int, help="global batch size [256]")
    t.add_argument("--lr", type=float, help="initial learning rate [alexnet 0.01, resnet50 "
                   "0.1, times --batch-size / 256]")
    t.add_argument("--lr-decay-epochs", type=int,
                   help="multiply the learning rate by --lr-decay-factor every this many epochs [30]")
    t.add_argument("--lr-decay-factor", type=float, help="[0.1]")
    t.add_argument("--finetune-lr", type=float,
                   help="learning rate of fine-tuning [the last one of the penalty stage]")
    t.add_argument("--momentum", type=float, help="[0.9]")
    t.add_argument("--steps-per-epoch", type=int, help="[training examples / batch size]")
    t.add_argument("--validation-steps", type=int, help="[validation examples / batch size]")
    t.add_argument("--init-weights", help="start from these weights (a dense trained "
                   "model's .weights.h5 / .keras of the same architecture)")
    t.add_argument("--seed", type=int, default=0, help="[0]")
    m = p.add_argument_group("model and data")
    m.add_argument("--image-size", type=int, help="[alexnet 227, resnet50 224]")
    m.add_argument("--train-crop", choices=data_lib.CROPS,
                   help="random-resized crop, or a random crop of the image "
                   "resized to 256 [alexnet fixed, resnet50 resized]")
    m.add_argument("--alexnet-groups", type=int, choices=[1, 2], default=2,
                   help="2: the original two-tower conv2/4/5; 1: single tower [2]")
    m.add_argument("--data-dir", help="TFDS data folder (imagenet2012 prepared, or to prepare)")
    m.add_argument("--manual-dir", help="folder with ILSVRC2012_img_{train,val}.tar")
    s = p.add_argument_group("scaling out")
    s.add_argument("--strategy", choices=["default", "mirrored", "multi-worker", "tpu"],
                   default="default", help="multi-worker reads TF_CONFIG [default]")
    s.add_argument("--tpu", default="", help="TPU name or address for --strategy tpu [local]")
    s.add_argument("--keras", choices=["keras", "tf_keras"], default="keras",
                   help="Keras 3, or tf_keras (Keras 2) [keras]")
    s.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 (mixed_bfloat16 on TPU)")
    s.add_argument("--jit-compile", action="store_true", help="compile steps with XLA")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder [runs/imagenet-<model>-<method>]")
    o.add_argument("--export", choices=["float", "dynamic", "off"], default="float",
                   help="sparse .tflite export: float32 or dynamic-range int8 weights [float]")
    o.add_argument("--no-shrink", action="store_true", help="skip structural surgery")
    o.add_argument("--smoke", action="store_true",
                   help="every stage on a few steps of fake ImageNet data (tfds mock), on CPU")
    o.add_argument("--simulate-preemption", type=int, metavar="EPOCHS",
                   help="testing: exit with status 75 after this many epochs, leaving the backup")
    args = p.parse_args(argv)
    resolve(args, p)
    return args


def resolve(args, parser):
    """Fills the unset flags: explicit > --smoke > the paper's defaults."""
    model_defaults = DEFAULTS[args.model]
    fc_rule_given = args.fc_std_ratio is not None or args.fc_threshold is not None
    lr_given = args.lr is not None
    for name, value in {**COMMON, **model_defaults, "steps_per_epoch": None,
                        "validation_steps": None}.items():
        if name in ("fc_std_ratio", "fc_threshold") and fc_rule_given:
            continue
        if getattr(args, name) is None:
            if args.smoke and name in SMOKE:
                value = SMOKE[name]
                value = value[args.model] if isinstance(value, dict) else value
            setattr(args, name, value)
    if not lr_given:  # the defaults are for batch 256: linear scaling rule
        args.lr = args.lr * args.batch_size / 256
    if args.fc_std_ratio is not None and args.fc_threshold is not None:
        parser.error("give only one of --fc-std-ratio and --fc-threshold")
    if args.method == "none":
        args.decay = 0.0
    elif args.decay is None:
        if args.decay_preset is not None or (args.model, args.method) == ("resnet50", "group-hs"):
            args.decay = DECAY_PRESETS[args.decay_preset or "A"]
        elif (args.model, args.method) in PAPER_DECAY:
            args.decay = PAPER_DECAY[(args.model, args.method)]
        else:
            parser.error(
                f"the paper gives no decay for --model {args.model} --method "
                f"{args.method}: pass --decay"
            )
    if args.finetune_lr is None:
        drops = max(0, (args.epochs - 1) // args.lr_decay_epochs)
        args.finetune_lr = args.lr * args.lr_decay_factor**drops
    if args.out is None:
        args.out = os.path.join("runs", f"imagenet-{args.model}-{args.method}")
    for name in ("batch_size", "epochs", "lr_decay_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.finetune_epochs < 0:
        parser.error("--finetune-epochs must be >= 0")
    if args.model == "alexnet" and args.image_size < alexnet_lib.MIN_INPUT_SIZE:
        parser.error(f"--image-size must be >= {alexnet_lib.MIN_INPUT_SIZE} for alexnet")


def make_strategy(args):
    if args.strategy == "default":
        return tf.distribute.get_strategy()
    if args.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if args.strategy == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            log("note: TF_CONFIG is not set; running as a single worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=args.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def build_model(args, K, mixed_precision=None, init_weights=True):
    """The architecture with logits output, float32 logits under mixed precision."""
    mixed_precision = args.mixed_precision if mixed_precision is None else mixed_precision
    shape = (args.image_size, args.image_size, 3)
    if args.model == "alexnet":
        model = alexnet_lib.alexnet(K, args.image_size, groups=args.alexnet_groups)
    else:
        model = K.applications.ResNet50(
            weights=None, input_shape=shape, classes=data_lib.NUM_CLASSES,
            classifier_activation=None,
        )
    if args.init_weights and init_weights:
        model.load_weights(args.init_weights)
    if mixed_precision:
        logits = K.layers.Activation("linear", dtype="float32", name="logits_float32")(
            model.output
        )
        model = K.Model(model.input, logits, name=model.name)
    return model


def kernel_regularizer(args, K):
    """The penalty of `args.method` plus coupled L2 (see penalties.py), or None."""
    l2 = args.weight_decay / 2
    if args.method == "none":
        return K.regularizers.L2(l2) if l2 else None
    if args.method == "hs":
        penalty = deephoyer_tf.HoyerSquare(args.decay)
    else:
        penalty = deephoyer_tf.GroupHoyerSquare(args.decay, groups="both")
    return penalties.WithL2(penalty, l2) if l2 else penalty


def learning_rate(args, K, steps_per_epoch):
    """Step decay every --lr-decay-epochs during the penalty stage, then --finetune-lr."""
    boundaries, values = [], [args.lr]
    epoch = args.lr_decay_epochs
    while epoch < args.epochs:
        boundaries.append(epoch * steps_per_epoch)
        values.append(values[-1] * args.lr_decay_factor)
        epoch += args.lr_decay_epochs
    if args.finetune_epochs and args.method != "none":
        boundaries.append(args.epochs * steps_per_epoch)
        values.append(args.finetune_lr)
    if not boundaries:
        return args.lr
    return K.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def preemption(K, after_epochs):
    """Testing: a callback ending the process after `after_epochs` epochs."""

    class Preempt(K.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == after_epochs:
                log(f"simulated preemption after epoch {epoch + 1}; backup kept")
                sys.stdout.flush()
                os._exit(75)

    return Preempt()


def datasets(args):
    common = dict(
        global_batch_size=args.batch_size, image_size=args.image_size,
        data_dir=args.data_dir, manual_dir=args.manual_dir, mock=args.smoke,
        mock_examples=SMOKE["mock_examples"], seed=args.seed,
    )
    train, n_train = data_lib.load(
        "train", training=True, crop=args.train_crop,
        resize_size=data_lib.eval_resize_size(args.image_size), **common,
    )
    val, n_val = data_lib.load(
        "validation", training=False,
        resize_size=data_lib.eval_resize_size(args.image_size), **common,
    )
    steps = args.steps_per_epoch or max(1, n_train // args.batch_size)
    val_steps = args.validation_steps or max(1, n_val // args.batch_size)
    return train, val, steps, val_steps


def train(args, K, strategy, model, optimizer, train_ds, val_ds, steps, val_steps):
    """Stages 1-3; returns ``(route, {metric: value})``."""
    loss = K.losses.SparseCategoricalCrossentropy(from_logits=True)
    total = args.epochs + (args.finetune_epochs if args.method != "none" else 0)
    callbacks = []
    if args.method != "none" and args.finetune_epochs:
        callbacks.append(penalties.LayerRulePruning(
            args.epochs, args.conv_threshold, args.fc_std_ratio, args.fc_threshold
        ))
    backup_dir = os.path.join(args.out, "backup")
    custom = args.strategy == "multi-worker" and args.keras == "keras"
    if custom:
        # Keras 3 fit cannot run MultiWorkerMirroredStrategy: deephoyer_tf.fit_custom.
        checkpoint = custom_loop.EpochCheckpoint(backup_dir, model, optimizer, strategy)
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        done = checkpoint.restore()
        if done:
            log(f"resuming from the backup in {backup_dir}: epoch {done + 1} of {total}")
        callbacks = [checkpoint, custom_loop.EpochLog(total, log)] + callbacks
        if args.simulate_preemption:
            callbacks.append(preemption(K, args.simulate_preemption))
        if done < total:
            deephoyer_tf.fit_custom(
                model, train_ds, optimizer=optimizer, loss=loss, epochs=total,
                initial_epoch=done, steps_per_epoch=steps, strategy=strategy,
                jit_compile=args.jit_compile, callbacks=callbacks,
            )
        metrics = custom_loop.evaluate(model, val_ds, val_steps, strategy)
        return "deephoyer_tf.fit_custom", {"val_top1": metrics["top1"], "val_top5": metrics["top5"]}
    with strategy.scope():
        model.compile(
            optimizer=optimizer, loss=loss, jit_compile=args.jit_compile,
            metrics=[
                K.metrics.SparseCategoricalAccuracy(name="top1"),
                K.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
            ],
        )
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(metadata):
        with open(metadata) as f:
            log(f"resuming from the backup in {backup_dir}: epoch "
                f"{json.load(f)['epoch'] + 1} of {total}")
    elif os.path.isdir(backup_dir):
        log(f"resuming from the backup in {backup_dir}")
    callbacks = [K.callbacks.BackupAndRestore(backup_dir)] + callbacks
    if args.simulate_preemption:
        callbacks.append(preemption(K, args.simulate_preemption))
    history = model.fit(
        train_ds, epochs=total, steps_per_epoch=steps, validation_data=val_ds,
        validation_steps=val_steps, callbacks=callbacks, verbose=2, shuffle=False,
    )
    last = {k: v[-1] for k, v in history.history.items() if v}
    return f"{K.__name__} fit", {k: last[k] for k in ("val_top1", "val_top5") if k in last}


def prune_without_finetuning(args, model):
    """``--finetune-epochs 0``: prune once after training, with the same rule."""
    thresholds = penalties.layer_thresholds(
        model, args.conv_threshold, args.fc_std_ratio, args.fc_threshold
    )
    deephoyer_tf.prune(model, threshold=thresholds)
    log("pruned after training (--finetune-epochs 0: no fine-tuning)")


def plain_copy(args, K, model):
    """The trained weights in a new model of the same architecture, for the files.

    Built outside the distribution strategy (saving a tf_keras model of a
    multi-worker strategy runs collectives, so every worker would have to
    save), in float32 (mixed precision is a compute policy, the variables are
    float32 already; TFLite's builtin kernels take no float16 convolutions),
    without the regularizers (the saved model loads without this example's
    `WithL2`).
    """
    weights = model.get_weights()
    if args.mixed_precision:
        K.mixed_precision.set_global_policy("float32")
    copy = build_model(args, K, mixed_precision=False, init_weights=False)
    copy.set_weights(weights)
    return copy


def finish(args, K, model, chief, results):
    """Stage 4: report, save, shrink, export (files on the chief only).

    ``model.keras`` holds the pruned, fine-tuned weights in the plain
    architecture (`plain_copy`); ``shrunk.keras`` the same with dead units cut;
    ``model.tflite`` the sparse export of the latter (or of the former).
    """
    model = plain_copy(args, K, deephoyer_tf.strip_zero_masks(model))
    report = deephoyer_tf.sparsity_report(model)
    print(report, flush=True)
    results["report"] = report.to_dict()
    if not chief:
        log("not the chief worker: no files written")
        return
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "model.keras"))
    log(f"saved {os.path.join(args.out, 'model.keras')}")
    exported = model
    if args.no_shrink:
        log("shrink: skipped (--no-shrink)")
    else:
        try:
            small = deephoyer_tf.shrink(model)
            summary = small.shrink_summary
        except (ImportError, NotImplementedError) as error:
            log(f"shrink: skipped: not available ({type(error).__name__}: {error})")
        else:
            print(summary, flush=True)
            small.save(os.path.join(args.out, "shrunk.keras"))
            results["shrunk_weights"] = int(small.count_params())
            exported = small
    if args.export == "off":
        log("export: skipped (--export off)")
    else:
        path = os.path.join(args.out, "model.tflite")
        try:
            result = deephoyer_tf.export_tflite(
                exported, path, sparse=True,
                quantize=None if args.export == "float" else "dynamic",
            )
        except (ImportError, NotImplementedError) as error:
            log(f"export: skipped: not available ({type(error).__name__}: {error})")
        else:
            log(f"export: {path}: {result.size_bytes} bytes ({result.gzip_bytes} "
                f"gzipped), {result.sparse_tensors} sparse tensors, max abs error "
                f"{result.max_abs_error:.2e}")
            results["tflite_bytes"] = result.size_bytes
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    log(f"results in {args.out}")


def main(argv=None):
    args = parse_args(argv)
    strategy = make_strategy(args)  # first: MultiWorkerMirroredStrategy needs it
    K = importlib.import_module(args.keras)
    K.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        K.mixed_precision.set_global_policy(
            "mixed_bfloat16" if args.strategy == "tpu" else "mixed_float16"
        )
    chief, task_type, task_id = custom_loop.worker_role(strategy)
    log(f"model={args.model} method={args.method} decay={args.decay:g} "
        f"weight_decay={args.weight_decay:g} strategy={args.strategy} "
        f"replicas={strategy.num_replicas_in_sync} keras={args.keras} "
        f"task={task_type}:{task_id} batch={args.batch_size} lr={args.lr:g} image={args.image_size} "
        f"epochs={args.epochs}+{args.finetune_epochs} smoke={args.smoke}")
    train_ds, val_ds, steps, val_steps = datasets(args)
    log(f"data: {steps} steps per epoch, {val_steps} validation steps")
    with strategy.scope():
        model, regularizer = build_model(args, K), kernel_regularizer(args, K)
        if regularizer is not None:
            model = deephoyer_tf.regularize(model, regularizer)
        optimizer = K.optimizers.SGD(learning_rate(args, K, steps), momentum=args.momentum)
    log(f"built {model.name}: {model.count_params():,} parameters")
    route, metrics = train(args, K, strategy, model, optimizer, train_ds, val_ds, steps, val_steps)
    log(f"trained with {route}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if args.method != "none" and not args.finetune_epochs:
        prune_without_finetuning(args, model)
    results = {"args": vars(args), "route": route, **metrics}
    finish(args, K, model, chief, results)
    log("done")


if __name__ == "__main__":
    main()
