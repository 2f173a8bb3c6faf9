"""The book's logo and favicon, drawn from one equation: the standard normal density.

    phi(z) = exp(-z^2 / 2) / sqrt(2 pi)

is what batch norm makes of every feature (mean 0, variance 1, before gamma and beta). The
icon is that bell on a blue tile, the band -1 <= z <= 1 (about 68 % of the mass) in amber, so
that it still reads as a bell at 16 px. The same polygons give both files:

- ``logo.svg``: the vector logo, shown at the top of the sidebar (``logo`` in ``_config.yml``);
- ``favicon.ico``: 16, 32 and 48 px, rasterized here with Pillow at 8x and downsampled
  (``html.favicon``), for every browser including those without SVG favicons.

Both are committed; run ``.venv/bin/python book/_static/make_icons.py`` after changing this
file (``tests/test_publish.py`` checks that the committed files are what it draws).
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 64  #: the drawing's own units: a 64 x 64 tile
TILE, BAND, BELL = "#1d4f91", "#f5b82e", "#ffffff"
RADIUS = 12  #: the tile's corner radius
Z_MAX = 3.2  #: the curve spans -Z_MAX <= z <= Z_MAX ...
LEFT, RIGHT = 5.0, 59.0  #: ... across these x
BASE, PEAK = 52.0, 11.0  #: the baseline's y and the peak's y (SVG's y grows downwards)
STEPS = 64
FAVICON_SIZES = (16, 32, 48)


def phi(z: float) -> float:
    """The standard normal density, scaled to 1 at its peak (z = 0)."""
    return math.exp(-0.5 * z * z)


def x_of(z: float) -> float:
    return LEFT + (z + Z_MAX) / (2 * Z_MAX) * (RIGHT - LEFT)


def area(z0: float, z1: float) -> list[tuple[float, float]]:
    """The region under the bell between z0 and z1, as a closed polygon of (x, y)."""
    n = max(2, round(STEPS * (z1 - z0) / (2 * Z_MAX)))
    top = [(x_of(z), BASE - (BASE - PEAK) * phi(z)) for z in (z0 + (z1 - z0) * i / n for i in range(n + 1))]
    return [(x_of(z0), BASE), *top, (x_of(z1), BASE)]


def shapes() -> list[tuple[str, list[tuple[float, float]]]]:
    """What is drawn on the tile, in order: the whole bell, then the band within one sigma."""
    return [(BELL, area(-Z_MAX, Z_MAX)), (BAND, area(-1.0, 1.0))]


def svg() -> str:
    def path(points):
        return "M" + " L".join(f"{x:.2f},{y:.2f}" for x, y in points) + " Z"

    body = "\n".join(f'  <path fill="{color}" d="{path(points)}"/>' for color, points in shapes())
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SIZE} {SIZE}" width="{SIZE}" height="{SIZE}">\n'
        "  <title>Batch Normalization: the standard normal density</title>\n"
        f'  <rect width="{SIZE}" height="{SIZE}" rx="{RADIUS}" fill="{TILE}"/>\n'
        f"{body}\n"
        "</svg>\n"
    )


def raster(pixels: int, oversample: int = 8) -> Image.Image:
    """The icon as an RGBA image of ``pixels`` x ``pixels``."""
    big = pixels * oversample
    scale = big / SIZE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=RADIUS * scale, fill=TILE)
    for color, points in shapes():
        draw.polygon([(x * scale, y * scale) for x, y in points], fill=color)
    return image.resize((pixels, pixels), Image.Resampling.LANCZOS)


def favicon() -> bytes:
    out = io.BytesIO()
    # each size drawn at its own resolution (Pillow would otherwise shrink the largest one)
    images = [raster(s) for s in sorted(FAVICON_SIZES, reverse=True)]
    images[0].save(out, format="ICO", sizes=[(s, s) for s in FAVICON_SIZES], append_images=images[1:])
    return out.getvalue()


def write(folder: Path = HERE) -> list[Path]:
    """Write ``logo.svg`` and ``favicon.ico`` into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    logo, icon = folder / "logo.svg", folder / "favicon.ico"
    logo.write_text(svg())
    icon.write_bytes(favicon())
    return [logo, icon]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write them (default: beside this file)")
    for path in write(parser.parse_args().out):
        print(path)
