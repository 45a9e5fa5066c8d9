"""The report page: a list of section builders and the page that holds them.

Each builder is a function `(ctx) -> Section | None` (ctx: rnnlens.report.ReportContext, which holds
the model, the text, its one trace, the run folder and the options, and caches the plain data the
sections share). A builder returns a Section with a heading, two plain sentences on what the picture
means, and its HTML; or a Section with a `note` when it cannot be drawn for this model (a plain RNN
has no gates) or this version (an analysis module that is not there); or None to leave it out.
SECTIONS is the order of the page: add a builder there to add a section.

The page is one self-contained file: figures are matplotlib SVGs inlined as data: URIs, the text
views are the HTML/CSS/JS of rnnlens.render.html, and nothing is fetched from anywhere.
"""

from __future__ import annotations

import base64
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rnnlens.errors import RnnlensError
from rnnlens.render.html import assets, escape, strip_fragment, unit_fragment, write_html


@dataclass
class Section:
    """One part of the report: `explanation` is plain text (two sentences), `body` is HTML."""

    id: str
    title: str
    explanation: str
    body: str = ""
    note: str | None = None   # why the section is empty or partial (e.g. 'not available: ...')
    seconds: float = 0.0      # time its builder took

    def html(self, number: int | None = None) -> str:
        heading = f"{number}. {escape(self.title)}" if number else escape(self.title)
        note = f"<p class=rlr-note>{escape(self.note)}</p>" if self.note else ""
        return (f"<section class=rlr-sec id={self.id}><h2>{heading}</h2>"
                f"<p class=rlr-why>{escape(self.explanation)}</p>{note}{self.body}</section>")

    def _repr_html_(self) -> str:  # Jupyter
        return f"<style>{CSS}</style>{assets()}<div class=rlr>{self.html()}</div>"


@dataclass
class Report:
    """The whole report: `html()` the page, `save(path)` writes it, and Jupyter shows it inline."""

    title: str
    subtitle: str
    sections: list[Section]
    footer: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def _toc(self) -> str:
        items = "".join(f"<li><a href='#{s.id}'>{n}. {escape(s.title)}</a></li>" for n, s in enumerate(self.sections, 1))
        return f"<nav class=rlr-toc><div class=rlr-brand>rnnlens report</div><ol>{items}</ol></nav>"

    def _main(self) -> str:
        sections = "".join(s.html(n) for n, s in enumerate(self.sections, 1))
        return (f"<main class=rlr-main><header><h1>{escape(self.title)}</h1><p class=rlr-sub>{escape(self.subtitle)}"
                f"</p></header>{sections}<footer class=rlr-foot>{escape(self.footer)}</footer></main>")

    def html(self) -> str:
        return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
                f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{escape(self.title)}</title>"
                f"<style>{CSS}</style>{assets()}</head>\n<body class='rlr rlr-page'>{self._toc()}{self._main()}"
                f"</body></html>\n")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise RnnlensError(f"the report is an HTML page: --out {path} must end in .html")
        return write_html(path, self.html())

    def _repr_html_(self) -> str:  # Jupyter: the same sections, the contents as a list on top
        return f"<style>{CSS}</style>{assets()}<div class=rlr>{self._toc()}{self._main()}</div>"


