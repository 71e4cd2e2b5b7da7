"""The one place that touches private or undocumented Keras, TF and TFMOT internals.

Every read or write of an attribute that Keras 3, tf_keras, TensorFlow or TFMOT
do not document goes through a function of this module, so that a release
that renames one breaks one function, with a clear message, instead of code
all over the package. `tests/internal/test_private_api.py` calls each of them
on real objects of the installed releases.

Checked with: TensorFlow 2.21.0, Keras 3.15.1, tf_keras 2.21.0, TFMOT 0.8.1,
ai-edge-litert 2.3.
"""

from __future__ import annotations

import keras

CHECKED_WITH = "TensorFlow 2.21, Keras 3.15, tf_keras 2.21, TFMOT 0.8"


class PrivateAPIError(RuntimeError):
    """A private attribute deephoyer_tf relies on is missing from the installed release."""


def _missing(what, owner):
    import tensorflow as tf

    return PrivateAPIError(
        f"deephoyer_tf reads {what} of {type(owner).__name__}, an internal of "
        f"Keras/TensorFlow checked with {CHECKED_WITH}; the installed release "
        f"(TensorFlow {tf.__version__}, Keras {keras.__version__}) does not have "
        "it. Please report this with the versions above."
    )


# --- layer graphs -------------------------------------------------------------


def functional_nodes(model):
    """``(inputs, outputs, nodes)`` of a built Sequential or functional model.

    Reads ``model._functional`` (Keras 3 `Sequential` keeps its graph in a
    `Functional` there; tf_keras' Sequential is a Functional itself) and
    ``Functional._nodes_by_depth`` (dict depth -> list of `Node`; the deepest
    nodes are the model's inputs). `nodes` is in data-flow order.

    Returns None when the model has no layer graph yet (a Sequential without
    an Input).
    """
    graph = getattr(model, "_functional", model)
    if graph is None:
        return None
    if not hasattr(graph, "_nodes_by_depth"):
        if hasattr(graph, "inputs") and type(graph).__name__ in ("Functional", "Sequential"):
            raise _missing("`_nodes_by_depth`", graph)
        return None
    by_depth = graph._nodes_by_depth
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    return list(graph.inputs), list(graph.outputs), nodes


def node_parts(node):
    """``(layer, input tensors, output tensors, is_input)`` of a graph `Node`.

    Keras 3 nodes expose ``operation``, ``input_tensors``, ``outputs`` and
    ``is_input``; tf_keras nodes ``layer``, ``keras_inputs``, ``outputs`` (a
    nest) and ``is_input``. Neither class is public API.
    """
    if hasattr(node, "operation"):  # Keras 3
        return node.operation, list(node.input_tensors), list(node.outputs), node.is_input
    if hasattr(node, "keras_inputs"):  # tf_keras
        import tensorflow as tf

        return node.layer, list(node.keras_inputs), tf.nest.flatten(node.outputs), node.is_input
    raise _missing("`operation`/`input_tensors` (Keras 3) or `layer`/`keras_inputs` (tf_keras)", node)


