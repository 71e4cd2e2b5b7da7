"""Trains (or finds cached) the dense model of a `reproduce` recipe, so later runs reuse it.

    python bench/pretrain_dense.py lenet-300-100 hs --recipe authors --seed 1 --data-dir ../shared/data/mnist
"""

import argparse
import os
import pathlib
import sys

from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import preprocessing
from deephoyer_tf.paper import reproduce


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("method")
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="mnist")
    args = parser.parse_args(argv)
    recipe = reproduce.recipe_for(args.model, args.method, name=args.recipe, seed=args.seed)
    data = preprocessing.recipe_inputs(datasets.load_dataset(args.dataset, args.data_dir), recipe.inputs)
    cache = os.environ.get("DEEPHOYER_CACHE_DIR", pathlib.Path.home() / ".cache" / "deephoyer_tf")
    reproduce.pretrained(args.model, data, recipe, cache, log=lambda *a: print(*a, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
