"""`_internal.validation`: one rule per kind of argument, Keras-style messages."""

import math
import pathlib

import pytest

from deephoyer_tf._internal import validation


def test_check_float():
    assert validation.check_float(3, "x") == 3.0 and isinstance(validation.check_float(3, "x"), float)
    assert validation.check_float(None, "x", allow_none=True) is None
    with pytest.raises(TypeError, match=r"^Invalid type for argument `x`\. Expected a float\. Received: x=True of type bool$"):
        validation.check_float(True, "x")
    with pytest.raises(TypeError, match=r"Expected a float or None\. Received: x='1' of type str$"):
        validation.check_float("1", "x", allow_none=True)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^Invalid value for argument `x`\. Expected a finite float >= 0\. Received: x="):
            validation.check_float(bad, "x")
    with pytest.raises(ValueError, match=r"Expected a finite float >= 0\.5\. Received: x\['a'\]=0\.25$"):
        validation.check_float(0.25, "x", minimum=0.5, label="x['a']")


def test_check_int():
    assert validation.check_int(2, "n", minimum=1) == 2
    with pytest.raises(TypeError, match=r"^Invalid type for argument `n`\. Expected an int\. Received: n=2\.0 of type float$"):
        validation.check_int(2.0, "n")
    with pytest.raises(TypeError, match=r"Received: n=False of type bool"):
        validation.check_int(False, "n")
    with pytest.raises(ValueError, match=r"^Invalid value for argument `n`\. Expected an int >= 1\. Received: n=0$"):
        validation.check_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match=r"Expected an int <= 3\. Received: n=4$"):
        validation.check_int(4, "n", maximum=3)
    with pytest.raises(ValueError, match=r"Expected an int in \[0, 3\]\. Received: n=4$"):
        validation.check_int(4, "n", minimum=0, maximum=3)
    with pytest.raises(TypeError, match=r'Expected "epoch" or an int >= 1\. Received: n=\'batch\' of type str'):
        validation.check_int("batch", "n", minimum=1, expected='"epoch" or an int >= 1')


def test_check_choice_bool_callable_path_verbose():
    assert validation.check_choice("a", "c", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^Invalid value for argument `c`\. Expected one of \['a', 'b'\]\. Received: c='z'$"):
        validation.check_choice("z", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"Received: c=\[1\]"):
        validation.check_choice([1], "c", ("a",))  # unhashable: still a clear error
    with pytest.raises(TypeError, match=r"^Invalid type for argument `b`\. Expected a bool\. Received: b=1 of type int$"):
        validation.check_bool(1, "b")
    with pytest.raises(TypeError, match=r"Expected a callable\. Received: f=3 of type int"):
        validation.check_callable(3, "f")
    assert validation.check_path("a/b", "p") == pathlib.Path("a/b")
    with pytest.raises(TypeError, match=r"Expected a path \(str or os\.PathLike\)\. Received: p=3 of type int"):
        validation.check_path(3, "p")
    assert validation.check_verbose(1) == 1
    with pytest.raises(ValueError, match=r"^Invalid value for argument `verbose`\. Expected 0 or 1\. Received: verbose=2$"):
        validation.check_verbose(2)