def history_layer(tensor):
    """The layer that produced a symbolic Keras tensor: ``tensor._keras_history[0]``."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise _missing("`_keras_history`", tensor)
    return history[0]


# --- variables ----------------------------------------------------------------


def _tf_keras_components(variable):
    """The `tf.Variable`s holding the constraint of a tf_keras variable.

    An `AutoCastVariable` (mixed precision) wraps its variable in ``_variable``;
    a distributed variable has one component per replica (``.values``).
    """
    import tensorflow as tf

    inner = getattr(variable, "_variable", None)
    if inner is not None and not isinstance(variable, keras.Variable):
        variable = inner
    if isinstance(variable, tf.distribute.DistributedValues):
        return list(variable.values)
    return [variable]


def set_variable_constraint(variable, constraint):
    """Sets the constraint the optimizers apply to `variable` after each update.

    Keras 3 `keras.Variable` has a public ``constraint`` setter. A tf_keras
    kernel is a `tf.Variable` (possibly inside an `AutoCastVariable` and/or a
    distributed variable) whose ``constraint`` property is read-only: every
    tf_keras optimizer reads ``_constraint`` of the (primary) component, which
    this sets on every component.
    """
    if isinstance(variable, keras.Variable):
        variable.constraint = constraint
        return
    components = _tf_keras_components(variable)
    for component in components:
        if not hasattr(component, "_constraint"):
            raise _missing("`_constraint`", component)
        component._constraint = constraint


def ema_average(optimizer, variable):
    """The moving average an optimizer with ``use_ema=True`` keeps of `variable`, or None.

    None when the optimizer keeps no averages (``use_ema=False``), is not
    built yet, or does not train `variable`. Keras 3 indexes its
    ``_model_variables_moving_average`` with ``_get_variable_index``; tf_keras
    with ``_index_dict[_var_key(variable)]``.
    """
    if not getattr(optimizer, "use_ema", False):
        return None
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not averages:
        return None  # not built yet: no averages to mask
    try:
        if hasattr(optimizer, "_get_variable_index"):
            index = optimizer._get_variable_index(variable)
        elif hasattr(optimizer, "_index_dict") and hasattr(optimizer, "_var_key"):
            index = optimizer._index_dict[optimizer._var_key(variable)]
        else:
            raise _missing("`_get_variable_index` (or `_index_dict`)", optimizer)
    except KeyError:
        return None
    return averages[index]


# --- callbacks ----------------------------------------------------------------


class TfKerasBatchHooks:
    """Answers tf_keras' private questions to a callback, for Keras 3 callbacks.

    tf_keras' `CallbackList` calls ``_implements_train_batch_hooks``,
    ``_implements_test_batch_hooks`` and ``_implements_predict_batch_hooks`` on
    every callback, methods Keras 3 callbacks lack. Mixed into a Keras 3
    callback, these answer from the methods the subclass overrides, so one
    class serves both flavours.
    """

    def _overrides(self, *names):
        base = keras.callbacks.Callback
        return any(getattr(type(self), name) is not getattr(base, name) for name in names)

    def wants_train_batch_hooks(self):
        """Whether tf_keras must call the train batch hooks (override to narrow)."""
        return self._overrides(
            "on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end"
        )

    def _implements_train_batch_hooks(self):
        return self.wants_train_batch_hooks()

    def _implements_test_batch_hooks(self):
        return self._overrides("on_test_batch_begin", "on_test_batch_end")

    def _implements_predict_batch_hooks(self):
        return self._overrides("on_predict_batch_begin", "on_predict_batch_end")


TF_KERAS_BATCH_HOOKS = (
    "_implements_train_batch_hooks",
    "_implements_test_batch_hooks",
    "_implements_predict_batch_hooks",
)


# --- TFMOT --------------------------------------------------------------------


def tfmot_pruning_vars(wrapper):
    """``(weight, mask, threshold)`` triples of a TFMOT `PruneLowMagnitude` wrapper.

    Reads its undocumented ``pruning_vars`` attribute (a list, empty before
    the wrapper is built).
    """
    return list(getattr(wrapper, "pruning_vars", None) or ())


# --- TFLite flatbuffers and TensorBoard protos -------------------------------


def _flatbuffer_utils():
    try:
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError as error:  # pragma: no cover (depends on the TF build)
        raise PrivateAPIError(
            "deephoyer_tf edits TFLite files with tensorflow.lite.tools.flatbuffer_utils "
            f"(checked with {CHECKED_WITH}), which this TensorFlow does not ship."
        ) from error
    return flatbuffer_utils


def tflite_to_object(content):
    """The mutable object tree (``ModelT``) of TFLite file bytes."""
    return _flatbuffer_utils().convert_bytearray_to_object(bytearray(content))


def tflite_to_bytes(model):
    """TFLite file bytes of a ``ModelT`` object tree."""
    return bytes(_flatbuffer_utils().convert_object_to_bytearray(model))


def tflite_opcode_name(model, opcode_index):
    """The builtin operator name (``"FULLY_CONNECTED"``...) of an operator code index."""
    return _flatbuffer_utils().opcode_to_name(model, opcode_index)


def scalar_summary_metadata():
    """The serialized ``SummaryMetadata`` TensorBoard's scalar plugin expects.

    Built from ``tensorflow.core.framework.summary_pb2`` so that writing a
    scalar needs TensorFlow only (`tf.summary.scalar` raises unless TensorBoard
    is installed): plugin ``"scalars"``, ``DATA_CLASS_SCALAR``.
    """
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars", content=b""),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    ).SerializeToString()


# --- messages -------------------------------------------------------------------


def print_msg(message):
    """Prints through Keras' own messaging, ``keras.src.utils.io_utils.print_msg``.

    Like Keras' callbacks: to stdout, or to absl logging after
    ``keras.utils.disable_interactive_logging()``. `keras.src` is Keras 3's
    private tree; falls back to `print` if the function moves.
    """
    try:
        from keras.src.utils import io_utils
    except ImportError:  # pragma: no cover (a future Keras)
        print(message)
        return
    io_utils.print_msg(message)


# --- re-invoking a graph node -----------------------------------------------------


def node_call_arguments(node):
    """``(args, kwargs)`` a graph node was called with (tensors and constants).

    Keras 3: ``node.arguments.args`` / ``.kwargs`` (a `SymbolicArguments`);
    tf_keras: ``node.call_args`` / ``node.call_kwargs``.
    """
    arguments = getattr(node, "arguments", None)
    if arguments is not None and hasattr(arguments, "args"):
        return tuple(arguments.args), dict(arguments.kwargs)
    if hasattr(node, "call_args"):
        return tuple(node.call_args), dict(node.call_kwargs)
    raise _missing("`arguments` (Keras 3) or `call_args` (tf_keras)", node)


def _is_symbolic(value):
    return type(value).__name__ == "KerasTensor"


def node_constants(node):
    """The non-tensor leaves of a node's call arguments (None and names left out)."""
    import tensorflow as tf

    args, kwargs = node_call_arguments(node)
    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    leaves = tf.nest.flatten((args, kwargs))
    return [v for v in leaves if v is not None and not _is_symbolic(v)]


