"""The corpus page in headless Chromium against the real `rnnlens serve` on a text of ~300,000 characters:
first paint, scrolling to the end, select and match across the whole text, an edit that re-traces from its
checkpoint (checked on what the server recomputed), and the line plot."""

import json
import os
import random
import urllib.request

import pytest
from browser import served
from conftest import train_tiny_runs

SIZE = 300_000


def corpus_text(n: int = SIZE, seed: int = 0) -> str:
    """Lines of words with "quoted phrases" and (brackets), so quote and bracket units have something to track."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "a", "red", "box"]
    out, size = [], 0
    while size < n:
        parts = []
        for _ in range(rng.randint(3, 9)):
            w = rng.choice(words)
            r = rng.random()
            if r < 0.08:
                w = '"' + " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) + '"'
            elif r < 0.14:
                w = "(" + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) + ")"
            parts.append(w)
        line = " ".join(parts) + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n]


def get(url):
    return json.loads(urllib.request.urlopen(url, timeout=30).read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus-browser")
    runs = train_tiny_runs(root, ["lstm"])
    text = root / "corpus.txt"
    text.write_text(corpus_text())
    with served([runs["lstm"], "--text", text], root, "api/status", {"RNNLENS_CACHE": str(root / "cache")}) as url:
        yield {"url": url, "text": text.read_text(), "root": root}


def shots():
    return os.environ.get("RNNLENS_SCREENSHOTS")


def test_corpus_page_paints_scrolls_selects_matches_edits_and_plots(server, page):
    url, text = server["url"], server["text"]
    page.goto(url)  # a long text: / is the corpus page
    page.wait_for_selector("#view i", timeout=30_000)  # first paint: the window at the start
    assert page.title().startswith("rnnlens explorer: corpus")
    assert page.inner_text("#view").startswith(text[:40])
    page.wait_for_function("() => document.body.dataset.complete === '1'", timeout=60_000)  # the background trace
    # the line plot of every unit over the first characters
    page.wait_for_function("() => (document.getElementById('plot').dataset.shown || '').startsWith('lstm:layer0.cell:0:')")
    # scrolling: the wheel moves by lines; Ctrl+End to the end of the text
    page.hover("#view")
    page.mouse.wheel(0, 300)
    page.wait_for_function("() => !document.getElementById('view').dataset.shown.startsWith('0:')")
    page.click("#view")
    page.keyboard.press("Control+End")
    page.wait_for_function(f"() => document.getElementById('view').dataset.shown.startsWith('{SIZE - 1500}:')")
    assert page.inner_text("#view").replace("\u21b5", "\n").rstrip().endswith(text[-30:].rstrip())
    # select a quoted phrase near the end and match it across the whole text
    q = text.rfind('"', 0, len(text) - 300)
    start = text.rfind('"', 0, q)
    page.evaluate(f"() => window.rnnlensCorpus.go({start - 100})")
    page.wait_for_function(f"() => document.getElementById('view').dataset.shown.startsWith('{start - 100}:')")
    page.fill("#sel-from", str(start))
    page.fill("#sel-to", str(q + 1))
    page.fill("#threshold", "0.0")
    page.click("#select-btn")
    page.wait_for_function("() => document.getElementById('sel-units').dataset.count !== undefined")
    if int(page.get_attribute("#sel-units", "data-count")) == 0:
        page.fill("#threshold", "-0.5")
        page.click("#select-btn")
        page.wait_for_function("() => +document.getElementById('sel-units').dataset.count > 0")
    page.fill("#min-len", "2")
    page.fill("#max-len", "40")
    page.click("#match-btn")
    page.wait_for_function("() => document.getElementById('matches').dataset.count !== undefined", timeout=30_000)
    assert int(page.get_attribute("#matches", "data-count")) > 0
    if shots():
        page.evaluate("() => window.getSelection().removeAllRanges()")
        page.screenshot(path=os.path.join(shots(), "explorer-corpus.png"), full_page=True)
    page.locator("#matches li").first.click()  # jumps to the match
    page.wait_for_function("() => !document.getElementById('view').dataset.shown.startsWith('%d:')" % (start - 100))
    # an edit near the end re-traces from the checkpoint before it, not the whole text
    before = get(url + "api/status")["models"]["lstm"]["recomputed"]
    page.evaluate(f"() => window.rnnlensCorpus.go({SIZE - 1500})")
    page.wait_for_function(f"() => document.getElementById('view').dataset.shown.startsWith('{SIZE - 1500}:')")
    page.evaluate(f"() => window.rnnlensCorpus.edit({SIZE - 10}, {SIZE - 9}, 'Q')")
    page.wait_for_function("() => document.getElementById('edit-info').dataset.retracedFrom !== undefined")
    assert int(page.get_attribute("#edit-info", "data-retraced-from")) == (SIZE - 10) // 2000 * 2000
    status = get(url + "api/status")["models"]["lstm"]
    assert status["recomputed"] - before == SIZE - (SIZE - 10) // 2000 * 2000
    assert status["last_edit"]["retraced_from"] == (SIZE - 10) // 2000 * 2000
    assert get(url + f"api/text?from={SIZE - 12}&to={SIZE - 7}")["text"] == text[SIZE - 12:SIZE - 10] + "Q" + \
        text[SIZE - 9:SIZE - 7]
    # typing into the text is an edit too
    page.wait_for_function("() => document.getElementById('view').dataset.shown.split(':')[2] === '1'")
    page.locator("#view i").first.click()
    page.keyboard.type("x")
    page.wait_for_function("() => document.getElementById('view').dataset.shown.split(':')[2] === '2'")
    assert get(url + "api/status")["length"] == SIZE + 1
