"""`rnnlens export-lstmvis`: the files LSTMVis reads, checked with h5py and a YAML parser."""

import h5py
import numpy as np
import pytest
import yaml
from conftest import make_text, run_cli, train_tiny_runs

import rnnlens
from rnnlens.lstmvis import dataset_name, tokens


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("lstmvis-runs"), ["lstm", "gru"])


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(make_text(30, seed=4))
    return path


def read_dict(path):
    pairs = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]  # as LSTMVis reads it
    assert all(len(p) == 2 for p in pairs)
    return {int(i): tok for tok, i in pairs}


def test_export_writes_states_word_ids_dict_and_config(runs, text, tmp_path, capsys):
    out = tmp_path / "project"
    code, stdout, err = run_cli(capsys, "export-lstmvis", runs["lstm"], "--text", text, "--out", out)
    assert code == 0, err
    assert "states1, output1" in stdout and str(out) in stdout
    body = text.read_text()
    lm = rnnlens.load(runs["lstm"])
    trace = lm.trace(body)
    with h5py.File(out / "states.h5", "r") as f:
        assert sorted(f) == ["output1", "states1"]
        assert f["states1"].shape == (len(body), 16) and f["states1"].dtype == np.float32
        assert np.allclose(f["states1"][:], trace["layer0.cell"], atol=1e-6)   # c itself; LSTMVis applies tanh
        assert np.allclose(f["output1"][:], trace["layer0.hidden"], atol=1e-6)
        assert f["states1"].attrs["rnnlens_name"] == "layer0.cell"
    with h5py.File(out / "train.h5", "r") as f:
        ids = f["word_ids"][:]
        assert ids.dtype == np.int32 and ids.tolist() == (trace.ids + 1).tolist()
        assert f["words"][:].tolist() == ids.tolist()
    words = read_dict(out / "words.dict")
    assert sorted(words) == list(range(1, len(lm.vocab) + 1))
    shown = {"\u2423": " ", "\u21b5": "\n"}
    assert "".join(shown.get(words[i], words[i]) for i in ids) == body

    config = yaml.safe_load((out / "lstm.yml").read_text(encoding="utf-8"))
    assert config["files"] == {"states": "states.h5", "train": "train.h5", "words": "words.dict"}
    assert config["word_sequence"] == {"file": "train", "path": "word_ids", "dict_file": "words"}
    assert config["states"]["file"] == "states"
    assert config["states"]["types"] == [{"type": "state", "layer": 1, "path": "states1"},
                                         {"type": "output", "layer": 1, "path": "output1", "transform": "none"}]
    assert "LSTM 1x16" in config["description"] and config["name"] == "rnnlens lstm"


def test_export_chosen_names_and_a_gru(runs, text, tmp_path, capsys):
    out = tmp_path / "gates"
    code, _, err = run_cli(capsys, "export-lstmvis", runs["lstm"], "--text", text, "--out", out,
                           "--names", "layer0.gate.forget,layer0.cell", "--project", "my cells")
    assert code == 0, err
    config = yaml.safe_load((out / "lstm.yml").read_text())
    assert config["name"] == "my cells"
    assert config["states"]["types"][0] == {"type": "state", "layer": 1, "path": "forget1", "transform": "none",
                                            "unsigned": True}
    with h5py.File(out / "states.h5", "r") as f:
        assert sorted(f) == ["forget1", "states1"]
        forget = f["forget1"][:]
        assert forget.min() >= 0 and forget.max() <= 1
    code, stdout, err = run_cli(capsys, "export-lstmvis", runs["gru"], "--text", text, "--out", tmp_path / "gru")
    assert code == 0, err
    with h5py.File(tmp_path / "gru" / "states.h5", "r") as f:
        assert sorted(f) == ["output1"]


def test_dict_tokens_never_hold_whitespace_and_stay_unique():
    chars = [" ", "\n", "\t", "\r", "\u00a0", "a", "\u2423", "\x07"]
    toks = tokens(chars)
    assert toks == ["<U+0020>", "\u21b5", "\u21e5", "<U+000D>", "<U+00A0>", "a", "\u2423", "<U+0007>"]
    assert all(len(t.split()) == 1 for t in toks) and len(set(toks)) == len(toks)
    assert tokens([" ", "x"]) == ["\u2423", "x"]
    assert [dataset_name(n) for n in ("layer0.cell", "layer2.hidden", "layer1.gate.candidate")] == \
        ["states1", "output3", "candidate2"]


def test_export_errors_are_one_line(runs, text, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("the \u20ac cat")
    for args, words in [(("--names", "layer3.cell"), "layer0.cell, layer0.hidden"),
                        (("--names", "layer0.gate.update"), "choose from"),
                        (("--out", a_file), "is a file"),
                        (("--text", unknown), "--unknown"),
                        (("--text", tmp_path / "missing.txt"), "missing.txt")]:
        argv = ["export-lstmvis", runs["lstm"], "--text", text, "--out", tmp_path / "x", *args]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and words in err, (args, err)
    code, _, err = run_cli(capsys, "export-lstmvis", runs["lstm"], "--text", unknown, "--out", tmp_path / "y",
                           "--unknown", "replace")
    assert code == 0, err
    with h5py.File(tmp_path / "y" / "train.h5", "r") as f:
        assert len(f["word_ids"]) == len("the \u20ac cat")
