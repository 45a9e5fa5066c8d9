"""The report file in headless Chromium: its sections, figures and coloured characters render, its
table of contents works, and it fetches nothing."""

import re

import pytest
from conftest import make_text, train_tiny_runs

from rnnlens.render.colours import DIVERGING, GATE, PROBABILITY
from rnnlens.render.html import SCALE_CLASSES


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    from rnnlens.report import write_report
    root = tmp_path_factory.mktemp("report-browser")
    runs = train_tiny_runs(root, ["lstm"])
    return write_report(runs["lstm"], make_text(60, seed=1), out=root / "report.html", min_strength=0.0,
                        sample_length=40, positions=4, max_lag=20)


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


COLOURS = {SCALE_CLASSES[s.name]: [_rgb(c) for c in s.level_hex()] for s in (DIVERGING, GATE, PROBABILITY)}


def test_report_renders_in_chromium(page, report_file):
    outside, errors = [], []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report_file.as_uri())
    page.wait_for_load_state("load")

    headings = page.locator("main h2").all_inner_texts()
    assert len(headings) == 12 and headings[0] == "1. Model card" and headings[8] == "9. Gradient flow"
    assert page.locator(".rlr-toc a").count() == 12
    # every figure decoded and drawn at a real size
    sizes = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.width])")
    assert len(sizes) == 7 and all(done and natural > 100 and shown > 100 for done, natural, shown in sizes)

    # coloured characters: each span's computed background is its level's colour on the paper's scale
    spans = page.eval_on_selector_all(
        ".rl-unit .rl-text i, .rl-strip .rl-cols b, .rl-strip .rl-cols i",
        "els => els.map(e => [e.className, getComputedStyle(e).backgroundColor, e.textContent])")
    assert len(spans) > 50
    levels_seen = set()
    for cls, background, _ in spans:
        m = re.match(r"([dgp])(\d+)", cls)
        assert m, cls
        assert background == COLOURS[m[1]][int(m[2])], (cls, background)
        levels_seen.add(cls.split()[0])
    assert len({c for c in levels_seen if c.startswith("d")}) > 5  # not one flat colour
    assert len({c for c in levels_seen if c.startswith("p")}) >= 2  # the strip's probabilities
    # the ends of the signed scale are the paper's: red for -1, blue for +1
    assert COLOURS["d"][0] == "rgb(230, 75, 60)" and COLOURS["d"][-1] == "rgb(60, 130, 230)"

    # the page fits a laptop screen: no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert not outside and not errors


def test_table_of_contents_links_scroll_to_their_sections(page, report_file):
    page.goto(report_file.as_uri())
    for title, anchor in (("Gate saturation", "saturation"), ("Samples", "samples"), ("Gradient flow", "gradients")):
        page.locator(".rlr-toc a", has_text=title).click()
        page.wait_for_function(f"location.hash === '#{anchor}'")
        top = page.evaluate(f"document.getElementById('{anchor}').getBoundingClientRect().top")
        assert 0 <= top < 40, (anchor, top)  # scrolled to the top of the window
        assert page.locator(f"#{anchor} h2").is_visible()


def test_hovering_a_character_shows_its_value(page, report_file):
    page.goto(report_file.as_uri())
    span = page.locator(".rl-unit .rl-text i").first
    span.scroll_into_view_if_needed()
    span.hover()
    tip = page.locator(".rl-tip")
    tip.wait_for(state="visible")
    assert re.search(r"(tanh\(c\)|h) = [+-]\d\.\d{3}", tip.inner_text())  # the first unit shown: a cell or h
