"""The published book's address, from one setting: ``html.baseurl`` (or ``$BN_BOOK_URL``).

Three things depend on where the site is served, and all of them follow from its base URL
(``https://your-org.github.io/batch-normalization-course/``, say):

- ``sitemap.xml`` (sphinx-sitemap) lists every page as ``<base URL><page>.html``, and each
  page's ``<link rel="canonical">`` (Sphinx) points there;
- the 404 page (sphinx-notfound-page) is served at whatever address was not found, so its
  links, styles and scripts must be absolute paths: they start with the base URL's path
  (``/batch-normalization-course/``), which this extension sets as ``notfound_urls_prefix``
  (that extension's default, ``/en/latest/``, is Read the Docs' layout); that extension
  rewrites the page's links but not its ``data-content_root``, the root from which Sphinx's
  scripts build their URLs, so this extension sets that one too;
- the released notebooks link chapters under the same URL (``autograder release`` reads the
  same two settings, in the same order).

The environment variable ``BN_BOOK_URL`` wins over ``html.baseurl``: the publishing workflow
sets it to the address GitHub Pages reports, so that nothing needs editing to publish. The URL
is normalized to end with ``/`` (sphinx-sitemap joins it to page names as is).

Without a base URL the book still builds, warning-free: no sitemap (sphinx-sitemap's warning
that it needs one is silenced, and an info line says so instead), and the 404 page's links
start at ``/``, right for a site served at the root of its domain.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

ENV_VAR = "BN_BOOK_URL"
_SITEMAP_NEEDS_A_URL = "sitemap.configuration"

logger = logging.getLogger(__name__)


def base_url(configured: str | None) -> str:
    """The site's base URL, ending with ``/``: ``$BN_BOOK_URL``, else ``configured``, else ``""``."""
    url = (os.environ.get(ENV_VAR) or configured or "").strip()
    return url.rstrip("/") + "/" if url else ""


def url_prefix(url: str) -> str:
    """The path under which the site is served, ``/`` or ``/<path>/``: the 404 page's links start with it."""
    path = urlsplit(url).path.strip("/")
    return f"/{path}/" if path else "/"


def configure(app: Sphinx, config: Config) -> None:
    url = base_url(config.html_baseurl)
    config.html_baseurl = url
    config.notfound_urls_prefix = url_prefix(url)
    if not url:
        config.suppress_warnings = [*config.suppress_warnings, _SITEMAP_NEEDS_A_URL]
        logger.info("no html.baseurl (nor $%s): no sitemap.xml; the 404 page links from /", ENV_VAR)


def root_the_404_page(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """The 404 page's scripts find the site from its absolute prefix, not from ``./``."""
    if pagename == app.config.notfound_pagename:
        context["content_root"] = app.config.notfound_urls_prefix


def setup(app: Sphinx) -> dict:
    # before the extensions that read these values (they read them while writing pages)
    app.connect("config-inited", configure, priority=400)
    app.connect("html-page-context", root_the_404_page)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