_MONO = '"DejaVu Sans Mono",Menlo,Consolas,"Liberation Mono",monospace'
CSS = f"""
body.rlr-page{{margin:0;background:#f5f5f2}}
.rlr{{font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif;color:#1f2328}}
.rlr a{{color:#2a5db0}}
.rlr-toc{{font-size:14px;margin:0 0 16px}}
.rlr-toc ol{{list-style:none;padding:0;margin:0}}
.rlr-toc a{{display:block;padding:4px 10px;border-radius:5px;color:#333;text-decoration:none}}
.rlr-toc a:hover{{background:#e8eef8;color:#1a3f7a}}
.rlr-brand{{font-weight:700;font-size:15px;padding:0 10px 10px;color:#444;letter-spacing:.02em}}
.rlr-page .rlr-toc{{position:fixed;top:0;left:0;bottom:0;width:220px;box-sizing:border-box;overflow-y:auto;
  padding:20px 10px;margin:0;background:#fff;border-right:1px solid #e2e2dd}}
.rlr-page .rlr-main{{margin-left:220px;padding:24px 32px 48px;max-width:980px}}
@media (max-width:880px){{.rlr-page .rlr-toc{{position:static;width:auto;border:0}}
  .rlr-page .rlr-main{{margin-left:0;padding:12px}}}}
.rlr h1{{font-size:25px;line-height:1.25;margin:0 0 4px}}
.rlr h2{{font-size:19px;margin:0 0 6px}}
.rlr h3{{font-size:15.5px;margin:0 0 2px}}
.rlr-sub{{color:#555;margin:0 0 20px}}
.rlr-sec{{background:#fff;border:1px solid #e4e4df;border-radius:8px;padding:16px 22px 18px;margin:0 0 18px;
  scroll-margin-top:12px}}
.rlr-why{{color:#3d434a;margin:0 0 12px;max-width:760px}}
.rlr-note{{background:#fff8e1;border-left:3px solid #e0b400;padding:6px 10px;color:#5b4a00;margin:8px 0;
  font-size:14px}}
.rlr-cap{{color:#444;font-size:14px;margin:0 0 6px}}
.rlr-small{{color:#666;font-size:13px}}
.rlr table{{border-collapse:collapse;font-size:14px;margin:6px 0 10px}}
.rlr th{{text-align:left;font-weight:600;color:#444;border-bottom:1px solid #ccc;padding:4px 14px 4px 0}}
.rlr td{{padding:3px 14px 3px 0;border-bottom:1px solid #eee;vertical-align:top}}
.rlr td.n{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}
.rlr figure{{margin:8px 0 4px}}
.rlr figure img{{max-width:100%;height:auto;display:block}}
.rlr-card{{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px;margin:4px 0 10px}}
.rlr-card>div{{background:#f6f7f9;border-radius:6px;padding:8px 12px}}
.rlr-card b{{display:block;font-size:18px;font-weight:600}}
.rlr-card span{{color:#5f6670;font-size:12.5px}}
.rlr-sample{{margin:0 0 12px}}
.rlr-sample pre{{font:13px/1.5 {_MONO};white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0 0;background:#fbfbfa;
  border:1px solid #e2e2dd;border-radius:6px;padding:8px 10px;max-height:240px;overflow-y:auto}}
.rlr-prime{{color:#8a8f96;background:#eef0f2}}
.rlr-bars{{display:grid;grid-template-columns:max-content 1fr max-content;gap:5px 12px;align-items:center;
  max-width:760px;font-size:14px;margin:6px 0 10px}}
.rlr-bars>i{{display:block;height:14px;border-radius:3px;background:#7fa3d6}}
.rlr-bars>i.model{{background:#3c82e6}}
.rlr-bars>i.ref{{background:#c9ccd1}}
.rlr-bars>span.n{{font-variant-numeric:tabular-nums;text-align:right}}
.rlr-unitbox{{border-top:1px solid #eee;padding-top:12px;margin-top:14px;scroll-margin-top:12px}}
.rlr details{{margin:6px 0 0}}
.rlr summary{{cursor:pointer;color:#2a5db0;font-size:14px}}
.rlr-foot{{color:#777;font-size:12.5px;margin-top:24px}}
"""


# ---------------------------------------------------------------------------------------------
# Helpers


def figure(draw: Callable[[Path], Path], alt: str) -> str:
    """A matplotlib figure as an inline SVG image: draw(path) writes it to `path` (a .svg)."""
    import matplotlib
    matplotlib.use("Agg")
    with matplotlib.rc_context({"svg.hashsalt": "rnnlens", "svg.fonttype": "path"}), \
            tempfile.TemporaryDirectory(prefix="rnnlens-fig-") as folder:
        path = draw(Path(folder) / "figure.svg")
        data = Path(path).read_bytes()
    return (f"<figure><img alt='{escape(alt)}' src='data:image/svg+xml;base64,"
            f"{base64.b64encode(data).decode('ascii')}'></figure>")


def _num(x, digits: int = 3) -> str:
    return "\u2013" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _count(n) -> str:
    return "\u2013" if n is None else f"{n:,}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K" if n >= 1e4 else f"{n:,}"


