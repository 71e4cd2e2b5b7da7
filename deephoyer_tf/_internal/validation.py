"""Argument validation with one set of rules and Keras-style messages.

Every public function and constructor of deephoyer_tf checks its arguments
with these helpers, so the same kind of argument gets the same rule and the
same message everywhere::

    Invalid type for argument `strength`. Expected a float. Received: strength='a' of type str
    Invalid value for argument `at_epoch`. Expected an int >= 0. Received: at_epoch=-1

Rules: a wrong type raises `TypeError`, a value of the right type out of range
raises `ValueError`; `bool` is never accepted as a number; floats must be
finite.
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib


def _type_error(name, expected, value, label=None):
    label = name if label is None else label
    return TypeError(
        f"Invalid type for argument `{name}`. Expected {expected}. "
        f"Received: {label}={value!r} of type {type(value).__name__}"
    )


def _value_error(name, expected, value, label=None):
    label = name if label is None else label
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {label}={value!r}"
    )


def check_float(value, name, *, minimum=0.0, allow_none=False, label=None, type_hint="a float",
                greater_than=None, below=None):
    """`value` as a finite float >= `minimum` (None passes through if `allow_none`).

    `greater_than` (instead of `minimum`) requires ``value > greater_than``;
    `below` adds ``value < below``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = f"{type_hint} or None" if allow_none else type_hint
        raise _type_error(name, hint, value, label)
    result = float(value)
    if greater_than is not None:
        ok, expected = result > greater_than, f"a finite float > {greater_than:g}"
    else:
        ok, expected = result >= minimum, f"a finite float >= {minimum:g}"
    if below is not None:
        ok = ok and result < below
        expected = (f"a finite float in ({greater_than:g}, {below:g})" if greater_than is not None
                    else f"a finite float in [{minimum:g}, {below:g})")
    if not (math.isfinite(result) and ok):
        raise _value_error(name, expected, result, label)
    return result


def check_int(value, name, *, minimum=None, maximum=None, label=None, expected=None):
    """`value` as an int in ``[minimum, maximum]`` (bounds optional).

    `expected`, if given, replaces the description of what was expected in
    both messages (e.g. ``'"epoch" or an int >= 1'``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _type_error(name, expected or "an int", value, label)
    result = int(value)
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        if expected is not None:
            pass
        elif maximum is None:
            expected = f"an int >= {minimum}"
        elif minimum is None:
            expected = f"an int <= {maximum}"
        else:
            expected = f"an int in [{minimum}, {maximum}]"
        raise _value_error(name, expected, result, label)
    return result


def check_bool(value, name):
    """`value`, which must be a bool."""
    if not isinstance(value, bool):
        raise _type_error(name, "a bool", value)
    return value


def check_choice(value, name, choices):
    """`value`, which must be one of `choices`."""
    choices = list(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable or uncomparable
        ok = False
    if not ok:
        raise _value_error(name, f"one of {choices}", value)
    return value


def check_callable(value, name, expected="a callable"):
    """`value`, which must be callable."""
    if not callable(value):
        raise _type_error(name, expected, value)
    return value


def check_path(value, name):
    """`value` as a `pathlib.Path` (a str or os.PathLike)."""
    if not isinstance(value, (str, os.PathLike)):
        raise _type_error(name, "a path (str or os.PathLike)", value)
    return pathlib.Path(value)


def check_verbose(value, name="verbose"):
    """`verbose`: 0 (silent) or 1 (messages through Keras' own messaging)."""
    return check_int(value, name, minimum=0, maximum=1, expected="0 or 1")
