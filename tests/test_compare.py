"""Where one model beats another: loss by character class, the long-range study, the comparison page, `rnnlens compare`."""

import base64
import csv
import json
import math
import re

import numpy as np
import pytest
from compare_helpers import preds_with
from conftest import run_cli, train_tiny_runs

from rnnlens.analysis.classes import CLASSES, char_class, class_ids, loss_by_class
from rnnlens.analysis.longrange import (
    bin_labels,
    closing_distances,
    closing_study,
    newline_columns,
    newline_study,
    parse_bins,
    parse_pair,
)
from rnnlens.errors import RnnlensError
from rnnlens.render.comparison import comparison_page, position_losses


@pytest.mark.parametrize("chars, cls", [
    ("a\u00e9\u4e2d\u03c9", "letters"), ("Z\u00c9\u03a9", "capitals"), (" ", "space"), ("\t\f\u00a0", "whitespace"),
    ("\n", "newline"), ("\r", "carriage return"),
    (".,;:!?-_/\\@#$%^&*+=<>|~", "punctuation"), ("09\u0663", "digits"), ("()[]{}", "brackets"),
    ("'\"`\u2018\u2019\u201c\u201d\u00ab\u00bb", "quotes"), ("\x00\x7f\u0301", "other"),
])
def test_char_class(chars, cls):
    assert [char_class(c) for c in chars] == [cls] * len(chars)
    assert set(class_ids(chars).tolist()) == {CLASSES.index(cls)}


def test_loss_by_class_values():
    text = "xa b.\nc"  # predicted: a ' ' b . \n c -> letters a,b,c; space ' '; punctuation '.'; newline
    pa = preds_with(text, [0.5, 0.25, 0.5, 1.0, 0.1, 0.5], name="A")
    pb = preds_with(text, [0.5] * 6, name="B")
    r = loss_by_class(pa, pb)
    c = {name: i for i, name in enumerate(r.classes)}
    assert r.counts[c["letters"]] == 3 and r.counts[c["space"]] == 1 and r.counts[c["newline"]] == 1
    assert r.counts[c["punctuation"]] == 1 and r.counts[c["digits"]] == 0 and r.chars == 6
    la = -np.log([0.5, 0.25, 0.5, 1.0, 0.1, 0.5])
    # letters are rows 0 (a), 2 (b), 5 (c)
    assert r.mean_loss[0, c["letters"]] == pytest.approx((la[0] + la[2] + la[5]) / 3, rel=1e-6)
    assert r.mean_loss[0, c["space"]] == pytest.approx(la[1], rel=1e-6)
    assert r.mean_loss[0, c["punctuation"]] == pytest.approx(0.0, abs=1e-6)
    assert r.mean_loss[0, c["newline"]] == pytest.approx(la[4], rel=1e-6)
    assert math.isnan(r.mean_loss[0, c["digits"]])
    assert r.share[0, c["newline"]] == pytest.approx(la[4] / la.sum(), rel=1e-5)
    assert r.share.sum(axis=1) == pytest.approx([1, 1])
    assert r.overall == pytest.approx([la.mean(), math.log(2)], rel=1e-6)
    md = r.markdown()
    assert "| letters | 3 |" in md and "A \u2212 B nats" in md
    assert md.splitlines()[-1].startswith("| all | 6 |")


def test_names_made_distinct_and_texts_checked():
    a, b = preds_with("abc", 0.5), preds_with("abc", 0.5)
    assert loss_by_class(a, b).models == ["model", "model (2)"]
    with pytest.raises(RnnlensError, match="different texts"):
        loss_by_class(a, preds_with("abd", 0.5))
    with pytest.raises(RnnlensError, match="different texts"):
        closing_study(a, preds_with("abd", 0.5))


