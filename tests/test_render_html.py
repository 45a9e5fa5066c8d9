"""Pictures of units over text: colour scales, HTML fragments and pages, the PNG, Trace.view."""

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from rnnlens import RnnlensError, Trace
from rnnlens.render import html as rh
from rnnlens.render.colours import DIVERGING, GATE, display_for
from rnnlens.render.textfig import plot_unit_text


def make_trace(text: str, values, name: str = "layer0.cell", probs=None, chars=None, unit: int = 1) -> Trace:
    """A one-layer trace whose unit `unit` of `name` holds `values`; other units are zero."""
    chars = chars or sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.int64)
    arr = np.zeros((len(text), 3), dtype=np.float32)
    arr[:, unit] = values
    arrays = {name: arr}
    if probs is not None:
        arrays["probs"] = np.asarray(probs, dtype=np.float32)
    return Trace(text, ids, arrays, cell="lstm", layers=1, size=3, chars=chars)


class TextCells(HTMLParser):
    """Each character inside the .rl-text element of a fragment, with the class of its element."""

    def __init__(self):
        super().__init__()
        self.depth = 0  # >0 while inside .rl-text
        self.cls = None
        self.cells = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth:
            self.depth += 1
            self.cls = attrs.get("class")
        elif "rl-text" in (attrs.get("class") or "").split():
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth > 1:
            self.cells.extend((ch, self.cls) for ch in data)


def text_cells(fragment: str) -> list[tuple[str, str]]:
    parser = TextCells()
    parser.feed(fragment)
    return parser.cells


# ---------------------------------------------------------------------------------------------
# Colour scales


def test_diverging_scale_is_red_white_blue_and_gates_white_to_green():
    red, white, blue = DIVERGING.rgb([-1.0, 0.0, 1.0]) * 255
    assert red == pytest.approx([230, 75, 60]) and white == pytest.approx([255, 255, 255])
    assert blue == pytest.approx([60, 130, 230])
    assert red[0] > red[2] and blue[2] > blue[0]  # red is red, blue is blue
    assert DIVERGING.hex(-5.0) == DIVERGING.hex(-1.0) == "#e64b3c"  # clipped
    assert DIVERGING.hex(0.5) == "#9ec0f2"  # halfway from white to blue
    assert list(DIVERGING.level([-1.0, 0.0, 1.0, np.nan])) == [0, 16, 32, 16]
    closed, wide_open = GATE.rgb([0.0, 1.0]) * 255
    assert closed == pytest.approx([255, 255, 255]) and wide_open == pytest.approx([60, 175, 100])
    assert list(GATE.level([0.0, 0.5, 1.0])) == [0, 16, 32]


def _luminance(rgb):
    c = np.asarray(rgb, dtype=float)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ [0.2126, 0.7152, 0.0722]


def test_every_colour_keeps_black_text_readable():
    for scale in (DIVERGING, GATE, rh.PROBABILITY):
        colours = scale.rgb(np.linspace(scale.lo, scale.hi, 101))
        contrast = (_luminance(colours) + 0.05) / 0.05  # against black
        assert contrast.min() >= 4.5, scale.name


def test_each_activation_has_its_display():
    cell = display_for("layer1.cell")
    assert cell.label == "tanh(c)" and cell.scale is DIVERGING
    assert cell.transform(np.array([0.5]))[0] == pytest.approx(np.tanh(0.5))
    for name in ("layer0.hidden", "hidden", "layer2.gate.candidate"):
        d = display_for(name)
        assert d.scale is DIVERGING and d.transform(np.array([0.7]))[0] == pytest.approx(0.7)
    for gate in ("gate.input", "gate.forget", "gate.output", "gate.reset", "gate.update"):
        assert display_for(f"layer0.{gate}").scale is GATE
    with pytest.raises(RnnlensError, match="not a unit activation"):
        display_for("probs")


# ---------------------------------------------------------------------------------------------
# The unit fragment


def test_unit_fragment_colours_each_character_by_its_value():
    text = "ab\ncd"
    c = np.arctanh([-0.999, 0.0, 0.5, 0.999, 0.999])  # drawn as tanh(c): -1, 0, 0.5, 1, 1
    fragment = rh.unit_fragment(make_trace(text, c), "layer0.cell", 1)
    assert text_cells(fragment) == [("a", "d0"), ("b", "d16"), ("\n", "d24"), ("c", "d32"), ("d", "d32")]
    assert "<i class=d32>cd</i>" in fragment  # same level: one element
    assert "<u class=d24>\n</u>" in fragment  # a newline is its own element, drawn as an arrow by CSS
    assert 'content:"\\21b5"' in rh.CSS