def call_node_again(node, operation, replacements):
    """Calls `operation` as `node` called it, each input tensor replaced.

    Args:
        replacements: dict ``id(original KerasTensor) -> new tensor``.
    """
    import tensorflow as tf

    args, kwargs = node_call_arguments(node)

    def swap(value):
        return replacements.get(id(value), value) if _is_symbolic(value) else value

    args, kwargs = tf.nest.map_structure(swap, (args, kwargs))
    return operation(*args, **kwargs)


# --- operations that are not layers ------------------------------------------------

# Element-wise arithmetic as written in a functional model (``x + 3.0``, ``x * y``).
_KERAS_ELEMENTWISE_OPS = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")
TF_KERAS_ELEMENTWISE_SYMBOLS = frozenset(
    [
        "__operators__.add",
        "math.add",
        "math.subtract",
        "math.multiply",
        "math.truediv",
        "math.divide",
    ]
)


def keras_elementwise_op_classes():
    """Keras 3's operation classes for ``+ - * /`` in functional models.

    Read from ``keras.src.ops.numpy`` (Keras 3's private tree): ``x + 3.0`` on
    a `KerasTensor` adds a node whose operation is a ``keras.src.ops.numpy.Add``.
    """
    from keras.src.ops import numpy as numpy_ops

    return [getattr(numpy_ops, name) for name in _KERAS_ELEMENTWISE_OPS if hasattr(numpy_ops, name)]


def tf_keras_op_lambda_class(tf_keras):
    """tf_keras' `TFOpLambda`, the layer a TF function on a KerasTensor becomes.

    Read from ``tf_keras.src.layers.core.tf_op_layer``; its ``symbol``
    attribute names the TF function (``"math.multiply"``).
    """
    from tf_keras.src.layers.core import tf_op_layer

    return tf_op_layer.TFOpLambda


def tf_op_lambda_symbol(layer):
    """The TF function name a `TFOpLambda` layer wraps (``layer.symbol``)."""
    return getattr(layer, "symbol", None)


# --- attention layers ------------------------------------------------------------

# The projection sublayers of MultiHeadAttention, by role: Keras 3 names them
# through public properties (the gate, Keras 3.13+, only privately), tf_keras
# privately.
ATTENTION_PROJECTIONS = {
    "query": ("query_dense", "_query_dense"),
    "key": ("key_dense", "_key_dense"),
    "value": ("value_dense", "_value_dense"),
    "gate": ("_gate_dense",),
    "output": ("output_dense", "_output_dense"),
}


