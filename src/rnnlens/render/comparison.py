"""The per-position comparison page: a text coloured by how much better one model predicts each
character than another.

Character i is coloured by loss_B(i) - loss_A(i) = ln p_A(text[i]) - ln p_B(text[i]) in nats, on
the diverging scale of rnnlens.render.colours clipped at +-`scale` nats: blue where model A is
better (gives the character a higher probability), red where model B is, white where they agree.
The text's first character has no prediction and stays white. Hovering a character shows both
probabilities of it and the difference. Self-contained: the page loads nothing from anywhere.
"""

from __future__ import annotations

import numpy as np

from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, check_same_text
from rnnlens.render.colours import DIVERGING, ColourScale
from rnnlens.render.html import (
    _SHOWN,
    LEVEL_CODES,
    MARKUP_LIMIT,
    _coloured_markup,
    _float16_b64,
    _scale_legend,
    escape,
    html_document,
)

DEFAULT_SCALE = 2.0  # nats: a difference of 2 nats (a factor e^2 = 7.4 in probability) is full colour

# Tooltip for comparison views: its own listener, beside html.py's (which hides the tip off its own views),
# sharing html.py's tooltip element and caret code through window.rnnlens.
COMPARE_SCRIPT = r"""
(function(){
if(window.rnnlensCompare)return;window.rnnlensCompare=1;
var R=function(){return window.rnnlens};  // html.py's SCRIPT, on every page before this one
function count(s){return R().count(s)}
function prepare(view){
 if(view.rlc)return view.rlc;
 var d=view.dataset,f16=R().float16,data={a:f16(d.a),b:f16(d.b),start:+d.s};
 var n=0,parts=view.querySelector('.rl-text').children;
 for(var i=0;i<parts.length;i++){parts[i].rlStart=n;n+=count(parts[i].textContent);}
 return view.rlc=data;}
function pct(l){return isNaN(l)?'-':(100*Math.exp(-l)).toPrecision(3)+'%'}
document.addEventListener('mousemove',function(e){
 var t=e.target,view=t.closest&&t.closest('.rl-cmp');
 if(!view||!t.parentNode||!t.parentNode.classList.contains('rl-text'))return;  // html.py's listener hides the tip
 var d=prepare(view),vd=view.dataset,i=t.rlStart+(t.tagName=='U'?0:R().caretIndex(e,t));
 var c=Array.from(t.textContent)[i-t.rlStart],la=d.a[i],lb=d.b[i];
 var lines=[R().shown(c)+'   #'+(d.start+i),vd.na+': p = '+pct(la),vd.nb+': p = '+pct(lb)];
 if(!isNaN(la))lines.push('loss '+vd.nb+' \u2212 '+vd.na+' = '+(lb-la>=0?'+':'')+(lb-la).toFixed(3)+' nats');
 else lines.push('(first character: no prediction)');
 R().showTip(e,lines);
},{passive:true});
})();
"""


def difference_scale(scale: float = DEFAULT_SCALE) -> ColourScale:
    """The diverging colours (and CSS classes) of rnnlens.render.colours, spread over -scale..+scale nats."""
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise RnnlensError(f"the colour scale (--scale) is a positive number of nats; got {scale!r}")
    return ColourScale(DIVERGING.name, -float(scale), float(scale), DIVERGING.stops, DIVERGING.steps)


