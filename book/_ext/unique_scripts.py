"""Load each inline script once per page.

Sphinx 7.4 registers an inline script added during the build (``app.add_js_file(None,
body=...)``, as sphinx-thebe and sphinx-togglebutton do) under the file name ``None``, and
adds it again under ``''`` when it starts writing; the two do not compare equal, so every
page declared ``const THEBE_JS_URL`` twice and the browser reported a SyntaxError. This
drops the second copy from each page's scripts.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def drop_duplicate_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for script in scripts:
        key = (
            getattr(script, "filename", script) or "",
            getattr(script, "priority", None),
            tuple(sorted(getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