def _duration(seconds) -> str:
    if seconds is None:
        return "\u2013"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _tiles(tiles: list[tuple[str, str]]) -> str:
    return "<div class=rlr-card>" + "".join(f"<div><b>{escape(v)}</b><span>{escape(k)}</span></div>"
                                            for k, v in tiles) + "</div>"


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------------------
# Sections


def model_card_section(ctx) -> Section:
    card = ctx.model_card
    kind = f"{card['cell'].upper()} {card['layers']} \u00d7 {card['size']}"
    corpus = Path(card["corpus"]).name if card["corpus"] else "unknown"  # a file's name, not its whole path
    corpus_label = f"corpus, {card['corpus_chars']:,} characters" if card["corpus_chars"] else "corpus"
    trained = _duration(card["train_seconds"])
    steps = f"{card['steps']:,} steps" if card["steps"] is not None else "steps unknown"
    if card["epochs"] is not None:
        steps += f", {card['epochs']:.2f} epochs"
    best = card["best_val_loss"]
    tiles = [("cell type, layers \u00d7 units", kind), ("parameters", _params(card["parameters"])),
             (corpus_label, corpus), ("vocabulary", f"{card['vocab']} characters"),
             (f"training time ({steps})", trained),
             (f"best validation loss ({_num(best / math.log(2) if best is not None else None, 2)} bits/char"
              + (f", step {card['best_step']:,})" if card["best_step"] is not None else ")"), f"{_num(best)} nats/char")]
    settings = [f"{k} {card[k]}" for k in ("optimizer", "lr", "batch_size", "seq_len", "dropout", "input")
                if card.get(k) is not None]
    if card.get("dropout_on_plateau"):  # the dropout waited for a validation that did not improve
        came = card["dropout_from"]
        when = f"from step {came:,}" if came is not None else "on plateau (it never came on)"
        settings = [f"dropout {card['dropout']:g} {when}" if k.startswith("dropout ") else k for k in settings]
    elif card.get("dropout_from") is not None:  # a wide gap raised the dropout (--wide-gap-dropout)
        settings = [f"dropout {card['model_dropout']:g}, {card['dropout']:g} from step {card['dropout_from']:,}"
                    if k.startswith("dropout ") else k for k in settings]
    body = _tiles(tiles) + (f"<p class=rlr-small>settings: {escape(', '.join(settings).replace('_', ' '))} \u00b7 "
                            f"checkpoint {escape(card['checkpoint'] or '(in memory)')}</p>")
    return Section("model", "Model card",
                   "What was trained: the kind of recurrent cell, how many layers of how many units, and what text it "
                   "read. The validation loss is the model's average surprise at held-out text, in nats per character "
                   "(lower is better); in bits it is about how many yes/no questions per character it still needs.",
                   body)


def training_section(ctx) -> Section:
    why = ("The loss on the training text (blue) and on held-out validation text (orange) as training went on. "
           "While both fall the model is still learning; when the validation curve flattens or turns up while the "
           "training curve keeps falling, the model has started to memorise instead of generalise.")
    if ctx.metrics_path is None or not ctx.metrics:
        return Section("training", "Training curves", why, note="not available: there is no metrics.jsonl beside "
                       "this checkpoint (it is written in the run folder by rnnlens train)")
    if any("dropout" in r for r in ctx.metrics):
        why += (" The dotted line is where the run's dropout came on or rose (--dropout-on-plateau: at the first "
                "validation that did not improve; --wide-gap-dropout: at the first that lay far above the training "
                "loss); the training loss steps up there because more of the network is now dropped at random in "
                "training, not because the model got worse.")
    if any("rolled_back_from" in r for r in ctx.metrics):
        why += (" The faded dashed line is training the run undid: a non-finite or climbing loss made it go back to "
                "an earlier checkpoint and go on at half the learning rate (Recovery, in docs/training.md).")
    kept_mean = next((r for r in ctx.metrics if "averaged" in r), None)
    if kept_mean is not None:
        why += (f" The star is the validation of the mean of the weights over the last {kept_mean['averaged']:,} "
                "updates: it read lower than the last update's weights, so the run kept the mean as its final "
                "model (--average-fraction).")
    from rnnlens.render.plots import plot_loss_curve
    return Section("training", "Training curves", why,
                   figure(lambda p: plot_loss_curve(ctx.metrics, p), "training and validation loss by step"))


