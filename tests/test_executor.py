"""The lean runner's pieces that need no sandbox: IPython syntax and bounded outputs."""

from __future__ import annotations

import pytest

from autograder.inside.executor import CellOutputs, UnsupportedSyntax, translate_ipython


def test_timing_magics_run_their_code():
    assert translate_ipython("%time y = f(x)").startswith("__bngrade_time__('y = f(x)'")
    assert translate_ipython("%timeit -n 10 -r 3 f(x)") == "__bngrade_time__('f(x)', globals(), locals(), 3)"
    assert translate_ipython("%%time\ny = 1\nz = 2") == "y = 1\nz = 2"


def test_harmless_magics_are_dropped_and_the_rest_kept():
    assert translate_ipython("%matplotlib inline\nx = 1") == "pass\nx = 1"
    assert translate_ipython("x = 10 % 3") == "x = 10 % 3"


@pytest.mark.parametrize("source, word", [("!pip install torch", "shell commands"), ("%run other.py", "%run"),
                                          ("%%bash\nls", "%%bash")])
def test_other_magics_are_refused_with_a_message(source, word):
    with pytest.raises(UnsupportedSyntax, match=word):
        translate_ipython(source)


def test_outputs_are_bounded_and_say_how_much_was_dropped():
    out = CellOutputs(limit=10)
    out.stream("stdout", "abcdef")
    out.stream("stdout", "ghijklmnop")
    items = out.finish()
    assert items[0]["text"] == "abcdefghij"
    assert "6 characters of output dropped" in items[-1]["text"]


@pytest.mark.parametrize("module", ["executor", "protocol", "timing"])
def test_the_runner_the_protocol_and_the_timer_import_only_the_standard_library(module):
    """They run inside the sandbox (timing imports torch in its function, for bn-torch only)."""
    import ast
    import sys

    from autograder.paths import PACKAGE_DIR

    tree = ast.parse((PACKAGE_DIR / "inside" / f"{module}.py").read_text())
    imported = set()
    for node in tree.body:  # the module's top-level imports
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    ours = {name for name in imported if name.split(".")[0] == "autograder"}
    assert {name.split(".")[0] for name in imported - ours} <= set(sys.stdlib_module_names) | {"__future__"}
    assert all(name.startswith("autograder.inside") for name in ours), ours