def test_closing_distances_nested_and_unmatched():
    #       0123456789012345
    text = "}a{b{cd}e}f}{x(}"
    pos, dist = closing_distances(text, "{}")
    # '}' at 0: unmatched; '}' at 7 closes '{' at 4; at 9 closes 2; at 11: unmatched; '{' at 12 never closed;
    # '}' at 15 closes '{' at 12 ('(' is not part of the pair)
    assert pos.tolist() == [7, 9, 15] and dist.tolist() == [3, 7, 3]
    pos, dist = closing_distances("((a)(b))", "()")
    assert pos.tolist() == [3, 6, 7] and dist.tolist() == [2, 2, 7]
    assert closing_distances("no braces", "{}")[0].tolist() == []


def test_closing_study_binned_means_exact():
    text = "{ab}{" + "x" * 12 + "}{}"
    # '}' at 3 (distance 3), at 17 (distance 13), at 19 (distance 1)
    p = np.full(len(text) - 1, 0.5)
    p[2], p[16], p[18] = 0.2, 0.6, 0.9      # row i-1 predicts text[i]
    a = preds_with(text, p, name="A")
    b = preds_with(text, 0.1, name="B")
    s = closing_study(a, b, pair="{}", bins="0,2,10")
    assert s.labels == ["0-1", "2-9", ">=10"]
    assert s.counts.tolist() == [1, 1, 1] and s.below == 0
    assert s.mean_p[0] == pytest.approx([0.9, 0.2, 0.6], rel=1e-6)
    assert s.mean_p[1] == pytest.approx([0.1, 0.1, 0.1], rel=1e-6)
    assert s.difference() == pytest.approx([0.8, 0.1, 0.5], rel=1e-5)
    s = closing_study(a, b, bins=[2, 4])  # distance 1 falls below the first edge
    assert s.counts.tolist() == [1, 1] and s.below == 1
    assert s.mean_p[0] == pytest.approx([0.2, 0.6], rel=1e-6)
    s = closing_study(a, b, bins=[20, 30])
    assert s.counts.tolist() == [0, 0] and np.isnan(s.mean_p).all()
    assert s.to_dict()["mean_p"] == [[None, None], [None, None]]


def test_newline_by_column():
    text = "hi\nabc\n\nxy\n"
    pos, col = newline_columns(text)
    assert pos.tolist() == [6, 7, 10] and col.tolist() == [3, 0, 2]  # the first line's newline is skipped
    p = np.full(len(text) - 1, 0.3)
    p[5], p[6], p[9] = 0.8, 0.4, 0.6
    s = newline_study(preds_with(text, p), bins="0,1,3")
    assert s.counts.tolist() == [1, 1, 1]
    assert s.mean_p[0] == pytest.approx([0.4, 0.6, 0.8], rel=1e-6)
    assert s.char == "\n" and s.study == "newline"


def test_bins_and_pairs_validated():
    assert parse_bins(None)[:3] == (0, 10, 20) and parse_bins("log")[:4] == (1, 2, 4, 8)
    assert bin_labels((0, 1, 5)) == ["0", "1-4", ">=5"]
    for bad in ("10,5", "a,b", "", "-1,3", "3,3"):
        with pytest.raises(RnnlensError, match="bin"):
            parse_bins(bad)
    for bad in ("{", "{{", "abc"):
        with pytest.raises(RnnlensError, match="two different characters"):
            parse_pair(bad)


def _float16(attr: str, page: str) -> np.ndarray:
    b64 = re.search(rf'data-{attr}="([^"]*)"', page).group(1)
    return np.frombuffer(base64.b64decode(b64), dtype="<f2")