def samples_section(ctx) -> Section:
    parts = []
    for t, prime, text in ctx.samples:
        parts.append(f"<div class=rlr-sample><h3>temperature {t:g}</h3><pre><span class=rlr-prime>{escape(prime)}"
                     f"</span>{escape(text)}</pre></div>")
    o = ctx.options
    return Section("samples", "Samples",
                   "Here the model writes on its own, one character at a time, each drawn from its prediction and fed "
                   "back in as the next input. Temperature sharpens or flattens those predictions: at 0.5 it plays "
                   "safe and repeats its favourite patterns, at 1.0 it samples what it really believes, more varied "
                   "and with more mistakes.",
                   f"<p class=rlr-cap>{o.sample_length} characters each after the grey prime from the text, seed "
                   f"{o.seed} (the same seed gives the same text).</p>" + "".join(parts))


def test_loss_section(ctx) -> Section:
    loss = ctx.text_loss
    card = ctx.model_card
    rows = [("this model on the report's text", loss["loss"], "model")]
    ev = ctx.eval_info
    if isinstance(ev.get("loss_nats"), (int, float)):
        rows.append((f"this model on the whole {ev.get('split', 'test')} split ({_count(ev.get('chars'))} chars)",
                     ev["loss_nats"], "model"))
    if card["best_val_loss"] is not None:
        rows.append(("this model on the validation split (best, during training)", card["best_val_loss"], "model"))
    rows.append((f"guessing uniformly among {ctx.trace.vocab_size} characters (ln {ctx.trace.vocab_size})",
                 loss["uniform"], "ref"))
    top = max(r[1] for r in rows) or 1.0
    bars = "".join(f"<span>{escape(label)}</span><i class={cls} style='width:{100 * v / top:.1f}%'></i>"
                   f"<span class=n>{_num(v)} nats \u00b7 {_num(v / math.log(2), 2)} bits</span>"
                   for label, v, cls in rows)
    body = (f"<div class=rlr-bars>{bars}</div><p class=rlr-small>report text: {loss['chars']:,} predicted characters "
            f"({escape(ctx.text_source)}); median loss {_num(loss['median'])} nats; the model gives the true next "
            f"character less than even odds (an error in the paper's sense) at {100 * loss['errors']:.1f}% of them."
            "</p>")
    return Section("test-loss", "Test loss",
                   "How surprised the model is, on average, by each next character of text it did not train on: "
                   "the mean of \u2212ln p(true next character), in nats, with bits (nats / ln 2) beside it. A model "
                   f"that guessed blindly among its {ctx.trace.vocab_size} characters would score "
                   f"{loss['uniform']:.2f} nats; everything below that is structure the model has learned.", body)


