"""Resuming and evaluating around `deephoyer_tf.fit_custom` (Keras 3, multi-worker).

Keras 3 `fit` cannot run `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so the recipe trains Keras 3 models on several
workers with `deephoyer_tf.fit_custom`. That loop resumes at `initial_epoch`
but does not support `keras.callbacks.BackupAndRestore`; this module adds what
the recipe needs around it:

* `EpochCheckpoint`: a `tf.train.Checkpoint` of the model, the optimizer
  (momentum, step counter, hence the learning-rate schedule) and the number
  of finished epochs, written at the end of every epoch and restored before
  training, so a preempted job resumes at the epoch it was in. As in
  TensorFlow's multi-worker guide, every worker saves (the chief into the
  backup folder, the others into temporary folders beside it, which they
  delete after each save), and every worker restores the chief's
  checkpoint: the folder must be shared (a network file system).
* `evaluate`: top-1 / top-5 accuracy of a distributed dataset.
"""

import os
import shutil

import keras
import tensorflow as tf


def worker_role(strategy):
    """``(is_chief, task_type, task_id)`` of this process under `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, None, None
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    if task_type == "chief":
        return True, task_type, task_id
    chief = task_type == "worker" and task_id == 0 and "chief" not in cluster
    return chief, task_type, task_id


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer and finished epochs at each epoch end; restores them.

    Args:
        directory: the backup folder (shared by all workers).
        model, optimizer: what to save (the optimizer built, see `restore`).
        strategy: the distribution strategy (for the worker's role).
        delete_on_end: delete the backup when training ends normally, as
            `BackupAndRestore` does.
    """

    def __init__(self, directory, model, optimizer, strategy, delete_on_end=True):
        super().__init__()
        self.directory = directory
        self.delete_on_end = delete_on_end
        self.chief, _, task_id = worker_role(strategy)
        with strategy.scope():
            self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, epochs_done=self.epochs_done
        )
        # Not inside `directory`: the chief deletes that at the end of training,
        # possibly while another worker still writes its last copy.
        write_dir = directory if self.chief else f"{directory.rstrip(os.sep)}.worker{task_id}"
        self.write_dir = write_dir
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep=1)

    def restore(self):
        """Restores the chief's latest checkpoint, if any; returns the epochs done."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epochs_done.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done.assign(epoch + 1)
        self.manager.save()
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def on_train_end(self, logs=None):
        if self.delete_on_end and self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)


class EpochLog(keras.callbacks.Callback):
    """Prints ``epoch k/n: loss x`` at the end of each epoch (fit_custom is silent)."""

    def __init__(self, total, printer=print):
        super().__init__()
        self.total = total
        self.printer = printer

    def on_epoch_end(self, epoch, logs=None):
        self.printer(f"epoch {epoch + 1}/{self.total}: loss {(logs or {}).get('loss', float('nan')):.4f}")


def evaluate(model, dataset, steps, strategy):
    """``{"top1": ..., "top5": ..., "examples": n}`` over `steps` global batches."""
    distributed = strategy.experimental_distribute_dataset(dataset)

    def replica_step(x, y):
        logits = tf.cast(model(x, training=False), tf.float32)
        y = tf.cast(y, tf.int64)
        top1 = tf.cast(tf.equal(tf.argmax(logits, axis=-1), y), tf.float32)
        top5 = tf.cast(tf.math.in_top_k(y, logits, 5), tf.float32)
        return tf.reduce_sum(top1), tf.reduce_sum(top5), tf.cast(tf.size(y), tf.float32)

    @tf.function
    def step(batch):
        values = strategy.run(replica_step, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]

    totals = [0.0, 0.0, 0.0]
    iterator = iter(distributed)
    for _ in range(steps):
        totals = [t + float(v) for t, v in zip(totals, step(next(iterator)))]
    top1, top5, count = totals
    return {"top1": top1 / max(count, 1.0), "top5": top5 / max(count, 1.0), "examples": int(count)}
