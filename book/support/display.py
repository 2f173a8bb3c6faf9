"""How the chapters show results over seeds: bands around mean curves, error bars, HTML tables.

Presentation only: nothing here changes a number, so the committed results do not depend
on this module.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
from IPython.display import HTML
from matplotlib.ticker import MaxNLocator

from support.seeds import spread

__all__ = ["band", "html_table", "integer_ticks"]


def band(ax, x: Sequence[float], runs: Sequence[Sequence[float]], *, diverged: float | None = None,
         label: str | None = None, **style):
    """Plot the mean of ``runs`` (one sequence per seed, aligned with ``x``) and a ±1 sd band.

    Returns the line, so that callers can reuse its colour.
    """
    columns = [spread(column, diverged=diverged) for column in zip(*runs, strict=True)]
    mean = np.array([c.mean for c in columns])
    sd = np.array([c.sd for c in columns])
    (line,) = ax.plot(x, mean, label=label, **style)
    ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> HTML:
    """A table for a cell's output, which wraps on a narrow page instead of being cut off.

    (myst-nb renders a Markdown output as CommonMark, which has no tables.)
    """
    def cells(tag: str, row: Sequence[object]) -> str:
        return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return HTML(f'<table class="table"><thead><tr>{cells("th", header)}</tr></thead><tbody>{body}</tbody></table>')


def integer_ticks(axis) -> None:
    """Ticks at whole numbers only on ``axis`` (``ax.xaxis``): epochs have no halves."""
    axis.set_major_locator(MaxNLocator(integer=True))