def test_gates_use_their_own_scale():
    fragment = rh.unit_fragment(make_trace("xyz", [0.0, 0.5, 1.0], name="layer0.gate.forget"),
                                "layer0.gate.forget", 1)
    assert [cls for _, cls in text_cells(fragment)] == ["g0", "g16", "g32"]
    assert "forget gate" in fragment


def test_text_is_escaped_and_positions_survive():
    text = "if a<b && c>\"d\" or 'e':\r\n\tx\x00y"
    fragment = rh.unit_fragment(make_trace(text, np.zeros(len(text))), "layer0.cell", 1)
    body = fragment.split("rl-text>", 1)[1]
    assert "a<b" not in body and "&&" not in body
    assert "a&lt;b &amp;&amp; c&gt;" in body
    shown = "".join(ch for ch, _ in text_cells(fragment))
    # one shown character per text character: CR and NUL become visible control pictures
    assert len(shown) == len(text)
    assert shown == text.replace("\r", "\u2190").replace("\x00", "\u2400")


def test_titles_and_captions_are_escaped():
    trace = make_trace("abc", [0, 0, 0])
    fragment = rh.unit_fragment(trace, "layer0.cell", 1, title='<script>"x"</script>', note="a & b")
    assert "<script>\"x\"" not in fragment and "&lt;script&gt;&quot;x&quot;" in fragment
    assert "a &amp; b" in fragment
    page = rh.gallery_page(trace, [rh.GalleryItem("layer0.cell", 1, "it's <b>", 'say "hi" & go', 0, 3)],
                           title="T<1>")
    assert "it&#x27;s &lt;b&gt;" in page and "say &quot;hi&quot; &amp; go" in page and "<title>T&lt;1&gt;" in page


def test_the_hover_values_are_the_stored_values():
    c = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    fragment = rh.unit_fragment(make_trace("abc", c), "layer0.cell", 1)
    attrs = dict(re.findall(r'data-(\w)="?([^" >]*)', fragment.split(">", 1)[0]))
    decoded = np.frombuffer(base64.b64decode(attrs["v"]), dtype="<f2")
    assert decoded == pytest.approx(c, abs=1e-3)
    assert attrs["f"] == "tanh" and attrs["r"] == "c" and attrs["s"] == "0"


def test_span_and_unit_are_checked():
    trace = make_trace("abcdef", np.zeros(6))
    assert text_cells(rh.unit_fragment(trace, "layer0.cell", 1, 2, 4)) == [("c", "d16"), ("d", "d16")]
    for start, end in [(4, 2), (-1, 3), (0, 7)]:
        with pytest.raises(RnnlensError, match="span"):
            rh.unit_fragment(trace, "layer0.cell", 1, start, end)
    with pytest.raises(RnnlensError, match="units 0..2"):
        rh.unit_fragment(trace, "layer0.cell", 3)
    with pytest.raises(RnnlensError, match="no 'layer0.hidden'"):
        rh.unit_fragment(trace, "layer0.hidden", 1)


def random_trace(n: int, seed: int = 0) -> Trace:
    """The worst case for page size: a value that changes level at almost every character."""
    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz    ,.()<>&'\"\n")
    text = "".join(rng.choice(alphabet, n))
    return make_trace(text, rng.uniform(-3, 3, n).astype(np.float32))


def test_long_views_are_coloured_by_the_browser_from_level_codes(monkeypatch):
    monkeypatch.setattr(rh, "MARKUP_LIMIT", 50)
    trace = random_trace(200)
    fragment = rh.unit_fragment(trace, "layer0.cell", 1)
    codes = re.search(r'data-c="(\w+)"', fragment).group(1)
    levels = DIVERGING.level(np.tanh(trace.unit("layer0.cell", 1)))
    assert [rh.LEVEL_CODES.index(ch) for ch in codes] == levels.tolist()
    assert "<script>rnnlens.paint()</script>" in fragment
    assert "<i class=" not in fragment


