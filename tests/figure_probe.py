"""An IPython start-up file that reports, for every figure the book shows, what a reader would see.

``tests/conftest.py``'s ``book_build`` copies this file into the start-up folder of a private
IPython profile (``$IPYTHONDIR``) for the book's kernels, and names a folder in
``$BN_FIGURE_REPORT``. Whenever the kernel renders a figure for the page (matplotlib's
``print_figure``, which the inline backend calls), it draws the figure and appends to
``<folder>/<pid>.jsonl`` one line: the source of the cell that drew it and, per axes, the
axis labels, the tick labels shown (their text and their extent on the canvas) and the
title. ``tests/test_figures.py``
judges the report; this file only measures. Nothing happens without ``$BN_FIGURE_REPORT``.
"""

import json
import os
import sys


def _labels(axis, renderer):
    """The tick labels ``axis`` shows: text and window extent ``[x0, y0, x1, y1]``, major and minor."""
    shown = []
    low, high = sorted(axis.get_view_interval())
    for ticks in (axis.get_major_ticks(), axis.get_minor_ticks()):
        for tick in ticks:
            if not (low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low)):
                continue
            for label in (tick.label1, tick.label2):
                if label.get_visible() and label.get_text().strip():
                    box = label.get_window_extent(renderer)
                    shown.append({"text": label.get_text(), "box": [box.x0, box.y0, box.x1, box.y1]})
    return shown


def _describe(figure):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = []
    for ax in figure.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        axes.append({
            "title": ax.get_title(),
            "xlabel": ax.get_xlabel(),
            "ylabel": ax.get_ylabel(),
            "xticks": _labels(ax.xaxis, renderer),
            "yticks": _labels(ax.yaxis, renderer),
            "colorbar": hasattr(ax, "_colorbar"),
        })
    def text(label):
        return label.get_text() if label is not None else ""

    return {"axes": axes, "suptitle": text(figure._suptitle), "supxlabel": text(figure._supxlabel),
            "supylabel": text(figure._supylabel)}


def _install(folder):
    shell = get_ipython()  # noqa: F821 - start-up files run inside IPython
    state = {"cell": "", "patched": False}

    def record(figure):
        with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as out:
            out.write(json.dumps({"cell": state["cell"], "figures": [_describe(figure)]}) + "\n")

    def remember(info):
        """Before each cell: note its source; once matplotlib is loaded, watch its renderings."""
        state["cell"] = info.raw_cell
        bases = sys.modules.get("matplotlib.backend_bases")
        if bases is None or state["patched"]:
            return
        original = bases.FigureCanvasBase.print_figure

        def print_figure(canvas, *args, **kwargs):
            # every figure a page shows is rendered through here (the inline backend's show,
            # and its flush after the cell), in its final state
            record(canvas.figure)
            return original(canvas, *args, **kwargs)

        bases.FigureCanvasBase.print_figure = print_figure
        state["patched"] = True

    shell.events.register("pre_run_cell", remember)


if os.environ.get("BN_FIGURE_REPORT"):
    os.makedirs(os.environ["BN_FIGURE_REPORT"], exist_ok=True)
    _install(os.environ["BN_FIGURE_REPORT"])
