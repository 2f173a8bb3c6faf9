"""support.display: bands around mean curves, HTML tables, integer ticks."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from support.display import band, html_table, integer_ticks

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def test_band_draws_the_mean_and_a_one_sd_band():
    fig, ax = plt.subplots()
    line = band(ax, [1, 2], [[1.0, 2.0], [3.0, 4.0]], label="runs")
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0])
    (area,) = ax.collections
    heights = area.get_paths()[0].vertices[:, 1]
    sd = np.sqrt(2)  # of (1, 3) and of (2, 4)
    assert heights.min() == pytest.approx(2.0 - sd) and heights.max() == pytest.approx(3.0 + sd)
    assert area.get_facecolor()[0][:3] == pytest.approx(matplotlib.colors.to_rgb(line.get_color()))
    plt.close(fig)


def test_html_table_escapes_its_cells():
    table = html_table(["variant", "accuracy"], [["<b>", "0.9 ± 0.1"]]).data
    assert "<th>variant</th>" in table and "<td>&lt;b&gt;</td>" in table and "0.9 ± 0.1" in table


def test_integer_ticks_have_no_halves():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0, 1, 0])
    integer_ticks(ax.xaxis)
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)
