"""`rnnlens viz` end to end on a tiny model trained here, and its one-line errors."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_text

import rnnlens
from rnnlens.cli import main
from rnnlens.names import resolve_activation
from rnnlens.render.colours import DIVERGING


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1x16 LSTM trained for 30 steps (a few seconds), with a private corpus cache."""
    root = tmp_path_factory.mktemp("viz")
    data = root / "input.txt"
    data.write_text(make_text(300))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLENS_CACHE", str(root / "cache"))
        rnnlens.train(data=str(data), out=root / "run", layers=1, size=16, max_steps=30, batch_size=4, seq_len=20,
                      progress=False)
    return root / "run"


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(make_text(40, seed=5))
    return path


def viz(capsys, *args):
    code = main(["viz", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def test_viz_writes_a_page_of_the_cell_by_default(run, text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = viz(capsys, run, "--text", text, "--unit", "0:3")
    assert code == 0, err
    page_path = tmp_path / out.strip()
    assert page_path.name == "run-0-3-cell.html"
    page = page_path.read_text()
    assert "tanh(c)" in page and "layer 0 \u00b7 unit 3" in page
    # the colours are those of tanh(c) of the unit over the text, as traced through the API
    body = text.read_text()
    expected = rnnlens.load(run).trace(body, names=["layer0.cell"]).unit("layer0.cell", 3)
    levels = [int(m) for m in re.findall(r"<[iu] class=d(\d+)>", page)]
    runs = re.findall(r"<[iu] class=d\d+>([^<]*)</[iu]>", page)
    per_char = np.repeat(levels, [len(r) for r in runs])
    assert per_char.tolist() == DIVERGING.level(np.tanh(expected)).tolist()


def test_viz_strip_gate_and_png(run, text, tmp_path, capsys):
    code, out, err = viz(capsys, run, "--text", text, "--unit", "0:5", "--strip", "--start", "10", "--length", "30",
                         "--out", tmp_path / "strip.html")
    assert code == 0, err
    page = (tmp_path / "strip.html").read_text()
    assert page.count("<span><b class=") == 30 and "characters 10\u201340 of" in page
    assert "showing characters 10\u201340" in err

    code, out, err = viz(capsys, run, "--text", text, "--unit", "0:5", "--what", "forget", "--out", tmp_path / "f.html")
    assert code == 0, err
    assert "forget gate" in (tmp_path / "f.html").read_text() and "class=g" in (tmp_path / "f.html").read_text()

    code, out, err = viz(capsys, run, "--text", text, "--unit", "0:5", "--length", "200", "--out", tmp_path / "u.png")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "u.png") and (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"


def test_viz_drop_unknown_characters_keeps_the_span(run, tmp_path, capsys):
    path = tmp_path / "odd.txt"
    path.write_text("the cat \u00e9sat on the mat.\nthe dog ran.\n")
    code, out, err = viz(capsys, run, "--text", path, "--unit", "0:1")
    assert code == 2 and "--unknown" in err
    code, out, err = viz(capsys, run, "--text", path, "--unit", "0:1", "--unknown", "drop", "--start", "4",
                         "--length", "6", "--out", tmp_path / "d.html")
    assert code == 0, err
    shown = "".join(re.findall(r"<i class=d\d+>([^<]*)</i>", (tmp_path / "d.html").read_text()))
    assert shown == "cat s"  # characters 4..10 of the file, less the one the model never saw


@pytest.mark.parametrize("args, phrase", [
    (["--unit", "0:99"], "unit 99 does not exist: each layer has units 0..15"),
    (["--unit", "3:1"], "layer 3 does not exist"),
    (["--unit", "x"], "LAYER:INDEX"),
    (["--unit", "0:1", "--what", "gate.reset"], ("choose from gate.input, gate.forget, gate.output, "
                                                 "gate.candidate, cell, hidden")),
    (["--unit", "0:1", "--strip", "--out", "x.png"], "HTML only"),
    (["--unit", "0:1", "--out", "x.pdf"], "must end in .html or .png"),
    (["--unit", "0:1", "--start", "100000"], "--start 100000 is outside"),
    (["--unit", "0:1", "--length", "0"], "--length must be >= 1"),
    (["--unit", "0:1", "--strip", "--top", "0"], "--top must be"),
])
def test_viz_errors_are_one_line(run, text, capsys, args, phrase):
    code, out, err = viz(capsys, run, "--text", text, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], err


def test_viz_missing_text_and_run(run, tmp_path, capsys):
    code, out, err = viz(capsys, run, "--text", tmp_path / "nope.txt", "--unit", "0:1")
    assert code == 2 and "no such file" in err
    code, out, err = viz(capsys, tmp_path / "norun", "--text", tmp_path / "nope.txt", "--unit", "0:1")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_what_names_per_cell_type():
    assert resolve_activation(None, "lstm") == "cell"
    assert resolve_activation(None, "gru") == resolve_activation(None, "rnn") == "hidden"
    assert resolve_activation("update", "gru") == resolve_activation("gate.update", "gru") == "gate.update"
    with pytest.raises(rnnlens.RnnlensError, match="choose from hidden$"):
        resolve_activation("cell", "rnn")


def test_viz_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["viz", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "examples:" in out and "rnnlens viz " in out and "--strip" in out


def test_the_docs_python_example_runs(run, tmp_path, monkeypatch):
    doc = Path(__file__).resolve().parents[1] / "docs" / "visualize.md"
    block = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text(make_text(300))
    exec(compile(block.replace('"runs/demo"', repr(str(run))), "visualize.md", "exec"), {})
    for name in ("unit7.html", "strip.html", "gallery.html"):
        page = (tmp_path / name).read_text()
        assert page.startswith("<!DOCTYPE html>") and "rl-" in page