def units_section(ctx) -> Section:
    why = ("Each unit below is one number inside the network, drawn as the colour behind every character after the "
           "model has read it: red for \u22121, white for 0, blue for +1. Nobody told the network about quotes, "
           "brackets or line lengths; these are the units whose values follow such a feature of the text most "
           "closely, and the strip under each shows what the model expected to come next.")
    pairs = ctx.gallery
    scores = ctx.cells
    min_strength = ctx.options.min_strength
    rows, absent = [], []
    effects, effects_note = _causal_effects(ctx)
    for f in scores.features:
        best = scores.best(f.name, 1)
        if not best:
            absent.append(f.name)
            continue
        u = best[0]
        score = f"r {u.score:+.2f}" if u.metric == "r" else f"AUC {u.score:.3f} {'on' if u.sign > 0 else 'off'}"
        shown = next((n for n, (s, _) in enumerate(pairs) if s == u and s.strength >= min_strength and s.visible),
                     None)
        why_not = "" if shown is not None else " <span class=rlr-small>(weak)</span>" if u.visible else \
            " <span class=rlr-small>(no visible unit: the best one shifts too little to see)</span>"
        label = f"<a href='#unit-{shown}'>{escape(u.label)}</a>" if shown is not None else escape(u.label) + why_not
        rows.append([escape(f.name), label, score, _num(u.contrast, 2), _effect(effects, u), escape(f.description)])
    table = _table(["feature", "best unit (layer:index kind)", "score", "contrast", "loss change when ablated",
                    "what the feature is"], rows, numeric={3, 4})
    share = ", ".join(f"layer {row['layer']} {row['kind']}: {row['tracking']} of {row['units']} "
                      f"({100 * row['share']:.0f}%)" for row in scores.interpretable(min_strength))
    table += (f"<p class=rlr-small>Contrast: how far the unit's colour moves with the feature (the mean inside minus "
              f"outside, or the change across the feature's typical range, on the \u22121..+1 scale); units that "
              f"move less than {scores.min_contrast:g} are ranked after those that visibly switch. Units that "
              f"track some feature (score \u2265 {min_strength:g} and contrast \u2265 {scores.min_contrast:g}): "
              f"{escape(share)}.</p>")
    table += f"<p class=rlr-small>{effects_note}</p>"
    if absent:
        table += f"<p class=rlr-small>Not in this text (never changes over it): {escape(', '.join(absent))}.</p>"
    panels = []
    strip_chars = ctx.options.strip_chars
    for n, (score, entry) in enumerate(pairs):
        if score.strength < min_strength or not score.visible:
            continue
        strip_end = min(entry.end, entry.start + strip_chars)
        panels.append(
            f"<div class=rlr-unitbox id=unit-{n}><h3>{escape(entry.title)}</h3><p class=rlr-cap>{escape(entry.caption)}"
            f"</p>{unit_fragment(ctx.trace, entry.name, entry.unit, entry.start, entry.end, title='')}"
            f"<details{' open' if not panels else ''}><summary>prediction strip: the model's top 5 guesses for the "
            f"next character, under each of the first {strip_end - entry.start} characters</summary>"
            f"{strip_fragment(ctx.trace, entry.name, entry.unit, entry.start, strip_end, top=5, title='')}"
            f"</details></div>")
    note = None if panels else (f"no unit follows any of these features strongly here (|r| or 2|AUC \u2212 0.5| "
                                f"\u2265 {min_strength:g}); a longer-trained model or a longer --text may show some")
    kinds = sorted({a.split(".", 1)[1] for a in scores.activations})
    intro = (f"<p class=rlr-cap>{len(scores.activations) * scores.size:,} units ({', '.join(kinds)}; cells as "
             f"tanh(c)) scored against {len(scores.features)} features over {scores.chars:,} characters: r is the "
             "correlation with a numeric feature, AUC (0.5 = chance, 1 = perfect) how well the unit separates "
             "characters inside an on/off feature from those outside. Hover a character for its exact value.</p>")
    return Section("units", "Interpretable units", why, intro + table + "".join(panels), note=note)


def _causal_effects(ctx) -> tuple:
    """(CausalEffects or None, the sentence under the table that says what the column measured)."""
    try:
        effects = ctx.causal_effects
    except RnnlensError as e:
        return None, escape(f"Loss change when ablated: not measured ({e}).")
    if effects is None:
        return None, "Loss change when ablated: not measured (--ablate-chars 0)."
    return effects, (
        f"Loss change when ablated: each unit set to zero inside the model (it stays zero as the model reads on), "
        f"over the first {effects.chars + 1:,} characters of the text; the mean change in loss, nats per character, "
        f"at the characters where its feature is on (numeric features: above zero). Positive: the feature's "
        f"characters got harder to predict without the unit, evidence that the model uses it; near zero: the unit "
        f"follows the feature but the model does not need it there. Under it: the change where the feature "
        f"switches on or off (an opening or closing quote, a bracket, a newline), and over every character.")


def _effect(effects, u) -> str:
    """One cell of the table: the loss change on the feature, the switches and all characters under it."""
    e = effects.find(u.feature, u.layer, u.kind, u.unit) if effects is not None else None
    if e is None:
        return "\u2013"
    on = f"{e.change_on:+.3f}" if math.isfinite(e.change_on) else "\u2013 <span class=rlr-small>(not on)</span>"
    switch = f"{e.change_switch:+.3f}" if math.isfinite(e.change_switch) else "\u2013"
    return (f"{on}<br><span class=rlr-small title='{e.chars_on:,} characters on, {e.chars_switch:,} switches'>"
            f"switch {switch} \u00b7 all {e.change_all:+.3f}</span>")


