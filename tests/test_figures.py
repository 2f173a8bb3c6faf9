"""Every figure of the book can be read: a caption and alt text, axis labels, tick labels apart.

The session's book build (``book_build`` in conftest.py) runs its kernels with the start-up
file ``tests/figure_probe.py``, which records every figure a page shows: which cell drew it,
its axes' labels, and the extent of every tick label on the canvas. These tests judge that
record, for every chapter:

- every cell that shows a figure gives it a caption and alt text (``mystnb: figure: caption``
  and ``image: alt``);
- every axis that shows tick labels (numbers a reader must read) is labelled, by its own
  label or by the figure's shared one (a diagram, with no ticks, needs none);
- no two tick labels of a figure overlap (matplotlib reports each label's extent).

The judging functions are checked on figures drawn here, so that each rule can fail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import matplotlib
import nbformat
import pytest

matplotlib.use("Agg")

import figure_probe  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

#: Two tick labels closer than this (in pixels, on both axes of the canvas) count as overlapping.
TOLERANCE = 1.0


@dataclass(frozen=True)
class Shown:
    """One figure as a page shows it: where it comes from and what the probe measured."""

    chapter: str  #: e.g. "batch-variance"
    cell: str  #: the source of the cell that drew it
    figure: dict  #: figure_probe's description


def unlabelled_axes(figure: dict) -> list[str]:
    """The axes that show tick labels but name no quantity: ``"axes 1: x"``, ..."""
    missing = []
    for k, ax in enumerate(figure["axes"]):
        for axis in ("x", "y"):
            label = ax[f"{axis}label"] or figure[f"sup{axis}label"]
            if ax[f"{axis}ticks"] and not label.strip():
                missing.append(f"axes {k + 1}: {axis}")
    return missing


def _overlap(a: list[float], b: list[float]) -> bool:
    return (a[0] < b[2] - TOLERANCE and b[0] < a[2] - TOLERANCE
            and a[1] < b[3] - TOLERANCE and b[1] < a[3] - TOLERANCE)


def overlapping_ticks(figure: dict) -> list[tuple[str, str]]:
    """Pairs of tick labels of the figure (any axes, any axis) whose extents overlap."""
    labels = [t for ax in figure["axes"] for axis in ("xticks", "yticks") for t in ax[axis]]
    return [(a["text"], b["text"]) for k, a in enumerate(labels) for b in labels[k + 1:]
            if _overlap(a["box"], b["box"])]


# --------------------------------------------------------------------------------------------
# The rules, on figures drawn here
# --------------------------------------------------------------------------------------------


def _described(draw) -> dict:
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    try:
        draw(ax)
        return figure_probe._describe(fig)
    finally:
        plt.close(fig)


def test_crowded_log_ticks_are_reported_as_overlapping():
    def crowded(ax):  # what a log axis over less than two decades does by default
        ax.semilogx([2, 3, 4, 6, 8, 16, 32, 64], range(8))
        ax.set_xlabel("batch size")
        ax.set_ylabel("ratio")

    def readable(ax):
        crowded(ax)
        ax.set_xticks([2, 4, 8, 16, 32, 64], labels=["2", "4", "8", "16", "32", "64"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())

    assert overlapping_ticks(_described(crowded)), "minor labels 2×10^0, 3×10^0, ... were not seen to overlap"
    assert overlapping_ticks(_described(readable)) == []


def test_an_axis_with_numbers_and_no_label_is_reported():
    def unlabelled(ax):
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("step")

    def diagram(ax):
        ax.text(0.5, 0.5, "x → y")
        ax.set_xticks([])
        ax.set_yticks([])

    assert unlabelled_axes(_described(unlabelled)) == ["axes 1: y"]
    assert unlabelled_axes(_described(diagram)) == []


# --------------------------------------------------------------------------------------------
# The book's figures
# --------------------------------------------------------------------------------------------


def _executed_cells(book_build) -> dict[str, tuple[str, nbformat.NotebookNode]]:
    """``source -> (chapter, cell)`` for every code cell of the executed chapters."""
    cells = {}
    for path in sorted((book_build.root / "_build" / "jupyter_execute" / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                cells[cell.source.strip()] = (path.stem, cell)
    return cells


@pytest.fixture(scope="module")
def shown(book_build) -> list[Shown]:
    """Every figure the session's build showed, with its chapter."""
    assert book_build.returncode == 0, "the book did not build; see tests/test_book.py"
    cells = _executed_cells(book_build)
    figures = []
    for report in sorted(book_build.figures.glob("*.jsonl")):
        for line in report.read_text().splitlines():
            record = json.loads(line)
            chapter, _ = cells.get(record["cell"].strip(), ("?", None))
            figures += [Shown(chapter, record["cell"], f) for f in record["figures"]]
    return figures


def _where(s: Shown) -> str:
    first = next((line for line in s.cell.splitlines() if line.strip() and not line.startswith(("---", "#"))), "")
    return f"{s.chapter}, the cell starting {first[:60]!r}"


@pytest.mark.slow
def test_the_probe_saw_the_figures_of_every_chapter_that_draws(book_build, shown):
    with_images = {chapter for chapter, cell in _executed_cells(book_build).values()
                   if any("image/png" in out.get("data", {}) for out in cell.outputs)}
    assert len(with_images) >= 8, f"expected most chapters to draw figures, found {sorted(with_images)}"
    seen = {s.chapter for s in shown}
    assert "?" not in seen, "a figure was drawn by a cell that is not in any executed chapter"
    assert with_images <= seen, f"figures the probe did not see: {sorted(with_images - seen)}"


@pytest.mark.slow
def test_every_figure_has_a_caption_and_alt_text(book_build):
    assert book_build.returncode == 0, "the book did not build; see tests/test_book.py"
    bare = []
    for source, (chapter, cell) in _executed_cells(book_build).items():
        if not any("image/png" in out.get("data", {}) for out in cell.outputs):
            continue
        meta = cell.metadata.get("mystnb", {})
        if not (meta.get("figure", {}).get("caption", "").strip() and meta.get("image", {}).get("alt", "").strip()):
            bare.append(f"{chapter}: {source.splitlines()[0][:60]!r}")
    assert not bare, "figures without a caption or alt text (mystnb: figure: caption, image: alt):\n" + "\n".join(bare)


@pytest.mark.slow
def test_every_axis_with_numbers_is_labelled(shown):
    missing = [f"{_where(s)}: {', '.join(unlabelled_axes(s.figure))}" for s in shown if unlabelled_axes(s.figure)]
    assert not missing, "axes that show numbers but no label:\n" + "\n".join(missing)


@pytest.mark.slow
def test_no_tick_labels_overlap(shown):
    crowded = [f"{_where(s)}: {overlapping_ticks(s.figure)[:4]}" for s in shown if overlapping_ticks(s.figure)]
    assert not crowded, "figures whose tick labels overlap:\n" + "\n".join(crowded)

