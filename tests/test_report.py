"""rnnlens report: one self-contained HTML page that explains a model (rnnlens.report, rnnlens.render.report)."""

import base64
import math
import re
import shutil

import numpy as np
import pytest
from conftest import make_text, run_cli, train_tiny_runs

import rnnlens
from rnnlens.errors import RnnlensError
from rnnlens.render.report import (
    SECTIONS,
    model_card_section,
    saturation_section,
    timescales_section,
    training_section,
)
from rnnlens.report import ReportContext, build_report, default_text, open_context, sample_prime, write_report

TITLES = ["Model card", "Training curves", "Samples", "Test loss", "Beside n-gram baselines",
          "Interpretable units", "Gate saturation", "Memory time constants", "Gradient flow",
          "Loss by character class", "Error taxonomy", "The closing brace"]
FAST = dict(sample_length=40, positions=4, max_lag=20)  # keeps each report to a second or two


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("report"), ["lstm", "gru", "rnn"])


@pytest.fixture(scope="module")
def lstm_page(runs, tmp_path_factory):
    """The report of the tiny LSTM on its own test split, every unit shown (min_strength 0)."""
    out = tmp_path_factory.mktemp("page") / "report.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLENS_CACHE", str(runs["lstm"].parent / "cache"))
        report = build_report(runs["lstm"], min_strength=0.0, **FAST)
        report.save(out)
    return report, out.read_text(encoding="utf-8")


def test_report_file_holds_every_section_self_contained(lstm_page):
    report, page = lstm_page
    assert [s.title for s in report.sections] == TITLES
    for n, title in enumerate(TITLES, 1):
        assert f"<h2>{n}. {title}</h2>" in page
        assert f"<a href='#{report.sections[n - 1].id}'>{n}. {title}</a>" in page  # the table of contents
    # nothing is fetched: no URL anywhere, every src an inline data: URI, every link a place on the page
    assert re.search(r"https?://", page) is None
    assert re.search(r"<link\b", page) is None
    srcs = re.findall(r"\bsrc=['\"]?([^'\" >]+)", page)
    assert srcs and all(s.startswith("data:image/svg+xml;base64,") for s in srcs)
    assert all(h.startswith("#") for h in re.findall(r"\bhref=['\"]?([^'\" >]+)", page))
    # figures: training curves, saturation, half-lives, gradient flow, classes, errors, long range: real SVGs
    assert len(srcs) == 7
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).lstrip().startswith((b"<?xml", b"<svg"))
    # coloured characters (diverging levels d0..d32) and a prediction strip
    assert re.search(r"<i class=d\d+>", page)
    assert "rl-strip" in page
    # the comparisons with the n-gram baseline are drawn, none says it is missing
    compared = {s.id: s for s in report.sections if s.id in ("ngram", "classes", "errors", "closing-brace")}
    assert len(compared) == 4 and all(s.note is None for s in compared.values())


def test_ngram_sections_show_the_baselines_numbers(runs, lstm_page):
    from rnnlens.ngram import train_ngram
    report, page = lstm_page
    ngram = train_ngram(str(runs["text"]), 20)  # the report fits the same on the run's corpus
    lm = rnnlens.load(runs["lstm"])
    text = default_text(lm, 20_000)[0]
    three = ngram.predict(text, order=3).loss
    assert f"{three:.3f} nats" in page  # the 3-gram's bar
    section = next(s for s in report.sections if s.id == "errors")
    assert "n-gram oracle" in section.body and "errors among" in section.body


def test_ngram_sections_say_why_without_a_corpus(runs, tmp_path):
    loose = tmp_path / "model.safetensors"
    shutil.copy(runs["lstm"] / "best.safetensors", loose)
    text = make_text(20, seed=2)
    report = build_report(loose, text, ngram_order=0, **FAST)
    notes = {s.id: s.note for s in report.sections}
    assert notes["ngram"] == "no n-gram baseline: the report was made with --ngram-order 0"
    assert notes["classes"].startswith("no n-gram beside it") and notes["errors"].startswith("no n-gram oracle")


def test_report_numbers_match_the_model(runs, lstm_page):
    report, page = lstm_page
    lm = rnnlens.load(runs["lstm"])
    text = lstm_page_text(lm)
    expected = lm.evaluate(text, batch_size=1, seq_len=len(text)).loss  # one stream: every character's full context
    assert f"{expected:.3f} nats \u00b7 {expected / math.log(2):.2f} bits" in page
    assert f"ln {len(lm.vocab)}" in page
    assert "LSTM 1 \u00d7 16" in page
    assert f"{len(text):,} characters" in page
    # the samples are seeded: the same as sampling the model directly with the same prime and seed
    prime = sample_prime(text)
    for t in (0.5, 0.8, 1.0):
        sample = lm.sample(40, prime=prime, temperature=t, seed=0)
        assert sample.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
        assert f"<h3>temperature {t:g}</h3>" in page


