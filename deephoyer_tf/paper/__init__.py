"""The paper's experiments: its networks, MNIST and Fashion-MNIST loading, the reproduction and the figures.

An application of the library, not part of it: nothing in `regularizers`,
`sparsity`, `callbacks`, `structure` or `export` imports from here.

* `models`: LeNet-300-100 and LeNet-5.
* `datasets`: MNIST and Fashion-MNIST (IDX files from a folder, else the
  normal download); `load_dataset` picks one by name.
* `reproduce`: ``deephoyer-tf reproduce``, the paper's MNIST rows under an
  honest protocol.
* `plots`: the figures (needs matplotlib).
"""

from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import models
from deephoyer_tf.paper.datasets import load_dataset
from deephoyer_tf.paper.datasets import load_fashion_mnist
from deephoyer_tf.paper.datasets import load_mnist
from deephoyer_tf.paper.models import lenet_5
from deephoyer_tf.paper.models import lenet_300_100

__all__ = [
    "datasets",
    "lenet_300_100",
    "lenet_5",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "models",
]
