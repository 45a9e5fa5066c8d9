"""The explorer in headless Chromium: the real `rnnlens serve` (a subprocess on a free port) with
two tiny trained runs; type text, choose a unit and check every character's colour, select and
match, the prediction strip, sampling, and the two models side by side."""

import re
import time

import pytest
from browser import served
from conftest import train_tiny_runs

import rnnlens
from rnnlens.render.colours import DIVERGING, display_for

TEXT = "the cat sat on the mat.\nthe dog ran to a red box.\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer-browser")
    runs = train_tiny_runs(root, ["lstm", "gru"])
    with served([runs["lstm"], runs["gru"], "--text", runs["text"]], root, "api/models") as url:
        yield {"url": url, **runs}


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def open_page(page, server):
    page.goto(server["url"])
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector(".panel[data-shown] .rl-text i")


def show(page, panel: int, text: str, name: str, unit: int):
    """Type the text, choose the unit in panel `panel`, and wait until the page shows it."""
    page.fill("#text", text)
    box = page.locator(".panel").nth(panel)
    box.locator("select.name").select_option(name)
    box.locator("input.unit").fill(str(unit))
    page.wait_for_selector(f".panel:nth-child({panel + 1})[data-shown='{name}:{unit}:{len(text)}']")
    return box


def colours_per_char(box):
    """(text, background colour) of each run of characters as the browser computed them."""
    runs = box.locator(".rl-text > *").evaluate_all(
        "els => els.map(e => [e.textContent, getComputedStyle(e).backgroundColor])")
    return [(c, colour) for text, colour in runs for c in text]


def expected_colours(run, text, name, unit):
    """The colour of each character in the static views (rnnlens.render.colours), from the Python API."""
    display = display_for(name)
    values = display.transform(rnnlens.load(run).trace(text).unit(name, unit))
    hexes = display.scale.level_hex()
    return [rgb(hexes[level]) for level in display.scale.level(values)]


def test_typed_text_is_coloured_by_the_chosen_unit(page, server):
    open_page(page, server)
    box = show(page, 0, TEXT, "layer0.cell", 3)
    seen = colours_per_char(box)
    assert "".join(c for c, _ in seen) == TEXT
    assert [colour for _, colour in seen] == expected_colours(server["lstm"], TEXT, "layer0.cell", 3)
    assert set(dict(seen).values()) <= {rgb(h) for h in DIVERGING.level_hex()}  # red -1, white 0, blue +1
    assert "layer 0 \u00b7 unit 3 \u00b7 tanh(c)" in box.locator(".label").text_content()

    # another unit, and the colours follow it
    show(page, 0, TEXT, "layer0.cell", 7)
    again = colours_per_char(box)
    assert [colour for _, colour in again] == expected_colours(server["lstm"], TEXT, "layer0.cell", 7)
    assert again != seen

    # a gate is drawn white (closed) to green (open)
    show(page, 0, TEXT, "layer0.gate.forget", 7)
    gate = [colour for _, colour in colours_per_char(box)]
    assert gate == expected_colours(server["lstm"], TEXT, "layer0.gate.forget", 7)


def test_ranked_units_choose_the_unit(page, server):
    open_page(page, server)
    page.fill("#text", TEXT)
    first = page.locator(f"#units[data-chars='{len(TEXT)}'] li").first
    first.wait_for()
    label = first.locator("b").text_content()  # e.g. "L0 hidden 5"
    layer, kind, unit = re.fullmatch(r"L(\d+) (\S+) (\d+)", label).groups()
    first.click()
    page.wait_for_selector(f".panel:nth-child(1)[data-shown='layer{layer}.{kind}:{unit}:{len(TEXT)}']")
    assert page.locator("#units li.on").count() == 1


def test_select_and_match(page, server):
    open_page(page, server)
    show(page, 0, TEXT, "layer0.cell", 0)
    page.fill("#sel-start", "4")
    page.fill("#sel-end", "7")
    page.fill("#sel-threshold", "-1")  # every unit is on: every other window matches fully
    page.click("#select-btn")
    page.wait_for_selector("#matches li[data-i]")
    assert page.locator("#sel-units .chip").count() == 16
    matches = page.locator("#matches li[data-i]")
    assert matches.count() == 10
    assert matches.first.locator(".score").text_content() == "100%"
    assert page.locator(".panel .rl-text .sel").count() >= 1 and page.locator(".panel .rl-text .mk").count() >= 1
    # a chip puts its unit on the panel
    page.locator("#sel-units .chip").nth(5).click()
    page.wait_for_selector(f".panel:nth-child(1)[data-shown='layer0.cell:5:{len(TEXT)}']")

    # dragging over the text selects a span
    page.fill("#sel-threshold", "2")  # nothing reaches 2: the page says so
    page.locator(".panel").first.locator(".rl-text").evaluate(
        "box => { const r = document.createRange(); const t = box.querySelector('i').firstChild;"
        " r.setStart(t, 0); r.setEnd(t, 1); getSelection().removeAllRanges(); getSelection().addRange(r);"
        " box.dispatchEvent(new MouseEvent('mouseup', {bubbles: true})); }")
    assert page.input_value("#sel-start") == "0" and page.input_value("#sel-end") == "1"
    page.click("#select-btn")
    page.wait_for_selector("#sel-units .muted")
    assert "lower the threshold" in page.text_content("#sel-units")