def test_the_browser_paints_exactly_the_server_markup_and_decodes_values(page, tmp_path):
    """In Chromium: the page's script colours a long view from its level codes into the same markup the
    server writes for short views, and decodes float16 values exactly."""
    trace = random_trace(300, seed=3)
    levels = DIVERGING.level(np.tanh(trace.unit("layer0.cell", 1)))
    expected = rh._coloured_markup(trace.text, levels, "d")
    codes = "".join(rh.LEVEL_CODES[i] for i in levels)
    values = np.array([0.0, -0.5, 1.0, 65504.0, -2.5e-7, 0.333, 1e-3], dtype=np.float32)  # 2.5e-7: subnormal
    shown = trace.text.translate(rh._SHOWN)  # already markup: '<' is '&lt;' and so on, as the server writes it
    path = tmp_path / "paint.html"
    path.write_text(f"<!DOCTYPE html><meta charset=utf-8><div class=rl-text data-c='{codes}' data-k=d>{shown}</div>"
                    f"<div id=expected>{expected}</div><script>{rh.SCRIPT}</script>", encoding="utf-8")
    page.goto(path.as_uri())
    result = page.evaluate(f"""() => {{
        window.rnnlens.paint();
        return {{painted: document.querySelector('.rl-text').innerHTML,
                 expected: document.getElementById('expected').innerHTML,
                 coded: document.querySelector('.rl-text').hasAttribute('data-c'),
                 values: Array.from(window.rnnlens.float16({json.dumps(rh._float16_b64(values))}))}};
    }}""")
    assert not result["coded"]  # painted once: the codes are consumed
    assert result["painted"] == result["expected"]  # both serialised by the browser, so quoting cannot differ
    assert result["painted"].count("<i class=") == expected.count("<i class=") > 10
    assert np.array(result["values"], dtype=np.float64) == pytest.approx(values.astype(np.float16), rel=1e-6)


def test_a_100k_character_page_stays_small():
    trace = random_trace(100_000)
    page = rh.unit_page(trace, "layer0.cell", 1)
    size = len(page.encode())
    assert size < 600_000, size  # text + one level code + 2.7 base64 bytes of value a character
    marked_up = rh.unit_page(trace, "layer0.cell", 1, 0, rh.MARKUP_LIMIT)
    assert len(marked_up.encode()) < 500_000  # 20,000 characters, each level change an element


# ---------------------------------------------------------------------------------------------
# The prediction strip


def strip_trace():
    chars = list("abcdefg")
    text = "abca"
    probs = np.array([
        [0.05, 0.60, 0.10, 0.08, 0.07, 0.06, 0.04],  # after 'a' the true next is 'b': the most likely
        [0.30, 0.02, 0.01, 0.25, 0.20, 0.12, 0.10],  # after 'b' the true next is 'c': not in the top 5
        [0.115, 0.11, 0.12, 0.13, 0.14, 0.09, 0.25],  # after 'c' the true next is 'a': 5th
        [0.40, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10],  # the last character: no next
    ])
    return make_trace(text, [0.0, 1.0, -1.0, 0.0], name="layer0.hidden", probs=probs, chars=chars)


class StripColumns(HTMLParser):
    def __init__(self):
        super().__init__()
        self.columns, self.in_cols, self.cls = [], 0, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "rl-cols" in (attrs.get("class") or ""):
            self.in_cols = 1
        elif self.in_cols:
            if tag == "span":
                self.columns.append([])
            else:
                self.cls = attrs.get("class")

    def handle_data(self, data):
        if self.in_cols and self.columns:
            self.columns[-1].append((data, self.cls))


def test_strip_shows_top_next_characters_and_marks_the_true_one():
    fragment = rh.strip_fragment(strip_trace(), "layer0.hidden", 1, 0, 4, top=5)
    parser = StripColumns()
    parser.feed(fragment)
    cols = parser.columns
    assert len(cols) == 4
    assert [c for c, _ in cols[0]] == ["a", "b", "c", "d", "e", "f"]  # the text, then the top 5 in order
    assert cols[0][0][1] == "d16" and cols[1][0][1] == "d32" and cols[2][0][1] == "d0"
    assert cols[0][1] == ("b", "p6 t")  # p = 0.6, the true next character: marked
    assert [c for c, _ in cols[1][1:]] == ["a", "d", "e", "f", "g"]
    assert not any("t" in k.split() for _, k in cols[1][1:])
    assert [c for c, _ in cols[2][1:]] == ["g", "e", "d", "c", "a"] and cols[2][5] == ("a", "p1 t")
    assert not any("t" in k.split() for _, k in cols[3][1:])  # nothing follows the last character
    with pytest.raises(RnnlensError, match="top must be 1..7"):
        rh.strip_fragment(strip_trace(), "layer0.hidden", 1, 0, 4, top=8)


