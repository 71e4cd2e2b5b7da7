"""The paper's figures, as PNG files, from runs of deephoyer_tf.

* `weight_histograms`: per-layer histograms of the nonzero weights at each
  stage of the pipeline (the paper's Figures 3 and 4);
* `descent_path`: gradient descent on Hoyer-Square for a random vector, with
  the threshold it induces and H_S against the L0 count (Figure 2);
* `pareto`: test accuracy against nonzero weights or MACs, from the
  ``results.json`` of several ``deephoyer-tf reproduce`` runs (DeepHoyer and
  the TFMOT magnitude baseline on one plot).

matplotlib is imported only when a figure is drawn (``pip install
"deephoyer_tf[plots]"``). Figures are drawn on matplotlib's Agg canvas without
`pyplot`, so the process's matplotlib backend is never changed.

Reference: Yang, Wen, Li. "DeepHoyer: Learning Sparser Neural Network with
Differentiable Scale-Invariant Sparsity Measures." ICLR 2020.
"""

import collections.abc
import json
import os
import pathlib

import numpy as np

from deephoyer_tf._internal import atomic
from deephoyer_tf._internal import validation

STAGES = ("dense", "regularized", "final")
_STAGE_TITLES = {
    "dense": "dense (pretrained)",
    "regularized": "after regularized training",
    "final": "after pruning + fine-tuning",
}
METRICS = ("nonzero_weights", "macs")
_METRIC_LABELS = {
    "nonzero_weights": "nonzero weights (log scale)",
    "macs": "MACs per example (log scale)",
}
_METHOD_LABELS = {
    "hs": "DeepHoyer HS",
    "hoyer": "DeepHoyer Hoyer",
    "group-hs": "DeepHoyer Group-HS",
    "l1": "L1",
    "group-lasso": "group lasso",
    "magnitude": "magnitude",
    "tfmot-magnitude": "TFMOT magnitude",
}
_DENSE_FIELDS = {"nonzero_weights": "total_weights", "macs": "dense_macs"}