def test_click_shows_the_prediction_strip(page, server):
    open_page(page, server)
    box = show(page, 0, TEXT, "layer0.cell", 2)
    first = box.locator(".rl-text i").first.bounding_box()
    page.mouse.click(first["x"] + 3, first["y"] + first["height"] / 2)
    page.wait_for_selector("#strip .rl-cols span.here")
    columns = page.locator("#strip .rl-cols > span")
    assert columns.count() >= 2
    assert columns.first.locator("i").count() == 5  # the five most likely next characters
    assert "after #0" in page.text_content("#strip-info")


def test_sample_with_the_temperature_slider(page, server):
    open_page(page, server)
    page.fill("#temperature", "0.5")
    assert page.text_content("#temperature-out") == "0.50"
    page.fill("#prime", "the ")
    page.fill("#sample-length", "80")
    page.click("#sample-btn")
    page.wait_for_selector("#sample-out[data-full]")
    out = page.text_content("#sample-out")
    assert out.startswith("the ") and len(out) == 84
    page.click("#sample-use")  # the sample becomes the text, and the panels read it
    page.wait_for_selector(f".panel:nth-child(1)[data-shown$=':{len(out)}']")
    assert page.input_value("#text") == out


def test_two_models_side_by_side(page, server):
    open_page(page, server)
    panels = page.locator(".panel")
    assert panels.count() == 2
    assert [panels.nth(i).locator(".model").text_content() for i in range(2)] == ["lstm", "gru"]
    left = show(page, 0, TEXT, "layer0.cell", 1)
    right = show(page, 1, TEXT, "layer0.hidden", 1)
    assert [c for _, c in colours_per_char(right)] == expected_colours(server["gru"], TEXT, "layer0.hidden", 1)
    assert [c for _, c in colours_per_char(left)] == expected_colours(server["lstm"], TEXT, "layer0.cell", 1)
    # side by side on a laptop screen
    a, b = left.bounding_box(), right.bounding_box()
    assert a["x"] + a["width"] <= b["x"] and abs(a["y"] - b["y"]) < 2


def test_ablate_redraws_text_strip_and_sample_and_reset_restores_them(page, server):
    from rnnlens.interventions import Ablate
    open_page(page, server)
    box = show(page, 0, TEXT, "layer0.cell", 2)
    page.fill("#prime", "the ")
    page.fill("#sample-length", "60")
    page.click("#sample-btn")
    page.wait_for_selector("#sample-out[data-full]")
    first = box.locator(".rl-text i").first.bounding_box()
    page.mouse.click(first["x"] + 3, first["y"] + first["height"] / 2)
    page.wait_for_selector("#strip .rl-cols span.here")
    before = {"colours": colours_per_char(box), "strip": page.inner_html("#strip"),
              "sample": page.get_attribute("#sample-out", "data-full")}

    box.locator(".edit-bar button[data-mode='ablate']").click()
    page.wait_for_selector(".panel:nth-child(1)[data-edit='ablate:change']")
    page.wait_for_selector("#strip[data-edit='ablate']")
    page.wait_for_selector("#sample-out[data-edit='ablate']")
    info = box.locator(".edit-info").text_content()
    assert "layer0.cell unit 2 ablated (set to 0)" in info and "nats/char" in info
    lm = rnnlens.load(server["lstm"])
    change = lm.predict(TEXT, interventions=[Ablate("layer0.cell", 2)]).loss - lm.predict(TEXT).loss
    shown = float(re.search(r"\(([+-]\d+\.\d+)\)", info).group(1))
    assert shown == pytest.approx(change, abs=1.5e-3)
    # the text is coloured by the change in loss now, and the strip and the sample come from the ablated model
    assert colours_per_char(box) != before["colours"]
    assert "ablated" in page.text_content("#strip-info")
    assert page.text_content("#sample-out").startswith("layer0.cell unit 2 ablated")
    # coloured by the unit again: ablated, it is 0 (white) at every character
    box.locator(".by-change input").uncheck()
    page.wait_for_selector(".panel:nth-child(1)[data-edit='ablate:unit']")
    white = rgb(DIVERGING.level_hex()[DIVERGING.steps // 2])
    assert {colour for _, colour in colours_per_char(box)} == {white}

    # the clean trace lands after the strip and the sample (CI once saw that order): the strip's colours follow it
    page.route("**/api/trace", lambda route: (time.sleep(1.0), route.continue_()))
    box.locator(".edit-bar button.reset").click()
    page.wait_for_selector(".panel:nth-child(1)[data-edit='']")
    page.wait_for_selector("#strip[data-edit='']")
    page.wait_for_selector("#sample-out[data-edit='']")
    assert colours_per_char(box) == before["colours"]
    assert page.inner_html("#strip") == before["strip"]
    assert page.get_attribute("#sample-out", "data-full") == before["sample"]  # the same seed, no edit