def test_comparison_page_colours_and_hover_data():
    text = "a<b&c"
    pa = preds_with(text, [0.9, 0.1, 0.5, 0.5], name="lstm")
    pb = preds_with(text, [0.1, 0.9, 0.5, 0.05], name="ngram")
    _, _, diff = position_losses(pa, pb)
    assert np.isnan(diff[0]) and diff[1] > 0 and diff[2] < 0 and diff[3] == 0
    page = comparison_page(pa, pb, scale=2.0)
    assert "http://" not in page and "https://" not in page and " src=" not in page
    spans = re.findall(r"<i class=d(\d+)>([^<]*)</i>", page)
    levels = {chars: int(level) for level, chars in spans}
    assert levels["a"] == 16                    # no prediction: white, the middle of 33 levels
    assert levels["&lt;"] > 16                  # A (lstm) better: blue end
    assert levels["b"] < 16                     # B (ngram) better: red end
    assert levels["&amp;"] == 16                # equal
    assert levels["c"] == 32                    # lstm better by ln(10) > 2 nats: full blue
    a, b = _float16("a", page), _float16("b", page)
    assert np.isnan(a[0]) and a[1:] == pytest.approx(-np.log([0.9, 0.1, 0.5, 0.5]), rel=1e-3)
    assert b[1:] == pytest.approx(-np.log([0.1, 0.9, 0.5, 0.05]), rel=1e-3)
    assert 'data-na="lstm"' in page and 'data-nb="ngram"' in page
    with pytest.raises(RnnlensError, match="scale"):
        comparison_page(pa, pb, scale=0)


def test_comparison_page_cuts_an_end_past_the_text_like_a_slice():
    text = "a<b&c"
    pa = preds_with(text, [0.9, 0.1, 0.5, 0.5], name="lstm")
    pb = preds_with(text, [0.1, 0.9, 0.5, 0.05], name="ngram")
    page = comparison_page(pa, pb, 0, 20_000)
    assert page == comparison_page(pa, pb, 0, len(text))
    assert "characters 0\u20135 of 5" in page
    for start, end in [(5, 20_000), (3, 2), (-1, 4)]:  # an empty or negative span is still an error
        with pytest.raises(RnnlensError, match="not inside the text"):
            comparison_page(pa, pb, start, end)


# ------------------------------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("compare"), ["lstm", "gru"])


