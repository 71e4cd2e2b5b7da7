"""The README's magnitude-pruning example runs as shown, on the running backend, and prints what it says."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _example(marker):
    text = README.read_text()
    start = text.index(f"<!-- example: {marker}")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    return block.group(1)


def test_magnitude_pruning_example():
    code = _example("magnitude-pruning")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    # The comments in the README show the printed values.
    expected = [line.split("# ", 1)[1].strip() for line in code.splitlines() if line.startswith("print(")]
    assert lines == expected
