"""`rnnlens viz`: one unit's activation colouring a text, as an HTML page or a PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnlens import names
from rnnlens.errors import RnnlensError
from rnnlens.workflows.inspect import load_rnn


@dataclass
class UnitPicture:
    out: Path
    shown: str          # which characters, in words
    partial: bool       # only part of the text is shown


def unit_picture(run, text: str, unit: str, *, what: str | None = None, start: int = 0, length: int | None = None,
                 strip: bool = False, top: int = 5, width: int = 100, out=None, text_name: str = "the text",
                 unknown: str = "error", replacement: str | None = None, device: str = "cpu") -> UnitPicture:
    """Draw unit 'LAYER:INDEX' of `run` over text[start:start+length] into `out` (.html, or .png without
    the strip). The model reads the text from its beginning, so its state at `start` is the real one."""
    from rnnlens.render.colours import display_for, unit_label
    from rnnlens.render.html import unit_page, write_html
    from rnnlens.render.textfig import plot_unit_text
    lm = load_rnn(run, device, "drawing a unit")
    cfg = lm.config
    layer, index = names.parse_unit(unit, cfg.layers, cfg.size)
    activation = names.resolve_activation(what, cfg.cell)
    run_name = Path(str(run)).name.removesuffix(".safetensors")
    out = Path(out or f"{run_name}-{layer}-{index}-{activation.removeprefix('gate.')}{'-strip' if strip else ''}.html")
    png = out.suffix.lower() == ".png"
    if out.suffix.lower() not in (".html", ".htm", ".png"):
        raise RnnlensError(f"--out {out} must end in .html or .png")
    if png and strip:
        raise RnnlensError("the prediction strip is drawn as HTML only; use --out with .html, or drop --strip")
    if strip and not 1 <= top <= len(lm.vocab):
        raise RnnlensError(f"--top must be 1..{len(lm.vocab)} (the vocabulary size); got {top}")
    if width < 1:
        raise RnnlensError(f"--width must be >= 1 column; got {width}")
    length = length if length is not None else 400 if strip else 2000 if png else 10_000
    if length < 1:
        raise RnnlensError(f"--length must be >= 1; got {length}")
    if not 0 <= start < len(text):
        raise RnnlensError(f"--start {start} is outside {text_name}, which has {len(text):,} characters")
    end = min(len(text), start + length)
    # only the arrays the picture needs are kept, and the model stops at the span's end
    name = names.name(layer, activation)
    trace = lm.trace(text[:end], names=[name, "probs"] if strip else [name], unknown=unknown,
                     replacement=replacement)
    # With --unknown drop the trace is shorter than the text: the span is its last characters.
    shown = len(lm.vocab.encode(text[start:end], unknown=unknown, replacement=replacement))
    if shown == 0:
        raise RnnlensError(f"characters {start}..{end} hold none the model knows; choose another --start")
    first = len(trace) - shown
    title = f"{run_name}: {unit_label(name, index, display_for(name))}"
    where = f"characters {start:,}\u2013{end:,} of {len(text):,}"
    if png:
        plot_unit_text(trace, name, index, first, len(trace), out, width=width, title=title)
    else:
        subtitle = f"{text_name}, {where} \u00b7 {cfg.cell.upper()} {cfg.layers}x{cfg.size} from {lm.path}"
        write_html(out, unit_page(trace, name, index, first, len(trace), title=title, subtitle=subtitle,
                                  strip=strip, top=top, note=where))
    return UnitPicture(out, where, end - start < len(text))
