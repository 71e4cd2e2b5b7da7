"""Search for the sparsest model within a validation-accuracy drop, on Optuna.

* `study`: `run` (the search on any model and data: a model-building
  function, training and validation arrays or `tf.data` datasets), the
  Pareto front, the chosen trial, ``search.json`` and ``pareto.png``.
* `objective`: one trial (regularize, prune, fine-tune, measure), with
  per-epoch backups; `Schedule`.
* `storage`: the Optuna storage opened with errors that name it, and each
  trial's owning process recorded, so that a rerun retries the trials of
  killed processes at once.
* `mnist`: `lenet`, the search on LeNet-300-100 / LeNet-5 and MNIST
  (``deephoyer-tf search``).
* `model_file`: `search_model`, the search on a user's trained model and
  arrays (``deephoyer-tf search --model-file``).

Optuna is imported only when a search runs (``pip install
'deephoyer_tf[search]'``). The test set is never an argument: the caller
evaluates the chosen model (`SearchResult.load_model`) on it once.

Example::

    from deephoyer_tf import search

    result = search.run(build_model, (x_train, y_train), (x_val, y_val),
                        method="hs", n_trials=30, output="runs/search-hs",
                        storage="sqlite:///search.db", max_drop=0.2)
    print(result.summary())  # the Pareto front and the chosen trial (run prints it too)
    model = result.load_model(safe_mode=True)  # the chosen trial's model
"""

from deephoyer_tf.search import mnist
from deephoyer_tf.search import model_file
from deephoyer_tf.search import objective
from deephoyer_tf.search import study
from deephoyer_tf.search.mnist import lenet
from deephoyer_tf.search.model_file import search_model
from deephoyer_tf.search.objective import METHODS
from deephoyer_tf.search.objective import Schedule
from deephoyer_tf.search.study import SearchResult
from deephoyer_tf.search.study import run

__all__ = ["METHODS", "Schedule", "SearchResult", "lenet", "mnist", "model_file", "objective", "run",
           "search_model", "study"]