def _gates_note(ctx, what: str) -> str | None:
    if ctx.gated:
        return None
    return (f"not available for a plain {ctx.config.cell.upper()}: it has no gates, so no {what}; "
            "see the gradient flow below for how long its memory lasts")


def saturation_section(ctx) -> Section:
    why = ("Each dot is one gate unit: how often it is almost shut (below 0.1, along the bottom) and how often "
           "almost wide open (above 0.9, up the side). Forget gates high up are integrators that carry their memory "
           "over long stretches; the paper found almost no forget gates that are mostly shut, and much less "
           "saturation in the first layer than in deeper ones.")
    note = _gates_note(ctx, "saturation")
    if note:
        return Section("saturation", "Gate saturation", why, note=note)
    from rnnlens.render.plots import plot_saturation
    sat = ctx.saturation
    if sat.cell == "gru":
        why += (" For a GRU the update gate is drawn as the paper's z, the weight of the new candidate "
                "(h = (1 \u2212 z) h_prev + z h~): mostly open means the unit mostly rewrites itself.")
    rows = [[str(r["layer"]), escape(r["gate"]), _num(r["mean_left"]), _num(r["mean_right"]),
             f"{r['mostly_left']}/{r['units']}", f"{r['mostly_right']}/{r['units']}"] for r in sat.summary()]
    table = _table(["layer", "gate", "time shut (mean)", "time open (mean)", "units mostly shut",
                    "units mostly open"], rows, numeric={2, 3, 4, 5})
    fig = figure(lambda p: plot_saturation(sat, p, title=f"gate saturation over {sat.chars:,} characters"),
                 "gate saturation scatter, one panel per layer")
    return Section("saturation", "Gate saturation", why, fig + table)


def timescales_section(ctx) -> Section:
    why = ("At every character an LSTM cell keeps the fraction f of its memory that its forget gate says, so a gate "
           "at 0.9 keeps 0.9\u00b9\u2070 = 0.35 after ten characters and half after about 6.6. The histogram turns "
           "each unit's average gate into that half-life: units to the right remember for tens or hundreds of "
           "characters, units to the left only for a few.")
    note = _gates_note(ctx, "forget or update gate to read memory from")
    if note:
        return Section("timescales", "Memory time constants", why, note=note)
    from rnnlens.render.plots import plot_half_lives
    ts = ctx.timescales
    if ts.cell == "gru":
        why = why.replace("an LSTM cell", "a GRU unit").replace(
            "the fraction f of its memory that its forget gate says", "the fraction 1 \u2212 z of its memory, z being "
            "its update gate in the paper's convention (h = (1 \u2212 z) h_prev + z h~)").replace("a gate at 0.9",
                                                                                            "a keep fraction of 0.9")
    rows = []
    for r in ts.summary():
        a, g = r["half_life"], r["half_life_geometric"]
        fmt = (lambda v: "\u221e" if v is None else f"{v:.3g}")
        rows.append([str(r["layer"]), _num(r["mean_gate"]), fmt(a["median"]), fmt(g["median"]),
                     f"{a['over_10']}/{r['units']}", f"{a['over_100']}/{r['units']}"])
    table = _table(["layer", f"mean {ts.gate}" + (" (keep fraction)" if ts.cell == "gru" else " gate"), "median half-life (chars)", "same, from the geometric mean",
                    "units over 10 chars", "over 100"], rows, numeric={1, 2, 3, 4, 5})
    fig = figure(lambda p: plot_half_lives(ts, p, title=f"memory half-lives over {ts.chars:,} characters"),
                 "histogram of memory half-lives per layer")
    return Section("timescales", "Memory time constants", why, fig + table)


def gradients_section(ctx) -> Section:
    why = ("To learn, the error at one character sends a signal back to every character before it; this shows how "
           "strong that signal still is k characters back, on a log scale. A straight falling line is the "
           "vanishing gradient, which stops a plain RNN from learning about anything far back; an LSTM's cell "
           "carries the signal further.")
    from rnnlens.render.plots import plot_gradient_flow
    flow = ctx.gradient_flow
    if flow is None:
        return Section("gradients", "Gradient flow", why, note=f"the text is too short ({len(ctx.trace.text)} "
                       "characters) to follow gradients back 5 characters or more")
    max_lag = ctx.gradient_max_lag
    decay = ctx.gradient_decay
    fig = figure(lambda p: plot_gradient_flow([flow], p), "gradient norm against lag")
    said = ""
    if decay is not None:
        trend = "shrinks" if decay < 1 else "grows"
        said = (f"<p class=rlr-small>Averaged over {len(flow.positions)} positions, the signal to the input {trend} "
                f"by a factor {decay:.3f} per character from lag 1 to lag {max_lag}: "
                f"{decay:.3f}<sup>{max_lag - 1}</sup> = {decay ** (max_lag - 1):.2g}.</p>")
    return Section("gradients", "Gradient flow", why, fig + said)