def attention_projection(layer, role):
    """The `EinsumDense` sublayer of `MultiHeadAttention` `layer` for `role`, or None."""
    for name in ATTENTION_PROJECTIONS[role]:
        sublayer = getattr(layer, name, None)
        if sublayer is not None:
            return sublayer
    return None


def attention_settings(layer):
    """``(num_heads, key_dim, value_dim, use_bias, use_gate)`` of a `MultiHeadAttention`."""
    value_dim = getattr(layer, "_value_dim", None) or layer._key_dim
    return (
        int(layer._num_heads),
        int(layer._key_dim),
        int(value_dim),
        bool(layer._use_bias),
        bool(getattr(layer, "_use_gate", False)),
    )


def attention_regularizer(layer):
    """The kernel regularizer a `MultiHeadAttention` hands to its projections (both
    flavours keep it in ``_kernel_regularizer``; `get_config` writes it as
    ``kernel_regularizer``)."""
    return getattr(layer, "_kernel_regularizer", None)


def current_value(variable):
    """The value of `variable` the running step sees.

    Keras 3 on JAX traces the train step statelessly: a variable read inside
    it must be looked up in the stateless scope, or its value at trace time is
    frozen into the step. Elsewhere the variable itself is returned.
    """
    try:
        from keras.src import backend as keras_backend
    except ImportError:  # pragma: no cover
        return variable
    if keras_backend.in_stateless_scope():
        value = keras_backend.get_stateless_scope().get_current_value(variable)
        if value is not None:
            return value
    return variable


# --- non-weight state of a layer (JAX) ----------------------------------------


class _StateHolder:
    """One variable in a Keras 3 layer's list of seed generators (only `.state` is read)."""

    def __init__(self, variable):
        self.state = variable

    def __repr__(self):
        return f"_StateHolder({getattr(self.state, 'path', self.state)!r})"


def track_non_weight_state(layer, variable):
    """Adds `variable` to the state of a Keras 3 `layer` that is not a weight.

    Keras 3 layers keep the state variables of their `SeedGenerator`s in
    ``_seed_generators``; ``layer.variables`` (and so the state the JAX
    trainer passes into its compiled step) lists each one's ``.state``, while
    ``layer.weights``, `get_weights` and saving leave them out. The variable
    goes in as such a state, once. Returns True when it was added.
    """
    generators = getattr(layer, "_seed_generators", None)
    if not isinstance(generators, list):
        raise _missing("`_seed_generators`", layer)
    if any(getattr(g, "state", None) is variable for g in generators):
        return False
    generators.append(_StateHolder(variable))
    return True


def sublayers(layer):
    """The layers `layer` holds directly (Keras 3 and tf_keras track them alike)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=False))


def attach_regularizer(layer, variable, regularizer):
    """Makes `regularizer(variable)` one of `layer`'s losses, after `layer` is built.

    Keras 3 reads a variable's (public, settable) ``regularizer`` when it
    collects ``layer.losses``; tf_keras keeps callable losses, added with
    `add_loss` (what its own `add_weight(regularizer=...)` does). Either way
    the loss is not part of the layer's config: it is not saved.
    """
    if hasattr(variable, "regularizer") and not hasattr(layer, "_callable_losses"):
        variable.regularizer = regularizer
        return
    import functools

    layer.add_loss(functools.partial(regularizer, variable))


def replace_sublayer(layer, attribute, new):
    """Keras 3: ``layer.<attribute> = new``, the sublayer it held no longer tracked.

    Keras keeps every sublayer ever assigned (and its weights) in the layer's
    tracker, and locks the tracker once the layer is built; the old sublayer
    is untracked and the lock restored.
    """
    tracker = getattr(layer, "_tracker", None)
    if tracker is None or not hasattr(tracker, "untrack") or not hasattr(tracker, "locked"):
        raise _missing("the sublayer tracker (`_tracker.untrack`, `_tracker.locked`)", layer)
    old = getattr(layer, attribute, None)
    locked = tracker.locked
    tracker.locked = False
    if old is not None:
        tracker.untrack(old)
    try:
        setattr(layer, attribute, new)
    finally:
        tracker.locked = locked


def keras_operation_class():
    """Keras 3's base `Operation` (``keras.src.ops.operation``): what ``x[:, 0]``,
    ``ops.transpose(x)`` and other functional-model operations are."""
    from keras.src.ops.operation import Operation

    return Operation
