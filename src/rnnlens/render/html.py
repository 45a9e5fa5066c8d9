"""Self-contained HTML pictures of units over text: no CDN, no external URL, works offline.

Pieces, so that a report page, a notebook and a browser explorer can reuse them:

* `assets()` -- the CSS and the tooltip script, once per page (about 7 KB);
* `unit_fragment(trace, name, unit, start, end)` -- one unit over a span of text: each character
  on the colour of the unit's activation after reading it (see rnnlens.render.colours);
* `strip_fragment(trace, name, unit, start, end, top=5)` -- the prediction strip of Karpathy's
  blog: the coloured text, and under each character the model's `top` most likely next
  characters shaded by probability, the one that really came next underlined;
* `html_document(title, body)`, `unit_page`, `gallery_page` -- whole pages; `write_html` writes
  one atomically.

Pages stay small: colours are quantised to the scale's levels and neighbouring characters of
the same level share one element (`<i class=d20>ing</i>`), a newline is its own `<u>` element
(drawn as a visible arrow by CSS), and the exact values travel once per fragment as base64
float16 in a data attribute, which the tooltip script decodes on the first hover. Views longer
than MARKUP_LIMIT characters carry one level code a character instead of markup, and the page's
script colours them: a 100,000-character view is about 0.5 MB.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlens.errors import RnnlensError
from rnnlens.fileio import atomic_write
from rnnlens.render.colours import (
    DIVERGING,
    GATE,
    PROBABILITY,
    ColourScale,
    Display,
    check_span,
    display_for,
    unit_label,
    unit_values,
)
from rnnlens.trace import Trace

# Class prefixes of the colour levels: d3 is level 3 of the diverging scale, and so on.
SCALE_CLASSES = {DIVERGING.name: "d", GATE.name: "g", PROBABILITY.name: "p"}
INLINE_LIMIT = 20_000  # characters a notebook view shows when no end is given
# Up to this many characters a unit view is coloured in the HTML itself (works without
# JavaScript, ~15 bytes a character); longer ones are coloured by the browser from one level code
# a character (~5 bytes a character with the values), so a 100,000-character view stays ~0.5 MB.
MARKUP_LIMIT = 20_000
LEVEL_CODES = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # level i <-> LEVEL_CODES[i]

# Characters that would not show as themselves in pre-wrapped text get a visible stand-in of
# exactly one code point, so that positions in the page stay positions in the text: control
# characters become their Unicode control pictures (a CR would otherwise vanish: HTML parsing
# turns CR LF into LF), and the three markup characters are escaped.
_SHOWN = {c: chr(0x2400 + c) for c in range(32) if chr(c) not in "\n\t"}
# a carriage return (War and Peace's CRLF line ends) as an arrow: common fonts lack the control picture \u240d
_SHOWN.update({0x0D: "\u2190", 0x7F: "\u2421", ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;"})
# In the prediction strip every character has a cell of its own: newlines and tabs show as
# arrows, and in the prediction rows a space too (in the text row a blank cell reads better).
_SHOWN_STRIP = {**_SHOWN, ord("\n"): "\u21b5", ord("\t"): "\u21e5"}
_SHOWN_PREDICTION = {**_SHOWN_STRIP, ord(" "): "\u2423"}


def _level_css(scale: ColourScale) -> str:
    prefix = SCALE_CLASSES[scale.name]
    return "".join(f".rl .{prefix}{i}{{background:{colour}}}" for i, colour in enumerate(scale.level_hex()))


_MONO = '"DejaVu Sans Mono",Menlo,Consolas,"Liberation Mono",monospace'
CSS = f"""
.rl{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0 0 18px}}
.rl-head{{display:flex;flex-wrap:wrap;align-items:center;gap:4px 18px;margin:0 0 6px;font-size:13px}}
.rl-name{{font-weight:600}}
.rl-note{{color:#666}}
.rl-scale{{display:inline-flex;align-items:center;gap:5px;color:#555;font-size:12px}}
.rl-scale>span{{display:inline-block;width:120px;height:11px;border:1px solid #bbb;border-radius:2px}}
.rl-text{{font:13px/1.7 {_MONO};white-space:pre-wrap;overflow-wrap:anywhere;tab-size:4;color:#111;
  background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:0}}
.rl-text i,.rl-cols i,.rl-cols b{{font-style:normal;font-weight:normal}}
.rl-text u{{text-decoration:none}}
.rl-text u::before{{content:"\\21b5";color:#777}}
.rl-cols{{display:flex;flex-wrap:wrap;row-gap:12px;font:13px/1.45 {_MONO};color:#111;background:#fff;
  border:1px solid #ddd;border-radius:6px;padding:8px 10px}}
.rl-cols>span{{display:flex;flex-direction:column;width:1.45em;text-align:center;white-space:pre}}
.rl-cols b{{margin-bottom:3px}}
.rl-cols i{{color:#555;font-size:12px}}
.rl-cols i.t{{color:#000;font-weight:700;text-decoration:underline 2px}}
.rl-cols>span:hover{{outline:1px solid #555}}
.rl-tip{{position:fixed;z-index:10000;pointer-events:none;background:#1d1f21;color:#f3f3f3;
  font:12px/1.45 {_MONO};white-space:pre;padding:5px 8px;border-radius:4px;box-shadow:0 2px 8px #0004}}
{_level_css(DIVERGING)}{_level_css(GATE)}{_level_css(PROBABILITY)}
"""

# The tooltip: one document-level listener for every fragment on the page, installed once even
# when a notebook shows many views. A fragment's values are decoded on its first hover.
# window.rnnlens.paint() colours the long views that come as text and level codes.
SCRIPT = r"""
(function(){
if(window.rnnlens)return;
var tip;
function f16(b64){var s=atob(b64||''),n=s.length>>1,out=new Float32Array(n);
 for(var i=0;i<n;i++){var h=s.charCodeAt(2*i)|(s.charCodeAt(2*i+1)<<8),e=(h>>10)&31,m=h&1023,g=h>>15?-1:1;
  out[i]=e==0?g*m*5.960464477539063e-8:e==31?(m?NaN:g*Infinity):g*(1+m/1024)*Math.pow(2,e-15);}
 return out;}
function count(s){return Array.from(s).length}
function prepare(view){
 if(view.rl)return view.rl;
 var d=view.dataset,data={v:f16(d.v),p:f16(d.p),q:f16(d.q),k:+(d.k||0),start:+d.s,strip:!!d.k};
 var n=0,parts=view.querySelector('.rl-text,.rl-cols').children;
 for(var i=0;i<parts.length;i++){parts[i].rlStart=n;n+=data.strip?1:count(parts[i].textContent);}
 return view.rl=data;}
function caretIndex(e,el){
 var node,off,r;
 if(document.caretPositionFromPoint){r=document.caretPositionFromPoint(e.clientX,e.clientY);if(r){node=r.offsetNode;off=r.offset;}}
 else if(document.caretRangeFromPoint){r=document.caretRangeFromPoint(e.clientX,e.clientY);if(r){node=r.startContainer;off=r.startOffset;}}
 if(!node||node.parentNode!==el)return 0;
 if(off>0){var rg=document.createRange();rg.setStart(node,off-1);rg.setEnd(node,off);var b=rg.getBoundingClientRect();
  if(e.clientX<b.right&&e.clientY>=b.top&&e.clientY<=b.bottom)off--;}
 return Math.min(count(node.data.slice(0,off)),count(node.data)-1);}
var CODES='LEVEL_CODES';
function esc(s){return s.replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')}
function paint(box){
 var chars=Array.from(box.textContent),codes=box.dataset.c,k=box.dataset.k,out=[],s=0;
 box.removeAttribute('data-c');
 for(var t=1;t<=chars.length;t++){
  if(t<chars.length&&codes[t]==codes[s]&&chars[t]!='\n'&&chars[s]!='\n')continue;
  var cls=k+CODES.indexOf(codes[s]);
  out.push(chars[s]=='\n'?'<u class='+cls+'>\n</u>':'<i class='+cls+'>'+esc(chars.slice(s,t).join(''))+'</i>');
  s=t;}
 box.innerHTML=out.join('');}
function shown(c){return c==' '?'\u2423 (space)':c=='\n'?'\u21b5 (newline)':c=='\t'?'\u21e5 (tab)':c}
function num(x){return isNaN(x)?'nan':(x<0?'':'+')+x.toFixed(3)}
function hide(){if(tip)tip.style.display='none'}
function showTip(e,lines){
 if(!tip){tip=document.createElement('div');tip.className='rl-tip';document.body.appendChild(tip);}
 tip.textContent=lines.join('\n');tip.style.display='block';
 var x=e.clientX+14,y=e.clientY+16,w=tip.offsetWidth,h=tip.offsetHeight;
 if(x+w>innerWidth-4)x=Math.max(4,e.clientX-w-10);if(y+h>innerHeight-4)y=Math.max(4,e.clientY-h-12);
 tip.style.left=x+'px';tip.style.top=y+'px';}
document.addEventListener('mousemove',function(e){
 var t=e.target,view=t.closest&&t.closest('.rl-unit,.rl-strip');if(!view){hide();return;}
 var d=prepare(view),el,i,lines;
 if(d.strip){el=t.closest('.rl-cols>span');}else{el=t.parentNode&&t.parentNode.classList.contains('rl-text')?t:null;}
 if(!el){hide();return;}
 if(d.strip){i=el.rlStart;}else{i=el.rlStart+(el.tagName=='U'?0:caretIndex(e,el));}
 var raw=d.v[i],vd=view.dataset,c=d.strip?el.firstChild.textContent:Array.from(el.textContent)[i-el.rlStart];
 var value=vd.f?Math[vd.f](raw):raw;
 lines=[shown(c)+'   #'+(d.start+i),vd.l+' = '+num(value)+(vd.r?'   '+vd.r+' = '+num(raw):'')];
 if(d.strip){lines.push('next:');var cells=el.children;
  for(var j=1;j<cells.length;j++)lines.push('  '+cells[j].textContent+'  '+(100*d.p[i*d.k+j-1]).toFixed(1)+'%'+(cells[j].classList.contains('t')?'  \u2190 true':''));
  var after=el.nextElementSibling;
  if(!isNaN(d.q[i]))lines.push('true next: '+(after?after.firstChild.textContent+'  ':'')+(100*d.q[i]).toFixed(1)+'%');}
 showTip(e,lines);
},{passive:true});
// for fragments coloured by the browser, and for pages that build views from data
window.rnnlens={paint:function(){document.querySelectorAll('.rl-text[data-c]').forEach(paint)},float16:f16,
 count:count,caretIndex:caretIndex,shown:shown,showTip:showTip};  // the comparison page's tooltip reuses these
})();
""".replace("LEVEL_CODES", LEVEL_CODES)


def assets() -> str:
    """The CSS and the tooltip script every fragment needs; include once per page."""
    return f"<style>{CSS}</style><script>{SCRIPT}</script>"


def escape(text: str) -> str:
    """HTML-escape a title or caption (quotes too, so it is safe in attributes as well)."""
    return html.escape(str(text), quote=True)


def _float16_b64(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f2").tobytes()).decode("ascii")


def _heading(title: str | None, name: str, unit: int) -> str:
    # the default names the unit; the scale's legend beside it says what is drawn
    text = f"layer {name.split('.', 1)[0].removeprefix('layer')} \u00b7 unit {unit}" if title is None else escape(title)
    return f"<span class=rl-name>{text}</span>" if text else ""


def _scale_legend(scale: ColourScale, label: str = "") -> str:
    gradient = ",".join(scale.hex(scale.lo + (scale.hi - scale.lo) * i / 4) for i in range(5))
    lo = f"{scale.lo:g}".replace("-", "\u2212")
    hi = f"+{scale.hi:g}" if scale.lo < 0 else f"{scale.hi:g}"
    return (f'<span class=rl-scale>{escape(label)} {lo}<span style="background:linear-gradient(90deg,{gradient})">'
            f"</span>{hi}</span>")


def _data_attributes(display: Display, raw: np.ndarray, start: int) -> str:
    attrs = f'data-s={start} data-l="{escape(display.label)}" data-v="{_float16_b64(raw)}"'
    if display.transform_name:
        attrs += f' data-r="{escape(display.raw_label)}" data-f={display.transform_name}'
    return attrs


def unit_fragment(trace: Trace, name: str, unit: int, start: int = 0, end: int | None = None, *,
                  title: str | None = None, note: str | None = None) -> str:
    """One unit over trace.text[start:end]: each character on the colour of the unit's activation
    after reading it (cell as tanh(c)); hovering a character shows it with its value.

    `title` replaces the default heading ("layer 1 · unit 42"; "" for none); `note` is
    shown beside it (default: which characters these are). Include `assets()` once on the page.
    """
    start, end = check_span(trace, start, end)
    display, raw = unit_values(trace, name, unit, start, end)
    levels = display.scale.level(display.transform(raw))
    text = trace.text[start:end]
    prefix = SCALE_CLASSES[display.scale.name]

    if end - start <= MARKUP_LIMIT:
        body, painted = _coloured_markup(text, levels, prefix), ""
    else:  # the browser colours it: the page carries one level code per character instead of markup
        codes = "".join(np.array(list(LEVEL_CODES))[levels])
        body = text.translate(_SHOWN)
        painted = f' data-c="{codes}" data-k={prefix}'
    note = escape(note) if note is not None else f"characters {start:,}\u2013{end:,} of {len(trace):,}"
    return (f"<div class='rl rl-unit' {_data_attributes(display, raw, start)}>"
            f"<div class=rl-head>{_heading(title, name, unit)}{_scale_legend(display.scale, display.label)}"
            f"<span class=rl-note>{note}</span></div>"
            f"<div class=rl-text{painted}>{body}</div></div>" + ("<script>rnnlens.paint()</script>" if painted else ""))


def _coloured_markup(text: str, levels: np.ndarray, prefix: str) -> str:
    """One element per run of characters of the same colour level; every newline its own <u>."""
    chars = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    newline = chars == 10
    cut = np.ones(len(text), dtype=bool)
    cut[1:] = (levels[1:] != levels[:-1]) | newline[1:] | newline[:-1]
    starts = np.flatnonzero(cut).tolist()
    parts = []
    for s, e in zip(starts, starts[1:] + [len(text)]):
        if newline[s]:
            parts.append(f"<u class={prefix}{levels[s]}>\n</u>")
        else:
            parts.append(f"<i class={prefix}{levels[s]}>{text[s:e].translate(_SHOWN)}</i>")
    return "".join(parts)


def strip_fragment(trace: Trace, name: str, unit: int, start: int = 0, end: int | None = None, top: int = 5, *,
                   title: str | None = None, note: str | None = None) -> str:
    """The prediction strip (the blog's URL figure) for trace.text[start:end]: each character
    coloured by the unit, and under it the model's `top` most likely next characters from
    trace['probs'], shaded by probability, the character that really came next underlined."""
    start, end = check_span(trace, start, end)
    display, raw = unit_values(trace, name, unit, start, end)
    if "probs" not in trace:
        raise RnnlensError("the prediction strip needs the next-character probabilities: trace with 'probs' "
                           "among the names")
    probs = np.asarray(trace["probs"][start:end], dtype=np.float32)  # [n, V]
    if not 1 <= top <= probs.shape[1]:
        raise RnnlensError(f"top must be 1..{probs.shape[1]} (the vocabulary size); got {top}")
    best = np.argsort(-probs, axis=1, kind="stable")[:, :top]  # [n, top], most likely first
    best_p = np.take_along_axis(probs, best, axis=1)
    # The true next character of position t is ids[t+1]; the text's last character has none.
    following = np.asarray(trace.ids[start + 1:min(end + 1, len(trace))], dtype=np.int64)
    true_next = np.full(end - start, -1, dtype=np.int64)
    true_next[:len(following)] = following
    true_p = np.full(end - start, np.nan, dtype=np.float32)
    true_p[:len(following)] = probs[np.arange(len(following)), following]

    levels = display.scale.level(display.transform(raw))
    prob_levels = PROBABILITY.level(best_p)
    prefix = SCALE_CLASSES[display.scale.name]
    p_prefix = SCALE_CLASSES[PROBABILITY.name]
    chars = trace.chars
    text = trace.text[start:end]
    note = escape(note) if note is not None else f"characters {start:,}\u2013{end:,}"
    columns = []
    for t, ch in enumerate(text):
        cells = [f"<b class={prefix}{levels[t]}>{ch.translate(_SHOWN_STRIP)}</b>"]
        for j in range(top):
            cid = best[t, j]
            mark = " t" if cid == true_next[t] else ""
            cells.append(f"<i class='{p_prefix}{prob_levels[t, j]}{mark}'>"
                         f"{chars[cid].translate(_SHOWN_PREDICTION)}</i>")
        columns.append(f"<span>{''.join(cells)}</span>")
    return (f"<div class='rl rl-strip' {_data_attributes(display, raw, start)} data-k={top} "
            f'data-p="{_float16_b64(best_p.reshape(-1))}" data-q="{_float16_b64(true_p)}">'
            f"<div class=rl-head>{_heading(title, name, unit)}{_scale_legend(display.scale, display.label)}"
            f"{_scale_legend(PROBABILITY, f'top {top} next characters, p')}"
            f"<span class=rl-note>underlined: the character that came next \u00b7 {note}</span></div>"
            f"<div class=rl-cols>{''.join(columns)}</div></div>")


PAGE_CSS = """
body{margin:0;background:#f6f6f4}
main{max-width:1180px;margin:0 auto;padding:22px 28px 40px;color:#222;
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:26px 0 2px}
.sub{color:#555;margin:0 0 16px}
.cap{color:#444;margin:0 0 8px;font-size:14px}
.toc{columns:3 240px;font-size:13px;margin:0 0 10px;padding-left:18px}
a{color:#2a5db0}
"""


def html_document(title: str, body: str, *, subtitle: str | None = None) -> str:
    """A whole page: `body` (fragments and other markup) with the assets, under a heading."""
    sub = f"<p class=sub>{escape(subtitle)}</p>" if subtitle else ""
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{escape(title)}</title>"
            f"<style>{PAGE_CSS}</style>{assets()}</head>\n"
            f"<body><main><h1>{escape(title)}</h1>{sub}\n{body}\n</main></body></html>\n")


def _reading_hint(display: Display, strip: bool) -> str:
    scale = ("red \u22121, white 0, blue +1" if display.scale is DIVERGING else "white 0 (closed) to green 1 (open)")
    line = f"Each character is coloured by {escape(display.description)} after the model has read it: {scale}."
    if strip:
        line += (" Under each character: the model's most likely next characters, darker when more likely; "
                 "the one that really came next is underlined.")
    return f"<p class=cap>{line} Hover a character to see its value.</p>"


def unit_page(trace: Trace, name: str, unit: int, start: int = 0, end: int | None = None, *,
              title: str | None = None, subtitle: str | None = None, strip: bool = False, top: int = 5,
              note: str | None = None) -> str:
    """A page with one unit over trace.text[start:end]; with strip=True, as a prediction strip.
    `note` says which characters these are (default: their positions in the trace)."""
    display = display_for(name)
    # the page's heading names the unit already
    fragment = (strip_fragment(trace, name, unit, start, end, top, title="", note=note) if strip
                else unit_fragment(trace, name, unit, start, end, title="", note=note))
    title = title or f"{'Prediction strip: ' if strip else ''}{unit_label(name, unit, display)}"
    return html_document(title, _reading_hint(display, strip) + fragment, subtitle=subtitle)


@dataclass
class GalleryItem:
    """One unit in a gallery: what to show (`name` like 'layer1.cell', `unit`), over which excerpt
    of the trace's text (`start`..`end`), under which `title` and `caption`."""

    name: str
    unit: int
    title: str
    caption: str
    start: int
    end: int


def gallery_page(trace: Trace, items: Iterable[GalleryItem], title: str = "Interpretable units", *,
                 subtitle: str | None = None) -> str:
    """A page of units, each with its title, caption and excerpt, and a table of contents."""
    items = list(items)
    if not items:
        raise RnnlensError("a gallery needs at least one unit to show")
    toc, sections = [], []
    for n, item in enumerate(items, 1):
        anchor = f"u{n}"
        toc.append(f"<li><a href='#{anchor}'>{escape(item.title)}</a></li>")
        sections.append(f"<section id={anchor}><h2>{escape(item.title)}</h2>"
                        + (f"<p class=cap>{escape(item.caption)}</p>" if item.caption else "")
                        + unit_fragment(trace, item.name, item.unit, item.start, item.end) + "</section>")
    scales = {display_for(item.name).scale.name for item in items}
    hint = ("Each character is coloured by the unit's activation after the model has read it"
            + ("; cells as tanh(c), signed values from red \u22121 through white 0 to blue +1"
               if DIVERGING.name in scales else "")
            + ("; gates from white 0 (closed) to green 1 (open)" if GATE.name in scales else "")
            + ". Hover a character to see its value.")
    body = f"<p class=cap>{hint}</p><ol class=toc>{''.join(toc)}</ol>{''.join(sections)}"
    return html_document(title, body, subtitle=subtitle)


def write_html(path: str | Path, html_text: str) -> Path:
    """Write a page atomically (a temporary file in the same folder, then a rename)."""
    return atomic_write(path, lambda tmp: tmp.write_text(html_text, encoding="utf-8"))


class UnitView:
    """One unit over a span of a trace, as returned by Trace.view: shows itself inline in Jupyter,
    `.html()` gives a whole page, `.save('page.html' or 'page.png')` writes one."""

    def __init__(self, trace: Trace, name: str, unit: int, start: int = 0, end: int | None = None):
        self.start, self.end = check_span(trace, start, end)
        unit_values(trace, name, unit, self.start, self.start + 1)  # checks the name and the unit now
        self.trace, self.name, self.unit = trace, name, unit

    def __repr__(self) -> str:
        return f"UnitView({self.name} unit {self.unit}, characters {self.start}..{self.end})"

    def fragment(self) -> str:
        return unit_fragment(self.trace, self.name, self.unit, self.start, self.end)

    def html(self) -> str:
        return unit_page(self.trace, self.name, self.unit, self.start, self.end)

    def _repr_html_(self) -> str:
        # a notebook keeps its outputs: show at most INLINE_LIMIT characters there
        end = min(self.end, self.start + INLINE_LIMIT)
        note = None if end == self.end else (f"characters {self.start:,}\u2013{end:,} of {len(self.trace):,} "
                                             f"(a notebook shows {INLINE_LIMIT:,}; .save() writes them all)")
        return assets() + unit_fragment(self.trace, self.name, self.unit, self.start, end, note=note)

    def save(self, path: str | Path) -> Path:
        """Write the view as a page (.html) or a picture (.png)."""
        if str(path).lower().endswith(".png"):
            from rnnlens.render.textfig import plot_unit_text
            return plot_unit_text(self.trace, self.name, self.unit, self.start, self.end, path)
        return write_html(path, self.html())