def ngram_section(ctx) -> Section:
    why = ("The same text scored by n-gram models, which predict the next character from counts of the last "
           "n\u22121 characters seen in training (interpolated Kneser-Ney). Where the network does better than the "
           "longest n-gram, it is using context that no fixed window of characters sees.")
    note = ctx.ngram_note
    if note:
        return Section("ngram", "Beside n-gram baselines", why, note=note)
    model = ctx.predictions
    rows = [(f"this model ({ctx.run_name})", model.loss, "model")]
    rows += [(f"{k}-gram", p.loss, "ref") for k, p in sorted(ctx.ngram_predictions.items(), reverse=True)]
    top = max(v for _, v, _ in rows) or 1.0
    bars = "".join(f"<span>{escape(label)}</span><i class={cls} style='width:{100 * v / top:.1f}%'></i>"
                   f"<span class=n>{_num(v)} nats \u00b7 {_num(v / math.log(2), 2)} bits</span>"
                   for label, v, cls in rows)
    best_k, best = min(ctx.ngram_predictions.items(), key=lambda kv: kv[1].loss)
    gap = best.loss - model.loss
    verdict = (f"The model is {gap:.3f} nats/char better than the best n-gram here (the {best_k}-gram)." if gap > 0 else
               f"The best n-gram here (the {best_k}-gram) is still {-gap:.3f} nats/char better than the model: "
               "it has not learned more than counts yet.")
    fitted = (ctx.ngram.meta.get("train") or {}).get("train_chars")
    source = f" fitted on {fitted:,} training characters" if fitted else ""
    body = (f"<div class=rlr-bars>{bars}</div><p class=rlr-small>{escape(verdict)} The n-grams are the lower orders "
            f"of one {ctx.ngram.order}-gram{source}; the paper's War and Peace figures were 1.077 nats for its best "
            "LSTM against 1.195 for a 20-gram.</p>")
    return Section("ngram", "Beside n-gram baselines", why, body)


def classes_section(ctx) -> Section:
    why = ("The loss split by the kind of character that comes next: letters, digits, spaces, newlines, "
           "punctuation, brackets, quotes. It shows which characters are easy (the rest of a word) and which stay "
           "hard (the first letter of a new word), and where the network gains over the best n-gram.")
    from rnnlens.render.plots import plot_loss_by_class
    note = ctx.ngram_note
    result = ctx.loss_by_class
    names = result.models
    header = ["class", "characters"] + [f"{n} (nats)" for n in names] + [f"share of {names[0]}'s loss"]
    rows = [[escape(r["class"]), f"{r['count']:,}"] + [_num(r[f"{n} loss_nats"]) for n in names]
            + [f"{100 * r[f'{names[0]} share']:.1f}%"] for r in result.rows() if r["count"]]
    table = _table(header, rows, numeric=set(range(1, len(header))))
    fig = figure(lambda p: plot_loss_by_class(result, p), "mean loss per class of the next character")
    return Section("classes", "Loss by character class", why, fig + table,
                   note=f"no n-gram beside it: {note}" if note else None)


