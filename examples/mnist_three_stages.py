"""The three DeepHoyer stages in one `model.fit`, on MNIST with LeNet-300-100.

    python examples/mnist_three_stages.py --data-dir ../shared/data/mnist
    python examples/mnist_three_stages.py --data-dir ../shared/data/mnist --quick

Stage 1 trains with Hoyer-Square on every kernel (strength warmed up over the
first epochs), stage 2 (`ThresholdPruning`, at epoch `--prune-at`) zeroes every
weight below `--std-ratio` standard deviations of its kernel and switches the
penalty off, stage 3 fine-tunes with the zeros held fixed. The script checks
that the zeros pruned at the start of fine-tuning are still exactly zero at the
end, and prints the sparsity report and the validation accuracy.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import deephoyer_tf  # noqa: E402
from deephoyer_tf.paper.datasets import load_mnist  # noqa: E402
from deephoyer_tf.paper.models import lenet_300_100  # noqa: E402


class ZeroPattern(keras.callbacks.Callback):
    """Takes the zero pattern right after pruning and checks it after every batch.

    Put it after `ThresholdPruning` in the callback list: at the start of
    epoch `at_epoch` that callback prunes first, then this one records the
    zeros, before any fine-tuning step, so a zero that moves in the very
    first step is seen.
    """

    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch
        self.zeros = None
        self.moved = 0

    def _kernels(self):
        return [layer.kernel.numpy() for layer in self.model.layers if hasattr(layer, "kernel")]

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            self.zeros = [k == 0 for k in self._kernels()]

    def on_train_batch_end(self, batch, logs=None):
        if self.zeros is not None:
            self.moved += sum(int(np.any(k[z] != 0)) for k, z in zip(self._kernels(), self.zeros))

    def held(self):
        return self.zeros is not None and self.moved == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder of the MNIST *-ubyte.gz files")
    parser.add_argument("--strength", type=float, default=3e-4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--prune-at", type=int, default=20)
    parser.add_argument("--std-ratio", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true", help="3 epochs on 5,000 images")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.prune_at = 3, 2

    data = load_mnist(args.data_dir)
    x, y = data.x_train, data.y_train
    if args.quick:
        x, y = x[:5000], y[:5000]
    model = lenet_300_100(kernel_regularizer=deephoyer_tf.HoyerSquare(args.strength))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    check = ZeroPattern(args.prune_at)
    model.fit(
        x, y, batch_size=128, epochs=args.epochs, verbose=2,
        validation_data=(data.x_val, data.y_val),
        callbacks=[
            deephoyer_tf.StrengthSchedule.linear_warmup(min(5, args.prune_at)),
            deephoyer_tf.ThresholdPruning(at_epoch=args.prune_at, std_ratio=args.std_ratio, verbose=1),
            check,
        ],
    )
    report = deephoyer_tf.sparsity_report(model)
    print(report)
    accuracy = model.evaluate(data.x_val, data.y_val, verbose=0)[1]
    print(f"validation accuracy {accuracy:.4f}")
    held = check.held()
    print(f"zeros held exactly through fine-tuning: {held}")
    return 0 if held else 1


if __name__ == "__main__":
    raise SystemExit(main())
