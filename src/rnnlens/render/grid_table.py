"""The grid's table of test losses as Markdown and as a self-contained HTML page.

Both show the paper's layout (Karpathy et al. 2015, Table 1): a row per cell type and depth, a
column per size, test cross-entropy in nats/char; the best cell in bold; the n-gram baseline
under the table. The data comes from rnnlens.analysis.grid_results.GridTable.
"""

from __future__ import annotations

import math
from html import escape

from rnnlens.analysis.grid_results import GridTable

LN2 = math.log(2)


def _cell_text(table: GridTable, r: int, c: int) -> str:
    v = table.loss[r, c]
    if math.isnan(v):
        return table.status[r][c]
    return f"{v:.3f}"


def _column_heading(table: GridTable, c: int) -> str:
    return f"{table.columns[c]}"


def _caption(table: GridTable) -> str:
    what = "test cross-entropy, nats/char (lower is better)"
    if table.corpus:
        what = f"{table.corpus}: {what}"
    if table.test_chars:
        what += f", over {table.test_chars:,} test characters"
    columns = ("columns: the LSTM width; GRU and RNN widths chosen to match the LSTM's parameter count "
               "at the same depth (width in brackets)" if table.match_params else "columns: the width of every cell type")
    return f"{what}. {columns}."


def _ngram_line(table: GridTable) -> str | None:
    if table.ngram_loss is None:
        return None
    return (f"{table.ngram_order}-gram (Kneser-Ney): {table.ngram_loss:.3f} nats/char "
            f"({table.ngram_loss / LN2:.3f} bits/char)")


def table_markdown(table: GridTable) -> str:
    """A Markdown table; a matched cell whose width differs from its column shows it in brackets."""
    best = table.best()
    head = "| model | " + " | ".join(_column_heading(table, c) for c in range(len(table.columns))) + " |"
    lines = [f"Test loss: {_caption(table)}", "", head, "|---|" + "---:|" * len(table.columns)]
    for r in range(len(table.rows)):
        cells = []
        for c in range(len(table.columns)):
            text = _cell_text(table, r, c)
            if best == (r, c):
                text = f"**{text}**"
            if table.width[r, c] and table.width[r, c] != table.columns[c]:
                text += f" ({table.width[r, c]})"
            cells.append(text)
        lines.append(f"| {table.row_label(r)} | " + " | ".join(cells) + " |")
    ngram = _ngram_line(table)
    if ngram:
        lines += ["", ngram]
    if best is not None:
        r, c = best
        lines += ["", (f"Best: {table.row_label(r)}, column {table.columns[c]}: {table.loss[r, c]:.3f} nats/char "
                       f"({table.loss[r, c] / LN2:.3f} bits/char).")]
    return "\n".join(lines) + "\n"


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:24px}
table{border-collapse:collapse;margin:12px 0}
th,td{padding:5px 12px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #888}
td.best{font-weight:700;background:#e8f3e8}
td.missing{color:#a33}
small{color:#777}
p.cap{color:#555;max-width:60em}
"""


def table_html(table: GridTable, title: str = "Experiment grid") -> str:
    """A whole page (no external resources): the table, the n-gram baseline, parameter counts on hover."""
    best = table.best()
    head = "".join(f"<th>{escape(_column_heading(table, c))}</th>" for c in range(len(table.columns)))
    body = []
    for r in range(len(table.rows)):
        tds = []
        for c in range(len(table.columns)):
            v = table.loss[r, c]
            classes = ["best"] if best == (r, c) else ([] if not math.isnan(v) else ["missing"])
            tip = f"width {table.width[r, c]}, {table.params[r, c]:,} parameters"
            if not math.isnan(v):
                tip += f", {v / LN2:.3f} bits/char"
            width = (f" <small>({table.width[r, c]})</small>"
                     if table.width[r, c] and table.width[r, c] != table.columns[c] else "")
            cls = f" class={' '.join(classes)}" if classes else ""
            tds.append(f"<td{cls} title='{escape(tip)}'>{escape(_cell_text(table, r, c))}{width}</td>")
        body.append(f"<tr><td>{escape(table.row_label(r))}</td>{''.join(tds)}</tr>")
    ngram = _ngram_line(table)
    foot = (f"<tfoot><tr><td>{table.ngram_order}-gram</td><td colspan={len(table.columns)}>"
            f"{table.ngram_loss:.3f}</td></tr></tfoot>" if ngram else "")
    parts = [f"<h1>{escape(title)}</h1>", f"<p class=cap>{escape(_caption(table))}</p>",
             f"<table><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody>{foot}</table>"]
    if ngram:
        parts.append(f"<p>{escape(ngram)}</p>")
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