def _figure(width, height):
    """A matplotlib Figure on an Agg canvas (pyplot untouched)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "deephoyer_tf.paper.plots needs matplotlib: pip install \"deephoyer_tf[plots]\""
        ) from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = validation.check_path(path, "path")
    with atomic.atomic_path(path) as partial:  # a temporary file, then a rename
        figure.savefig(partial, format="png", dpi=110)
    return str(path)


# --- histograms (Figures 3 and 4) ------------------------------------------


def _ordered_stages(names):
    return [s for s in STAGES if s in names] + [s for s in names if s not in STAGES]


def _check_stages(stages):
    if not isinstance(stages, collections.abc.Mapping) or not stages:
        raise ValueError(
            "Invalid value for argument `stages`. Expected a non-empty dict "
            "{stage: {layer: kernel array}}. "
            f"Received: stages={stages!r:.200}"
        )
    for stage, kernels in stages.items():
        if not isinstance(kernels, collections.abc.Mapping) or not kernels:
            raise ValueError(
                "Invalid value for argument `stages`. Expected a non-empty dict "
                f"{{layer: kernel array}} for each stage. Received for stage "
                f"{stage!r}: {kernels!r:.200}"
            )


def weight_histograms(stages, path, bins=80, log=True, shared_bins=False, title=None):
    """Histograms of the nonzero kernel weights of each layer at each stage.

    The paper's Figures 3 and 4: one row per layer, one column per stage
    (``dense``, ``regularized``, ``final`` first, in that order, then any
    other). Each panel counts the elements ``w != 0`` of the layer's kernel,
    with bins shared by the stages of a layer, and names how many of the
    kernel's weights are nonzero. Zeros are left out: after pruning they
    would be a single bar dwarfing the rest. Each panel has its own range
    (the scale of the weights may change a hundredfold between stages)
    unless `shared_bins`.

    Args:
        stages: dict ``{stage: {layer: kernel ndarray}}``, e.g. from
            `load_stages`.
        path: the PNG file to write (folders are created).
        bins: number of bins per layer (default 80).
        log: counts on a log scale (default True): regularized kernels hold
            many tiny weights next to a few large ones.
        shared_bins: the same bins for every stage of a layer (default
            False).
        title: optional figure title.

    Returns:
        `path`, as a str.

    Raises:
        ValueError: `stages` is empty or not a dict of dicts.

    Example::

        stages = deephoyer_tf.paper.plots.load_stages("runs/lenet-300-100-hs")
        deephoyer_tf.paper.plots.weight_histograms(stages, "histograms.png")
    """
    _check_stages(stages)
    order = _ordered_stages(list(stages))
    layers = []
    for stage in order:
        layers += [name for name in stages[stage] if name not in layers]
    figure = _figure(3.3 * len(order), 2.3 * len(layers) + 0.4)
    axes = figure.subplots(len(layers), len(order), squeeze=False)
    for row, layer in enumerate(layers):
        present = {s: np.asarray(stages[s][layer]) for s in order if layer in stages[s]}
        nonzero = {s: w[w != 0].astype(np.float64).reshape(-1) for s, w in present.items()}
        pooled = np.concatenate(list(nonzero.values()))
        shared = np.histogram_bin_edges(pooled if pooled.size else [-1.0, 1.0], bins=bins)
        for col, stage in enumerate(order):
            ax = axes[row][col]
            heading = f"{layer}: {_STAGE_TITLES.get(stage, stage)}"
            if stage not in present:
                ax.set_title(heading, fontsize=9)
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            values, size = nonzero[stage], present[stage].size
            ax.set_title(f"{heading}\n{values.size:,} of {size:,} nonzero "
                         f"({100 * values.size / size:.2f}%)", fontsize=9)
            if values.size:
                edges = shared if shared_bins else np.histogram_bin_edges(values, bins=bins)
                ax.hist(values, bins=edges, color=f"C{col}", log=log)
            ax.tick_params(labelsize=7)
            if row == len(layers) - 1:
                ax.set_xlabel("weight value", fontsize=8)
            if col == 0:
                ax.set_ylabel("count" + (" (log)" if log else ""), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def load_stages(path):
    """Reads the ``stages.npz`` of a ``deephoyer-tf reproduce`` run.

    Args:
        path: the ``.npz`` file, or the run's output folder holding
            ``stages.npz``. Its arrays are named ``"{stage}/{layer}"``
            (``"dense/fc1"``, ``"regularized/fc1"``, ``"final/fc1"``...).

    Returns:
        dict ``{stage: {layer: kernel ndarray}}``, stages in pipeline order.

    Raises:
        FileNotFoundError: no such file (or no ``stages.npz`` in the folder).
        ValueError: an array name has no ``stage/`` prefix.
    """
    path = validation.check_path(path, "path")
    if path.is_dir():
        path = path / "stages.npz"
    if not path.is_file():
        raise FileNotFoundError(f"No stages file at {str(path)!r} (written by "
                                "`deephoyer-tf reproduce` as OUTPUT/stages.npz).")
    stages = {}
    with np.load(path) as data:
        for key in data.files:
            stage, sep, layer = key.partition("/")
            if not sep or not layer:
                raise ValueError(
                    f"Invalid array name {key!r} in {str(path)!r}. Expected "
                    "\"stage/layer\", e.g. \"dense/fc1\"."
                )
            stages.setdefault(stage, {})[layer] = data[key]
    return {stage: stages[stage] for stage in _ordered_stages(list(stages))}


def reproduction_histograms(output_dir, results=None):
    """Writes ``histograms.png`` of a reproduce run into its output folder.

    Called by ``deephoyer-tf reproduce ... --plots``; reads
    ``output_dir/stages.npz`` (see `load_stages`).

    Args:
        output_dir: the run's output folder.
        results: the run's results dict (as in ``results.json``), for the
            title; read from ``output_dir/results.json`` when None and present.

    Returns:
        The path of the PNG written, as a str.
    """
    output_dir = validation.check_path(output_dir, "output_dir")
    if results is None and (output_dir / "results.json").is_file():
        results = json.loads((output_dir / "results.json").read_text())
    return weight_histograms(load_stages(output_dir), output_dir / "histograms.png",
                             title=_run_title(results))


def _run_title(results):
    if not results:
        return None
    title = f"{results.get('model', '?')} / {_method_label(results.get('method'))}"
    if results.get("test_accuracy") is not None:
        title += f": test accuracy {results['test_accuracy']:.2%}"
    if "nonzero_weights" in results and "total_weights" in results:
        title += f", {results['nonzero_weights']:,} of {results['total_weights']:,} weights nonzero"
    if results.get("quick"):
        title += " (quick run)"
    return title


def _method_label(method):
    return _METHOD_LABELS.get(method, str(method))


# --- descent path (Figure 2) -----------------------------------------------


def hoyer_square_descent(dim=20, seed=0, steps=2000, learning_rate=2e-3, tolerance=1e-2):
    """Gradient descent on Hoyer-Square alone, from ``w_0 ~ N(0, I_dim)``.

    ``w_{t+1} = w_t - learning_rate * grad H_S(w_t)``, with
    ``H_S(w) = ||w||_1^2 / ||w||_2^2`` (eq. 3) and its gradient taken by
    TensorFlow from deephoyer_tf's own implementation (the one
    `deephoyer_tf.HoyerSquare` uses). By eq. 4, the gradient shrinks the
    elements with ``|w_i| < ||w||_2^2 / ||w||_1`` and grows the others: that
    ratio is the induced threshold. H_S never exceeds the L0 count (equal when
    the nonzero elements share one magnitude).

    Plain gradient descent never lands exactly on 0: an eliminated element
    keeps flipping sign within about one step of zero. The L0 count is
    therefore ``#{i : |w_i| > tolerance * max_j |w_j|}``.

    Args:
        dim: length of the vector (default 20, as in the paper).
        seed: seed of the NumPy generator drawing ``w_0``.
        steps: number of gradient steps (default 2000).
        learning_rate: step size (default 2e-3).
        tolerance: relative magnitude below which an element counts as zero.

    Returns:
        dict of NumPy arrays over iterations ``t = 0..steps``: ``weights``
        ``(steps + 1, dim)``, ``threshold`` (``||w||_2^2 / ||w||_1``),
        ``hoyer_square`` and ``l0``.

    Example: ``hoyer_square_descent(dim=2, steps=0)["hoyer_square"][0]``
    equals ``(|w_1| + |w_2|)^2 / (w_1^2 + w_2^2)`` of the drawn vector.
    """
    import tensorflow as tf

    from deephoyer_tf.regularizers import measures as _measures

    dim = validation.check_int(dim, "dim", minimum=2)
    steps = validation.check_int(steps, "steps", minimum=0)
    for name, value in (("learning_rate", learning_rate), ("tolerance", tolerance)):
        if validation.check_float(value, name) == 0.0:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a float > 0. "
                f"Received: {name}={value!r}"
            )
    w0 = np.random.default_rng(seed).normal(size=dim).astype(np.float32)

    @tf.function
    def descend(w):
        path = tf.TensorArray(tf.float32, size=steps + 1).write(0, w)
        for t in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(w)
                value = _measures.hoyer_square(w)
            w = w - learning_rate * tape.gradient(value, w)
            path = path.write(t + 1, w)
        return path.stack()

    weights = descend(tf.constant(w0)).numpy().astype(np.float64)
    l1 = np.abs(weights).sum(axis=1)
    l2sq = np.square(weights).sum(axis=1)
    peak = np.abs(weights).max(axis=1, keepdims=True)
    return {
        "weights": weights,
        "threshold": l2sq / l1,
        "hoyer_square": l1**2 / l2sq,
        "l0": (np.abs(weights) > tolerance * peak).sum(axis=1),
    }


def descent_path(path, dim=20, seed=0, steps=2000, learning_rate=2e-3, tolerance=1e-2):
    """Figure 2: the path of gradient descent on Hoyer-Square, as a PNG.

    Left: each element ``w_i`` over the iterations, with the induced
    threshold ``+-||w||_2^2 / ||w||_1`` (eq. 4) dashed: elements inside it
    shrink towards 0, elements outside grow. Right: ``H_S(w)`` and the L0
    count over the iterations. See `hoyer_square_descent` for the exact
    procedure and the definition of the L0 count.

    Args:
        path: the PNG file to write.
        dim, seed, steps, learning_rate, tolerance: as in
            `hoyer_square_descent`.

    Returns:
        `path`, as a str.
    """
    run = hoyer_square_descent(dim, seed, steps, learning_rate, tolerance)
    t = np.arange(len(run["threshold"]))
    figure = _figure(11, 4)
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    left.plot(t, run["weights"], linewidth=0.9)
    left.plot(t, run["threshold"], "k--", linewidth=1.2,
              label=r"induced threshold $\pm\|w\|_2^2/\|w\|_1$")
    left.plot(t, -run["threshold"], "k--", linewidth=1.2)
    left.axhline(0.0, color="0.6", linewidth=0.5)
    left.set_xlabel("iteration")
    left.set_ylabel(r"$w_i$")
    left.set_title(rf"Gradient descent on $H_S$: $w_0 \in \mathbb{{R}}^{{{dim}}}$ drawn from "
                   rf"$\mathcal{{N}}(0, I)$ (seed {seed}), step {learning_rate:g}", fontsize=9)
    left.legend(loc="upper left", fontsize=8)
    right.plot(t, run["hoyer_square"], label=r"$H_S(w) = \|w\|_1^2/\|w\|_2^2$")
    right.step(t, run["l0"], where="post",
               label=rf"L0: #$|w_i| > {tolerance:g}\,\max|w|$")
    right.set_xlabel("iteration")
    right.set_ylim(0, dim + 1)
    right.set_title(r"$H_S$ against the L0 count", fontsize=9)
    right.legend(fontsize=8)
    return _save(figure, path)


# --- accuracy against size (Pareto view) -----------------------------------


def _load_results(entry):
    path = validation.check_path(entry, "results_paths")
    if path.is_dir():
        path = path / "results.json"
    results = json.loads(path.read_text())
    return path, results


def pareto(results_paths, path, metric="nonzero_weights"):
    """Test accuracy against model size from several runs' ``results.json``.

    One panel per model; in each, one line per method (DeepHoyer methods, L1,
    group lasso and the TFMOT ``magnitude`` baseline) through its runs
    sorted by size, each point labelled with its size; the dense model
    (``dense_test_accuracy`` at the full size) as a star and the paper's row
    (``results["paper"]``) as an open marker when the run has them. The x axis
    (nonzero weights or MACs per example) is logarithmic.

    Args:
        results_paths: list of ``results.json`` files (or run folders holding
            one) of ``deephoyer-tf reproduce``; each needs ``model``,
            ``method``, ``test_accuracy`` and `metric`.
        path: the PNG file to write.
        metric: ``"nonzero_weights"`` (default) or ``"macs"``.

    Returns:
        `path`, as a str.

    Raises:
        ValueError: `metric` is unknown, `results_paths` is empty, or a file
            lacks a field.
    """
    if metric not in METRICS:
        raise ValueError(
            f"Invalid value for argument `metric`. Expected one of {list(METRICS)}. "
            f"Received: metric={metric!r}"
        )
    if isinstance(results_paths, (str, os.PathLike)) or not results_paths:
        raise ValueError(
            "Invalid value for argument `results_paths`. Expected a non-empty list of "
            f"results.json paths. Received: results_paths={results_paths!r}"
        )
    runs = []
    for entry in results_paths:
        file, results = _load_results(entry)
        missing = [k for k in ("model", "method", "test_accuracy", metric) if k not in results]
        if missing:
            raise ValueError(f"{str(file)!r} lacks the field(s) {missing} needed by pareto().")
        runs.append(results)
    models = list(dict.fromkeys(r["model"] for r in runs))
    figure = _figure(6.2 * len(models), 4.4)
    axes = figure.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        _pareto_panel(ax, [r for r in runs if r["model"] == model], metric)
        ax.set_title(f"{model}: test accuracy vs {metric.replace('_', ' ')}", fontsize=10)
    return _save(figure, path)


def _pareto_panel(ax, runs, metric):
    methods = list(dict.fromkeys(r["method"] for r in runs))
    for k, method in enumerate(methods):
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r[metric])
        x = [r[metric] for r in mine]
        y = [100 * r["test_accuracy"] for r in mine]
        marker = "s" if method in ("magnitude", "tfmot-magnitude") else "o"
        ax.plot(x, y, marker=marker, color=f"C{k}", label=_method_label(method))
        for xi, yi in zip(x, y):
            ax.annotate(f"{xi:,}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=f"C{k}")
        paper = [r["paper"] for r in mine if r.get("paper") and r["paper"].get(metric)]
        if paper:
            ax.plot(paper[0][metric], 100 * paper[0]["test_accuracy"], marker="o",
                    markerfacecolor="none", color=f"C{k}", linestyle="none",
                    label=f"paper: {_method_label(method)}")
    dense = [r for r in runs if "dense_test_accuracy" in r and _DENSE_FIELDS[metric] in r]
    if dense:
        ax.plot(dense[0][_DENSE_FIELDS[metric]], 100 * dense[0]["dense_test_accuracy"],
                marker="*", markersize=11, color="k", linestyle="none", label="dense")
    ax.set_xscale("log")
    ax.set_xlabel(_METRIC_LABELS[metric])
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)


# --- command line ----------------------------------------------------------


def main(args):
    """``deephoyer-tf plot {histograms,descent,pareto}``; returns the exit code."""
    command = getattr(args, "plot_command", None)
    if command == "histograms":
        source = pathlib.Path(args.source)
        folder = source if source.is_dir() else source.parent
        out = args.out or folder / "histograms.png"
        results = None
        if (folder / "results.json").is_file():
            results = json.loads((folder / "results.json").read_text())
        written = weight_histograms(load_stages(source), out, title=_run_title(results))
        what = "nonzero weights per layer and stage"
    elif command == "descent":
        written = descent_path(args.out, dim=args.dim, seed=args.seed, steps=args.steps,
                               learning_rate=args.learning_rate)
        what = "gradient descent on Hoyer-Square (Figure 2)"
    elif command == "pareto":
        written = pareto(args.results, args.out, metric=args.metric)
        what = f"test accuracy against {args.metric.replace('_', ' ')}"
    else:
        raise ValueError(
            "Invalid value for argument `plot_command`. Expected one of "
            f"['histograms', 'descent', 'pareto']. Received: plot_command={command!r}"
        )
    from deephoyer_tf._internal.written import print_written

    print_written([(written, what)])
    return 0