def errors_section(ctx) -> Section:
    why = ("Every character to which the model gives less than even odds is an error; the paper sorts them into "
           "kinds, each taking away the errors it explains: ones some n-gram (n \u2264 9) would get right, repeats of "
           "a word seen in the last 1,000 characters, rare words, first letters of words, punctuation. What is left "
           "is sorted by how much more probability the true character needed: what a bigger model would learn.")
    from rnnlens.render.plots import plot_error_taxonomy
    result, note = ctx.error_taxonomy
    rows = [[escape(r["label"]), f"{r['count']:,}", f"{100 * r['share']:.1f}%"]
            for r in result.rows()]
    table = _table(["category (peeled in this order)", "errors", "share"], rows, numeric={1, 2})
    fig = figure(lambda p: plot_error_taxonomy([result], p), "errors per category")
    summary = (f"<p class=rlr-small>{result.errors:,} errors among {result.chars:,} predicted characters "
               f"({100 * result.errors / max(result.chars, 1):.1f}%). The paper's large LSTM made about 140K errors "
               "on 330K War and Peace characters; its n-gram oracle took about 18% of them and the word model "
               "(first letters) was the largest share.</p>")
    notes = [n for n in (f"no n-gram oracle: {note}" if note else None,
                         None if ctx.train_text is not None else "no training text, so no rare-word category")
             if n]
    overlap = ctx.error_overlap
    if overlap is not None:
        from rnnlens.render.comparison import overlap_fragment
        summary += (f"<p class=rlr-small>Beside the n-gram baseline: {escape(overlap.table())}. The excerpt shows "
                    "where each fails (the seeds: the two share many errors, but fail differently on distinct "
                    "segments).</p>" + overlap_fragment(overlap, ctx.predictions.text, 0,
                                                        min(len(ctx.predictions.text), 1500)))
    return Section("errors", "Error taxonomy", why, fig + summary + table, note="; ".join(notes) or None)


def longrange_section(ctx) -> Section:
    why = ("How well the model predicts a closing character against how far back its opener was: '}' after its "
           "'{' (and ')' after '('), and a newline against the length of the line so far. A fixed-window model "
           "forgets the opener once it is out of sight; a recurrent model that keeps count does not.")
    from rnnlens.render.plots import plot_long_range
    note = ctx.ngram_note
    studies, counts = ctx.long_range
    fig = figure(lambda p: plot_long_range(studies, p), "probability of the closing character by distance")
    found = ", ".join(f"{n:,} matched {pair}" for pair, n in counts.items())
    body = fig + f"<p class=rlr-small>In this text: {escape(found)}.</p>"
    return Section("closing-brace", "The closing brace", why, body,
                   note=f"no n-gram beside it: {note}" if note else None)


SECTIONS: list[Callable] = [model_card_section, training_section, samples_section, test_loss_section, ngram_section,
                            units_section, saturation_section, timescales_section, gradients_section, classes_section,
                            errors_section, longrange_section]


def render_report(ctx, sections: list[Callable] | None = None, progress: bool | None = None) -> Report:
    """Run every builder on the context and put the sections together (in RAM; .save() writes the file)."""
    from rnnlens._version import __version__
    progress = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    if progress:
        print(f"report: tracing {len(ctx.text):,} characters", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    ctx.trace  # noqa: B018  (traced once here, so the timings say where the time goes)
    timings = {"trace": time.perf_counter() - t0}
    if progress:
        print(f"report: traced in {timings['trace']:.1f} s", file=sys.stderr, flush=True)
    done = []
    for build in (SECTIONS if sections is None else sections):
        t0 = time.perf_counter()
        try:
            section = build(ctx)
        except RnnlensError as e:  # a section that cannot be drawn on this text or model says why
            name = build.__name__.removesuffix("_section").replace("_", " ")
            section = Section(name.replace(" ", "-"), name.capitalize(), "", note=f"not available: {e}")
        if section is None:
            continue
        section.seconds = time.perf_counter() - t0
        timings[section.id] = section.seconds
        if progress:
            print(f"report: {section.title} ({section.seconds:.1f} s)", file=sys.stderr, flush=True)
        done.append(section)
    cfg = ctx.config
    article = "an" if cfg.cell in ("lstm", "rnn") else "a"  # "an LSTM", "an RNN", "a GRU"
    title = f"{ctx.run_name}: {article} {cfg.cell.upper()} {cfg.layers}\u00d7{cfg.size} explained"
    subtitle = f"Read over {len(ctx.trace):,} characters: {ctx.text_source}."
    total = time.perf_counter() - start
    timings["total"] = total
    footer = (f"Written by rnnlens {__version__} in {total:.1f} s from {ctx.checkpoint or 'a model in memory'}. "
              "This page is one self-contained file: it needs no network and no other files.")
    return Report(title, subtitle, done, footer, timings)
