import re

from setuptools import find_packages
from setuptools import setup

with open("deephoyer_tf/_version.py", encoding="utf-8") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

extras = {
    "tfmot": ["tf-keras>=2.16", "tensorflow-model-optimization>=0.8"],
    "litert": ["ai-edge-litert"],
    "datasets": ["tensorflow-datasets"],
    "plots": ["matplotlib"],
    "search": ["optuna>=5.0", "matplotlib"],  # deephoyer_tf.search, deephoyer-tf search
    "hub": ["keras-hub"],  # tests: a keras_hub backbone through the pipeline
    "backends": ["jax", "torch"],  # Keras 3 on JAX and PyTorch (tests/backends)
}
# The tests on TensorFlow and JAX. PyTorch (several GB with PyPI's CUDA wheel) is in
# `backends` only: its test run is added with `pip install -e ".[backends]"` (see .ci/run).
extras["test"] = sorted(
    {p for group in ("tfmot", "litert", "datasets", "plots", "search", "hub")
     for p in extras[group]}
    | {"jax", "pytest", "ruff"}
)
extras["all"] = sorted(set(extras["test"]) | set(extras["backends"]))

setup(
    name="deephoyer_tf",
    version=VERSION,
    description=(
        "DeepHoyer sparsity regularizers (Hoyer-Square, Group-HS), pruning, "
        "surgery and sparse export for Keras and TensorFlow"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["deephoyer_tf", "deephoyer_tf.*"]),
    python_requires=">=3.9",
    install_requires=["tensorflow>=2.16", "keras>=3.0", "numpy"],
    extras_require=extras,
    entry_points={"console_scripts": ["deephoyer-tf=deephoyer_tf.cli:main"]},
)