def test_strip_needs_probabilities_and_shows_whitespace():
    with pytest.raises(RnnlensError, match="probs"):
        rh.strip_fragment(make_trace("ab", [0, 0]), "layer0.cell", 1)
    chars = [" ", "\n", "x"]
    probs = np.tile([[0.5, 0.3, 0.2]], (3, 1))
    trace = make_trace("x \n", [0, 0, 0], probs=probs, chars=chars)
    parser = StripColumns()
    parser.feed(rh.strip_fragment(trace, "layer0.cell", 1, top=3))
    assert [c for c, _ in parser.columns[0]] == ["x", "\u2423", "\u21b5", "x"]  # predictions: visible blanks
    assert parser.columns[1][0][0] == " " and parser.columns[2][0][0] == "\u21b5"  # the text row


# ---------------------------------------------------------------------------------------------
# Pages


def test_pages_are_self_contained():
    trace = strip_trace()
    pages = [rh.unit_page(trace, "layer0.hidden", 1), rh.unit_page(trace, "layer0.hidden", 1, strip=True),
             rh.gallery_page(trace, [rh.GalleryItem("layer0.hidden", 1, "one", "first", 0, 2),
                                     rh.GalleryItem("layer0.hidden", 2, "two", "second", 1, 4)], title="units"),
             rh.unit_page(random_trace(rh.MARKUP_LIMIT + 10), "layer0.cell", 1)]
    for page in pages:
        assert page.startswith("<!DOCTYPE html>") and page.count("<style>") == 2 and page.count("rl-tip") >= 1
        assert not re.search(r"(https?:)?//[\w.-]+\.\w", page), "an external URL"
        assert not re.search(r"""(src|href)\s*=\s*(?!["']?#)""", page), "a link to another file"
        assert "url(" not in page and "@import" not in page


def test_gallery_lists_every_item_with_its_excerpt():
    trace = strip_trace()
    page = rh.gallery_page(trace, [rh.GalleryItem("layer0.hidden", 1, "quote cell", "inside quotes", 1, 3)],
                           title="Interpretable cells")
    assert "<h2>quote cell</h2>" in page and "inside quotes" in page and "href='#u1'" in page
    assert [ch for ch, _ in text_cells(page)] == ["b", "c"]
    with pytest.raises(RnnlensError, match="at least one"):
        rh.gallery_page(trace, [])


def test_write_html_is_atomic_and_explains_failures(tmp_path):
    path = rh.write_html(tmp_path / "sub" / "page.html", "<p>hi</p>")
    assert path.read_text() == "<p>hi</p>" and [p.name for p in path.parent.iterdir()] == ["page.html"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RnnlensError, match="cannot write") as err:
        rh.write_html(blocker / "page.html", "x")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# PNG and Trace.view


def test_png_is_written(tmp_path):
    trace = make_trace("def f(x):\n    return x\n" * 3, np.linspace(-2, 2, 69))
    path = plot_unit_text(trace, "layer0.cell", 1, 0, 40, tmp_path / "unit.png", width=20)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(RnnlensError, match="cannot write"):
        plot_unit_text(trace, "layer0.cell", 1, 0, 40, path / "x.png")


def test_png_layout_wraps_long_lines_and_breaks_at_newlines():
    from rnnlens.render.textfig import layout
    assert layout("abcde\nfg", 3) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]


def test_trace_view_shows_inline_and_saves(tmp_path):
    trace = make_trace("hello world\n", np.linspace(-1, 1, 12))
    view = trace.view("layer0.cell", 1, 0, 5)
    inline = view._repr_html_()
    assert inline.startswith("<style>") and "rl-unit" in inline
    assert [ch for ch, _ in text_cells(inline)] == list("hello")
    assert view.html().startswith("<!DOCTYPE html>")
    assert view.save(tmp_path / "v.html").read_text() == view.html()
    assert view.save(tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RnnlensError, match="units 0..2"):
        trace.view("layer0.cell", 7)


def test_notebook_view_of_a_long_text_is_cut(monkeypatch):
    monkeypatch.setattr(rh, "INLINE_LIMIT", 10)
    trace = make_trace("abcdefghijklmnopqrst", np.zeros(20))
    inline = trace.view("layer0.cell", 1)._repr_html_()
    assert len(text_cells(inline)) == 10 and ".save() writes them all" in inline
