"""Keep the outputs in every page's ``.ipynb`` download, also when they come from the cache.

myst-nb writes each page's notebook to ``_build/jupyter_execute/`` (the file the download
button serves) while reading the page. When the outputs come from the execution cache it
writes the notebook *before* merging them in (myst-nb 1.4 replaces its client's notebook
with the merged copy, and saves the original), so after an unchanged rebuild the downloads
would have no outputs. After each page is read, this extension merges the cached outputs
into that file when they are missing.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)


def _has_outputs(nb: nbformat.NotebookNode) -> bool:
    code = [c for c in nb.cells if c.cell_type == "code"]
    return not code or any(c.get("execution_count") is not None for c in code)


def merge_cached_outputs(app: Sphinx, doctree) -> None:
    docname = app.env.docname
    config = getattr(app.env, "mystnb_config", None)
    if config is None or config.execution_mode != "cache":
        return
    path = Path(config.output_folder).joinpath(*docname.split("/")).with_suffix(".ipynb")
    if not path.is_file():
        return  # not a notebook page
    nb = nbformat.read(path, as_version=4)
    if _has_outputs(nb):
        return
    try:
        _, merged = get_cache(config.execution_cache_path).merge_match_into_notebook(nb)
    except KeyError:
        return  # executed without caching (it failed): nothing to merge
    nbformat.write(merged, path)
    LOGGER.verbose("merged cached outputs into %s", path)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", merge_cached_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