def test_units_table_shows_the_loss_change_when_each_unit_is_ablated(runs, lstm_page):
    from rnnlens.analysis.causal import causal_effects
    from rnnlens.report import ReportOptions
    report, page = lstm_page
    section = next(s for s in report.sections if s.id == "units")
    assert "<th>loss change when ablated</th>" in section.body
    lm = rnnlens.load(runs["lstm"])
    text = lstm_page_text(lm)
    with open_context(lm, text, options=ReportOptions(**FAST)) as ctx:
        units = ctx.best_units
        effects = ctx.causal_effects
    assert len(units) >= 3 and effects.chars == min(2000, len(text) - 1)
    assert f"over the first {effects.chars + 1:,} characters of the text" in section.body
    again = causal_effects(lm, text, units, max_chars=2000)  # the same units measured directly
    for u, e in zip(units, effects.effects):
        assert (e.feature, e.layer, e.kind, e.unit) == (u.feature, u.layer, u.kind, u.unit)
        direct = again.find(u.feature, u.layer, u.kind, u.unit)
        assert e.change_all == direct.change_all
        assert f"all {e.change_all:+.3f}</span>" in section.body
        if e.change_on == e.change_on:
            assert f"<td class=n>{e.change_on:+.3f}<br>" in section.body
    off = build_report(lm, text[:300], ablate_chars=0, sections=[SECTIONS[5]], **FAST)
    assert "not measured (--ablate-chars 0)" in off.sections[0].body


def lstm_page_text(lm):
    from rnnlens.report import default_text
    return default_text(lm, 20_000)[0]


def test_default_text_is_the_start_of_the_test_split(runs, monkeypatch):
    from rnnlens.corpus import load_corpus
    from rnnlens.report import default_text
    monkeypatch.setenv("RNNLENS_CACHE", str(runs["lstm"].parent / "cache"))
    lm = rnnlens.load(runs["lstm"])
    corpus = load_corpus(str(runs["text"]))
    text, source = default_text(lm, 100)
    assert text == corpus.text("test")[:100]
    assert source.startswith("the test split of") and "characters 0\u2013100 of" in source


def test_sections_come_from_one_trace(runs, monkeypatch):
    lm = rnnlens.load(runs["lstm"])
    calls = []
    original = type(lm).trace

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("names"))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(type(lm), "trace", counting)
    report = build_report(lm, make_text(40), **FAST)
    assert len(calls) == 1
    assert {"probs", "loss", "layer0.cell", "layer0.hidden", "layer0.gate.forget"} <= set(calls[0])
    assert "layer0.gate.candidate" not in calls[0]  # only what some section reads
    assert report.timings["trace"] > 0 and set(report.timings) >= {"units", "gradients", "total"}


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells(runs, cell):
    report = build_report(runs[cell], make_text(40), sections=[model_card_section, saturation_section,
                                                               timescales_section], **FAST)
    page = report.html()
    sat = next(s for s in report.sections if s.id == "saturation")
    ts = next(s for s in report.sections if s.id == "timescales")
    if cell == "rnn":
        assert sat.note.startswith("not available for a plain RNN") and not sat.body
        assert ts.note.startswith("not available for a plain RNN")
        assert "an RNN 1\u00d716" in page
    else:
        assert sat.note is None and "data:image/svg+xml" in sat.body and "update" in sat.body
        assert "mean 1-z (keep fraction)" in ts.body and "GRU unit" in ts.explanation and "paper" in ts.explanation
        assert "a GRU 1\u00d716" in page


def test_size_bound_on_a_100k_character_text(runs, tmp_path):
    text = make_text(6000, seed=3)[:100_000]
    assert len(text) == 100_000
    out = write_report(runs["lstm"], text, out=tmp_path / "big.html", max_chars=None, **FAST)
    size = out.stat().st_size
    assert size < 10 * 2**20
    page = out.read_text()
    assert "Read over 100,000 characters" in page
    assert re.search(r"https?://", page) is None


def test_loose_checkpoint_without_its_run_folder(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLENS_CACHE", str(runs["lstm"].parent / "cache"))
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(runs["lstm"] / "best.safetensors", ckpt)
    report = build_report(ckpt, sections=[training_section], **FAST)  # its default text still comes from the corpus named in the checkpoint
    training = next(s for s in report.sections if s.id == "training")
    assert "no metrics.jsonl" in training.note
    assert report.title.startswith("model: an LSTM")


def test_jupyter_views(runs, tmp_path):
    import torch

    from rnnlens.checkpoint import save_checkpoint
    from rnnlens.corpus import Vocab
    from rnnlens.model import CharRNN, ModelConfig
    text = make_text(10)
    vocab = Vocab(text)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.safetensors", CharRNN(ModelConfig(vocab_size=len(vocab), layers=2, size=48)),
                    vocab, {"kind": "weights"})
    view = rnnlens.load(tmp_path / "m.safetensors").trace(text).view("layer1.cell", 42)
    html = view._repr_html_()
    assert "<style>" in html and "rl-unit" in html and re.search(r"<i class=d\d+>", html)
    assert "layer 1 \u00b7 unit 42" in html
    # the report and its sections show inline too
    report = build_report(runs["lstm"], make_text(30), sections=SECTIONS[:2], **FAST)
    assert "<h2>1. Model card</h2>" in report._repr_html_() and "<!DOCTYPE" not in report._repr_html_()
    assert "Model card" in report.sections[0]._repr_html_()


