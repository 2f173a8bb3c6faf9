"""The worker's reading of a notebook: what is not one is malformed, with a reason that says why."""

from __future__ import annotations

import json

import pytest

from autograder.grading.worker import _outputs, read_notebook

NB = {"cells": [{"cell_type": "code", "source": ["x = 1\n", "x"], "metadata": {}}], "metadata": {}, "nbformat": 4,
      "nbformat_minor": 5}


@pytest.mark.parametrize("data, reason", [
    (b"", "the file is empty"),
    (b"\xff\xfe\x00", "not text (UTF-8)"),
    (b'{"cells": [', "not valid JSON, so not a notebook (Expecting value at line 1, column 12)"),
    (b'["a", "list"]', "JSON but not a notebook"),
    (json.dumps({**NB, "nbformat": 3}).encode(), "in format 3"),
    (json.dumps({**NB, "cells": [{"cell_type": "widget"}]}).encode(), "unknown type 'widget'"),
    (json.dumps({**NB, "cells": [{"cell_type": "code", "source": 42}]}).encode(), "source is not text"),
])
def test_what_is_not_a_notebook_says_why(data, reason):
    with pytest.raises(ValueError) as info:
        read_notebook(data)
    assert reason in str(info.value)


def test_a_notebook_is_completed_to_nbformats_shape():
    nb = read_notebook(b"\xef\xbb\xbf" + json.dumps(NB).encode())  # a byte-order mark is fine
    cell = nb.cells[0]
    assert cell.source == "x = 1\nx" and cell.outputs == [] and cell.execution_count is None


def test_outputs_from_the_sandbox_are_rebuilt_in_nbformats_shapes():
    raw = [{"output_type": "stream", "name": "evil", "text": 1}, "not a dict",
           {"output_type": "execute_result", "data": {"text/plain": 3, "text/html": "<script>"},
            "execution_count": "x"},
           {"output_type": "error", "ename": "E", "evalue": "v", "traceback": "not a list"},
           {"output_type": "unknown"}]
    out = _outputs(raw)
    assert [o.output_type for o in out] == ["stream", "execute_result", "error"]
    assert (out[0].name, out[0].text) == ("stdout", "1")
    assert out[1].data == {"text/plain": "3"} and out[1].execution_count is None, "only plain text is kept"
    assert out[2].traceback == []
