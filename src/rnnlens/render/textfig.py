"""One unit over text as a PNG (matplotlib, Agg): the paper's figure, with a colour bar.

Each character is a cell of a grid coloured by the unit (exact colours of the scale, not the
HTML's levels); newlines end a row and show as an arrow, long lines wrap at `width` columns.
Each row's characters are drawn as one string in DejaVu Sans Mono (shipped with matplotlib): a
fixed advance, measured as rendered (it is rounded to whole pixels), sets the cell width, so the
letters sit on their cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnlens.errors import RnnlensError
from rnnlens.fileio import atomic_write
from rnnlens.render.colours import check_span, display_for, unit_label, unit_values
from rnnlens.trace import Trace

PNG_LIMIT = 20_000  # characters: beyond this a PNG gets too tall to read; use HTML
FONT = "DejaVu Sans Mono"
_SHOWN = {c: chr(0x2400 + c) for c in range(32)}
_SHOWN.update({ord("\n"): "\u21b5", ord("\t"): "\u21e5", ord("\r"): "\u2190", 0x7F: "\u2421"})  # glyphs the font has


def layout(text: str, width: int) -> list[tuple[int, int]]:
    """(row, column) of each character: rows end after a newline or at `width` columns."""
    cells, row, col = [], 0, 0
    for ch in text:
        if col == width:
            row, col = row + 1, 0
        cells.append((row, col))
        col += 1
        if ch == "\n":
            row, col = row + 1, 0
    return cells


def _advance(fig, font_size: float) -> float:
    """The rendered width of one character of FONT in pixels."""
    probe = fig.text(0, 0, "M" * 100, fontfamily=FONT, fontsize=font_size)
    width = probe.get_window_extent(fig.canvas.get_renderer()).width / 100
    probe.remove()
    return width


def plot_unit_text(trace: Trace, name: str, unit: int, start: int = 0, end: int | None = None,
                   path: str | Path = "unit.png", *, width: int = 100, title: str | None = None,
                   font_size: float = 9.0, dpi: int = 150) -> Path:
    """Draw trace.text[start:end] coloured by one unit (cell as tanh(c)) into a PNG at `path`."""
    start, end = check_span(trace, start, end)
    display, raw = unit_values(trace, name, unit, start, end)
    return plot_text_values(trace.text[start:end], raw, name, path, width=width,
                            title=title or unit_label(name, unit, display), font_size=font_size, dpi=dpi)


def plot_text_values(text: str, raw: np.ndarray, name: str, path: str | Path = "unit.png", *, width: int = 100,
                     title: str = "", font_size: float = 9.0, dpi: int = 150) -> Path:
    """Draw `text` with each character on the colour of one unit's stored value `raw` (shown as activation
    `name` is: tanh(c) for a cell) into a PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if len(text) > PNG_LIMIT:
        raise RnnlensError(f"a PNG shows at most {PNG_LIMIT:,} characters ({len(text):,} asked); "
                           "show fewer (--length) or write HTML (--out page.html)")
    if width < 1:
        raise RnnlensError(f"width must be >= 1 column; got {width}")
    display = display_for(name)
    cells = layout(text, width)
    rows = cells[-1][0] + 1
    cols = max(c for _, c in cells) + 1

    image = np.ones((rows, cols, 3))
    r_idx, c_idx = np.array(cells).T
    image[r_idx, c_idx] = display.scale.rgb(display.transform(np.asarray(raw, dtype=np.float32)))
    lines = [[" "] * cols for _ in range(rows)]
    for (r, c), ch in zip(cells, text):
        lines[r][c] = ch.translate(_SHOWN)

    fig = plt.figure(dpi=dpi)
    cell_w = _advance(fig, font_size) / dpi  # inches
    cell_h = 1.55 * font_size / 72
    margin, head, foot = 0.3, 0.45, 0.9  # inches: sides, title, colour bar
    fig_w = max(cols * cell_w + 2 * margin, 4.0, 0.1 * len(title) + 2 * margin)  # the title fits too
    fig_h = rows * cell_h + head + foot
    fig.set_size_inches(fig_w, fig_h)
    ax = fig.add_axes((margin / fig_w, foot / fig_h, cols * cell_w / fig_w, rows * cell_h / fig_h))
    ax.imshow(image, extent=(0, cols, rows, 0), interpolation="nearest", aspect="auto")
    for r, line in enumerate(lines):
        ax.text(0, r + 0.5, "".join(line), fontfamily=FONT, fontsize=font_size, va="center_baseline",
                ha="left", color="#111", parse_math=False)
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    fig.text(margin / fig_w, 1 - 0.28 / fig_h, title, fontsize=11, fontweight="bold", va="center")
    bar = fig.add_axes((margin / fig_w, 0.45 / fig_h, min(3.0, fig_w - 2 * margin) / fig_w, 0.12 / fig_h))
    scale = display.scale
    colourbar = fig.colorbar(ScalarMappable(Normalize(scale.lo, scale.hi), scale.matplotlib_cmap()), cax=bar,
                             orientation="horizontal")
    colourbar.set_ticks([scale.lo, (scale.lo + scale.hi) / 2, scale.hi])
    colourbar.ax.tick_params(labelsize=8)
    colourbar.set_label(display.label, fontsize=8)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