def test_a_section_that_fails_on_this_text_says_why(runs):
    def broken_section(ctx):
        raise RnnlensError("needs a longer text")
    report = build_report(runs["lstm"], make_text(5), sections=[broken_section], **FAST)
    assert report.sections[0].note == "not available: needs a longer text"


def test_options_are_checked(runs):
    with pytest.raises(RnnlensError, match="temperature"):
        build_report(runs["lstm"], "the cat", temperatures=(0.5, 0.0))
    with pytest.raises(RnnlensError, match="at least 2"):
        build_report(runs["lstm"], "t")
    with pytest.raises(RnnlensError, match="not in the vocabulary"):
        build_report(runs["lstm"], "the cat \u00e9")
    with pytest.raises(RnnlensError, match="must end in .html"):
        build_report(runs["lstm"], "the cat sat.", sections=[]).save("x.png")


def test_context_closes_its_temporary_trace(runs, monkeypatch):
    import rnnlens.runs
    monkeypatch.setattr(rnnlens.runs, "IN_MEMORY_BYTES", 0)  # force the file-backed trace
    lm = rnnlens.load(runs["lstm"])
    with open_context(lm, make_text(20)) as ctx:
        assert isinstance(ctx, ReportContext)
        assert ctx.trace.path is not None and ctx.trace.path.exists()
        folder = ctx.trace.path.parent
        assert np.isfinite(ctx.text_loss["loss"])
    assert not folder.exists()


# ---------------------------------------------------------------------------------------------
# The command


def test_cli_report(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNLENS_CACHE", str(runs["lstm"].parent / "cache"))
    out = tmp_path / "sub" / "r.html"
    code, stdout, err = run_cli(capsys, "report", runs["lstm"], "--out", out, "--max-chars", 100)
    assert code == 0, err
    assert stdout.strip() == str(out)
    page = out.read_text()
    assert "Read over 100 characters: the test split of" in page
    text_file = tmp_path / "t.txt"
    text_file.write_text(make_text(50, seed=2))
    code, stdout, err = run_cli(capsys, "report", runs["lstm"], "--text", text_file, "--max-chars", 500,
                                "--out", out, "--seed", 3)
    assert code == 0, err
    page = out.read_text()
    assert f"{text_file}, characters 0\u2013500 of {len(make_text(50, seed=2)):,}" in page
    assert "seed 3" in page


def test_cli_report_bad_inputs(runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", tmp_path / "nope")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(capsys, "report", runs["lstm"], "--text", empty)
    assert code == 2 and "is empty" in err
    code, _, err = run_cli(capsys, "report", runs["lstm"], "--text", runs["text"], "--out", tmp_path / "r.pdf")
    assert code == 2 and "must end in .html" in err
    code, _, err = run_cli(capsys, "report", runs["lstm"], "--text", runs["text"], "--max-chars", 0)
    assert code == 2 and "--max-chars" in err
    odd = tmp_path / "odd.txt"
    odd.write_text("the cat \u00e9\u00e9\n")
    code, _, err = run_cli(capsys, "report", runs["lstm"], "--text", odd, "--out", tmp_path / "o.html")
    assert code == 2 and "--unknown" in err
    code, _, err = run_cli(capsys, "report", runs["lstm"], "--text", odd, "--unknown", "drop",
                           "--out", tmp_path / "o.html")
    assert code == 0, err


def test_demo_ends_with_the_report(tmp_path, capsys):
    from rnnlens.demo import run_demo
    data = tmp_path / "input.txt"
    data.write_text(make_text(400))
    out = run_demo(data=str(data), time_budget=1.0, out=tmp_path / "run", device="cpu", progress=False,
                   sample_length=20)
    stdout = capsys.readouterr().out
    assert (out / "report.html").exists()
    assert f"report: {out / 'report.html'}" in stdout
    page = (out / "report.html").read_text()
    assert "whole test split" in page  # the demo's eval.json is in the report's test loss


def test_the_docs_python_example_runs(runs, tmp_path, monkeypatch):
    from pathlib import Path
    doc = Path(__file__).resolve().parents[1] / "docs" / "report.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNLENS_CACHE", str(runs["lstm"].parent / "cache"))
    (tmp_path / "input.txt").write_text(make_text(30, seed=4))
    code = blocks[0].replace('"runs/demo"', repr(str(runs["lstm"])))
    exec(compile(code, "report.md", "exec"), {})
    for name in ("report.html", "mine.html"):
        assert "<h2>6. Interpretable units</h2>" in (tmp_path / name).read_text()