def test_cli_compare_end_to_end(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    body = "the cat sat.\nthe dog ran to a red box.\n" * 20
    text.write_text(body)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "compare", runs["lstm"], runs["gru"], "--text", text, "--out", out,
                                "--pair", "{}", "--pair", "to")
    assert code == 0, err
    assert "| letters |" in stdout and "lstm \u2212 gru nats" in stdout
    for name in ("classes.csv", "classes.md", "classes.png", "longrange.csv", "longrange.json", "longrange.png",
                 "compare.html"):
        assert (out / name).stat().st_size > 100, name
    with open(out / "classes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(CLASSES) + ["all"]
    assert sum(int(r["count"]) for r in rows[:-1]) == int(rows[-1]["count"]) == len(body) - 1
    assert float(rows[-1]["lstm share"]) == 1.0
    studies = json.loads((out / "longrange.json").read_text())["studies"]
    assert [s["study"] for s in studies] == ["{}", "to", "newline"]
    assert studies[2]["occurrences"] == body.count("\n") - 1
    # 't' opens and 'o' closes: every repetition pushes 5 t's and pops 3, so every 'o' finds its 't'
    assert studies[1]["occurrences"] == body.count("o") == 60 and studies[0]["occurrences"] == 0
    page = (out / "compare.html").read_text()
    assert "https://" not in page and "lstm against gru" in page
    overlap = (out / "overlap.html").read_text()
    assert "only lstm fails" in overlap and "errors (p(true char) &lt; 0.5)" in overlap
    assert "errors (p(true char) < 0.5) over" in stdout


def test_cli_compare_json_and_log_bins(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("a cat.\n" * 30)
    code, stdout, err = run_cli(capsys, "compare", runs["lstm"], runs["gru"], "--text", text, "--out", tmp_path,
                                "--bins", "log", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["classes"]["models"] == ["lstm", "gru"]
    newline = result["longrange"][-1]
    assert newline["edges"][:3] == [1, 2, 4] and sum(newline["counts"]) == 29  # every line has 6 characters
    o = result["overlap"]
    assert o["chars"] == 30 * 7 - 1 and o["both"] + o["only"]["lstm"] == o["errors"]["lstm"]


@pytest.mark.parametrize("args, message", [
    (["RUN"], "at least two models"),
    (["RUN", "MISSING"], "does not exist"),
    (["RUN", "RUN", "--pair", "{"], "two different characters"),
    (["RUN", "RUN", "--bins", "5,1"], "bin edges"),
    (["RUN", "RUN", "--html-length", "0"], "--html-length"),
])
def test_cli_compare_bad_inputs(runs, tmp_path, capsys, args, message):
    text = tmp_path / "t.txt"
    text.write_text("the cat.\n" * 3)
    args = [str(runs["lstm"]) if a == "RUN" else str(tmp_path / "nope") if a == "MISSING" else a for a in args]
    code, _, err = run_cli(capsys, "compare", *args, "--text", text, "--out", tmp_path / "o")
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_compare_unknown_characters(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. ZQ\u00e9\n")
    code, _, err = run_cli(capsys, "compare", runs["lstm"], runs["gru"], "--text", text, "--out", tmp_path / "o")
    assert code == 2 and "never saw 3 of the text's characters" in err and "'Z'" in err
    assert not (tmp_path / "o").exists()


def test_comparison_page_hover_in_a_browser(page, tmp_path):
    text = "a<b&c" + "xy" * 12_000  # longer than the markup limit: coloured by the page's script
    p = np.full(len(text) - 1, 0.5)
    p[:4] = [0.9, 0.1, 0.5, 0.5]
    pa = preds_with(text, p, name="lstm")
    q = np.full(len(text) - 1, 0.5)
    q[:4] = [0.1, 0.9, 0.5, 0.05]
    pb = preds_with(text, q, name="ngram")
    f = tmp_path / "c.html"
    f.write_text(comparison_page(pa, pb))
    page.goto(f.as_uri())
    assert page.locator(".rl-cmp .rl-text i").count() > 3   # painted by the page's script
    target = page.locator(".rl-cmp .rl-text i", has_text="b").first
    assert target.text_content() == "b" and "d" in target.get_attribute("class")
    target.hover()
    tip = page.text_content(".rl-tip")
    lines = tip.splitlines()
    assert lines[0].startswith("b") and lines[0].endswith("#2")
    pa_shown = float(re.search(r"lstm: p = ([\d.]+)%", tip).group(1))
    pb_shown = float(re.search(r"ngram: p = ([\d.]+)%", tip).group(1))
    assert pa_shown == pytest.approx(10, rel=0.01) and pb_shown == pytest.approx(90, rel=0.01)
    assert re.search(r"loss ngram \u2212 lstm = -2\.19\d nats", tip)


def test_error_overlap_counts_and_page():
    from rnnlens.analysis.overlap import BOTH, NEITHER, ONLY_A, ONLY_B, error_overlap
    from rnnlens.render.comparison import overlap_page
    text = "abcdefg"  # six predictions
    a = preds_with(text, [0.9, 0.1, 0.2, 0.8, 0.4, 0.6], name="lstm")
    b = preds_with(text, [0.9, 0.3, 0.7, 0.1, 0.45, 0.5], name="20-gram")
    o = error_overlap(a, b)
    assert o.groups.tolist() == [NEITHER, BOTH, ONLY_A, ONLY_B, BOTH, NEITHER]
    d = o.to_dict()
    assert d["errors"] == {"lstm": 3, "20-gram": 3} and d["both"] == 2 and d["only"] == {"lstm": 1, "20-gram": 1}
    assert d["neither"] == 2 and d["shared_share"] == pytest.approx(0.5)
    assert "both 2, only lstm 1, only 20-gram 1" in o.table()
    page = overlap_page(o, text)
    assert page.count("background:#c7b6e0") == 2 + 1  # the two 'both' runs and the legend
    assert "only lstm fails" in page
    with pytest.raises(RnnlensError, match="threshold"):
        error_overlap(a, b, threshold=0)