def position_losses(pa: Predictions, pb: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss_a [T], loss_b [T], loss_b - loss_a [T]) per text position, NaN at position 0."""
    check_same_text(pa, pb)
    la = np.concatenate([[np.nan], pa.losses])
    lb = np.concatenate([[np.nan], pb.losses])
    return la, lb, lb - la


def comparison_fragment(pa: Predictions, pb: Predictions, start: int = 0, end: int | None = None, *,
                        scale: float = DEFAULT_SCALE) -> str:
    """pa.text[start:end] coloured by loss_B - loss_A (blue: A better, red: B better); hover: both probabilities.
    An end past the text is cut to its length, as a slice would (`comparison_page(a, b, 0, 20_000)` on any text)."""
    text = check_same_text(pa, pb)
    end = len(text) if end is None else min(end, len(text))
    if not 0 <= start < end <= len(text):
        raise RnnlensError(f"the span {start}..{end} is not inside the text's 0..{len(text)} characters")
    colours = difference_scale(scale)
    la, lb, diff = position_losses(pa, pb)
    levels = colours.level(diff[start:end])
    span = text[start:end]
    if end - start <= MARKUP_LIMIT:
        body, painted = _coloured_markup(span, levels, "d"), ""
    else:  # the browser colours it from one level code a character (see rnnlens.render.html)
        codes = "".join(np.array(list(LEVEL_CODES))[levels])
        body, painted = span.translate(_SHOWN), f' data-c="{codes}" data-k=d'
    wins_a = int((diff[1:] > 0).sum())
    wins_b = int((diff[1:] < 0).sum())
    head = (f"<div class=rl-head><span class=rl-name>{escape(pb.name)} \u2212 {escape(pa.name)}</span>"
            f"{_scale_legend(colours, 'loss difference, nats')}"
            f"<span class=rl-note>characters {start:,}\u2013{end:,} of {len(text):,}</span></div>")
    summary = (f"<p class=cap>Over the whole text: {escape(pa.name)} {pa.loss:.4f} nats/char, "
               f"{escape(pb.name)} {pb.loss:.4f}; {escape(pa.name)} is better on {wins_a:,} characters, "
               f"{escape(pb.name)} on {wins_b:,}.</p>")
    return (f"<div class='rl rl-cmp' data-s={start} data-na=\"{escape(pa.name)}\" data-nb=\"{escape(pb.name)}\" "
            f"data-a=\"{_float16_b64(la[start:end])}\" data-b=\"{_float16_b64(lb[start:end])}\">"
            f"{head}{summary}<div class=rl-text{painted}>{body}</div></div>"
            + ("<script>rnnlens.paint()</script>" if painted else ""))


def comparison_page(pa: Predictions, pb: Predictions, start: int = 0, end: int | None = None, *,
                    scale: float = DEFAULT_SCALE, title: str | None = None, subtitle: str | None = None) -> str:
    """A whole page: the comparison fragment with a reading guide."""
    guide = (f"<p class=cap>Each character is coloured by how much better one model predicted it: the loss "
             f"difference {escape(pb.name)} \u2212 {escape(pa.name)} = ln p<sub>A</sub> \u2212 ln p<sub>B</sub> "
             f"of the true character, in nats. <b style='color:#3c82e6'>Blue</b>: {escape(pa.name)} (A) gave it "
             f"the higher probability; <b style='color:#e64b3c'>red</b>: {escape(pb.name)} (B) did; white: they "
             f"agree. Full colour at \u00b1{scale:g} nats (a factor of {np.exp(scale):.1f}). Hover a character to "
             f"see both probabilities.</p>")
    body = guide + comparison_fragment(pa, pb, start, end, scale=scale) + f"<script>{COMPARE_SCRIPT}</script>"
    return html_document(title or f"{pa.name} against {pb.name}", body, subtitle=subtitle)


OVERLAP_COLOURS = {1: "#f4a6a0", 2: "#9cc3f5", 3: "#c7b6e0"}  # only A fails (red), only B (blue), both (violet)


def overlap_fragment(overlap, text: str, start: int = 0, end: int | None = None) -> str:
    """text[start:end] with each character on the colour of who fails to predict it (rnnlens.analysis.overlap):
    red where only A errs, blue where only B does, violet where both do, white where neither."""
    end = len(text) if end is None else min(end, len(text))
    if not 0 <= start < end:
        raise RnnlensError(f"the span {start}..{end} is not inside the text's 0..{len(text)} characters")
    groups = np.concatenate([[0], overlap.groups])[start:end]  # the first character has no prediction
    pieces, i = [], 0
    while i < len(groups):
        j = i
        while j < len(groups) and groups[j] == groups[i]:
            j += 1
        chunk = escape(text[start + i:start + j])
        colour = OVERLAP_COLOURS.get(int(groups[i]))
        pieces.append(f"<span style='background:{colour}'>{chunk}</span>" if colour else chunk)
        i = j
    a, b = overlap.models
    legend = "".join(f"<span style='background:{c};padding:0 .4em;margin-right:.6em'>{escape(w)}</span>"
                     for c, w in ((OVERLAP_COLOURS[1], f"only {a} fails"), (OVERLAP_COLOURS[2], f"only {b} fails"),
                                  (OVERLAP_COLOURS[3], "both fail")))
    return (f"<div class=rl><div class=rl-head>{legend}<span class=rl-note>characters {start:,}\u2013{end:,} of "
            f"{len(text):,}</span></div><p class=cap>{escape(overlap.table())}</p>"
            f"<div class=rl-text style='white-space:pre-wrap'>{''.join(pieces)}</div></div>")


def overlap_page(overlap, text: str, start: int = 0, end: int | None = None, *, title: str | None = None,
                 subtitle: str | None = None) -> str:
    a, b = overlap.models
    guide = (f"<p class=cap>A character is an error of a model when the model gave it a probability below "
             f"{overlap.threshold:g} (the paper's rule). Where do {escape(a)} and {escape(b)} fail together, and where "
             f"does only one of them fail?</p>")
    return html_document(title or f"errors of {a} and {b}", guide + overlap_fragment(overlap, text, start, end),
                         subtitle=subtitle)
