"""Memory time constants: half-life values and edges, arithmetic and geometric means on hand-made gates,
LSTM and GRU, and `rnnlens timescales` end to end with its errors."""

import csv
import json
import math

import numpy as np
import pytest
from conftest import run_cli, train_tiny_runs

import rnnlens
from rnnlens.analysis.timescales import half_life, memory_timescales, timescale_names
from rnnlens.errors import RnnlensError
from rnnlens.trace import Trace


def gate_trace(gate, cell="lstm", layers=1):
    """A Trace holding only each layer's keep gate; `gate` [T, H] (or a list per layer)."""
    per_layer = gate if isinstance(gate, list) else [gate] * layers
    name = "gate.forget" if cell == "lstm" else "gate.update"
    arrays = {f"layer{i}.{name}": np.asarray(a) for i, a in enumerate(per_layer)}
    T, H = per_layer[0].shape
    return Trace("a" * T, np.zeros(T, np.int64), arrays, cell=cell, layers=len(per_layer), size=H, chars=["a"])


def test_half_life_values_and_edges():
    assert half_life(0.5) == 1.0
    assert half_life(0.25) == pytest.approx(0.5)
    assert half_life(0.9) == pytest.approx(6.5788, abs=1e-4)  # 0.9^6.58 = 0.5 (and 0.9^10 = 0.35)
    assert 0.9 ** float(half_life(0.9)) == pytest.approx(0.5)
    assert half_life(0.99) == pytest.approx(68.97, abs=0.01)
    assert half_life(1.0) == math.inf
    assert half_life(0.0) == 0.0
    assert half_life(1.0 + 1e-7) == math.inf  # rounding past 1 is still "keeps everything"
    assert half_life(1 - 1e-12) > 1e11 and math.isfinite(half_life(1 - 1e-12))
    np.testing.assert_array_equal(half_life(np.array([[0.5, 1.0], [0.0, 0.5]])), [[1.0, math.inf], [0.0, 1.0]])


def test_arithmetic_and_geometric_means():
    # unit 0: constant 0.5; unit 1: 1.0 then 0.25 (mean 0.625, geometric 0.5); unit 2: always 1;
    # unit 3: one exact 0 wipes the memory (geometric mean 0)
    f = np.array([[0.5, 1.0, 1.0, 0.0],
                  [0.5, 0.25, 1.0, 1.0]], dtype=np.float32)
    ts = memory_timescales(gate_trace(f))
    assert ts.gate == "forget" and ts.chars == 2 and ts.mean.shape == (1, 4)
    np.testing.assert_allclose(ts.mean[0], [0.5, 0.625, 1.0, 0.5])
    np.testing.assert_allclose(ts.geometric_mean[0], [0.5, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(ts.half_life[0], [1.0, math.log(0.5) / math.log(0.625), math.inf, 1.0])
    np.testing.assert_allclose(ts.half_life_geometric[0], [1.0, 1.0, math.inf, 0.0])
    assert np.all(ts.half_life_geometric <= ts.half_life)  # AM >= GM


def test_gru_two_layers_float16_memmap(tmp_path):
    rng = np.random.default_rng(0)
    layers = [rng.uniform(0.5, 1.0, (2000, 3)).astype(np.float16), rng.uniform(0.9, 1.0, (2000, 3)).astype(np.float16)]
    trace = gate_trace(layers, cell="gru").save(tmp_path / "t.safetensors")
    assert isinstance(trace["layer1.gate.update"], np.memmap)
    ts = memory_timescales(trace)
    assert ts.gate == "1-z" and ts.layers == 2  # the keep fraction, with z the paper's update gate
    for i, a in enumerate(layers):
        a = a.astype(np.float64)
        np.testing.assert_allclose(ts.mean[i], a.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(ts.geometric_mean[i], np.exp(np.log(a).mean(axis=0)), rtol=1e-12)
    assert np.all(np.median(ts.half_life[1]) > 5 * np.median(ts.half_life[0]))  # gates nearer 1 remember longer
    assert timescale_names("gru", 2) == ["layer0.gate.update", "layer1.gate.update"]
    assert timescale_names("lstm", 1) == ["layer0.gate.forget"]


def test_summary_rows_and_json(tmp_path):
    keep = np.array([0.5, 0.9, 0.95, 0.999, 1.0])  # half-lives 1, 6.6, 13.5, 693, inf
    ts = memory_timescales(gate_trace(np.tile(keep, (3, 1)).astype(np.float64)))
    row = ts.summary()[0]
    assert row["half_life"]["over_10"] == 3 and row["half_life"]["over_100"] == 2
    assert row["half_life"]["infinite"] == 1
    assert row["half_life"]["max"] == row["half_life"]["q75"] == pytest.approx(math.log(0.5) / math.log(0.999))
    assert row["half_life"]["median"] == pytest.approx(math.log(0.5) / math.log(0.95))
    assert row["mean_gate"] == pytest.approx(keep.mean())
    d = json.loads(json.dumps(ts.to_dict(), allow_nan=False))  # strict JSON: inf is null
    assert d["half_life"][0][4] is None and d["half_life"][0][0] == 1.0
    with open(ts.write_csv(tmp_path / "t.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[4]["half_life"] == "inf" and float(rows[1]["half_life"]) == pytest.approx(6.5788, 1e-4)


def test_errors():
    rnn = Trace("ab", np.zeros(2, np.int64), {"layer0.hidden": np.zeros((2, 3), np.float32)}, cell="rnn",
                layers=1, size=3, chars=["a"])
    with pytest.raises(RnnlensError, match="RNN has no forget or update gate"):
        memory_timescales(rnn)
    with pytest.raises(RnnlensError, match="RNN has no forget or update gate"):
        timescale_names("rnn", 1)
    wrong = Trace("ab", np.zeros(2, np.int64), {"layer0.gate.input": np.zeros((2, 3), np.float32)}, cell="lstm",
                  layers=1, size=3, chars=["a"])
    with pytest.raises(RnnlensError, match="no 'layer0.gate.forget'"):
        memory_timescales(wrong)


# ---------------------------------------------------------------------------------------------
# The command line on trained models


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("timescale-runs"), ("gru", "rnn"), layers=2)



def test_cli_timescales(runs, capsys, tmp_path):
    code, out, err = run_cli(capsys, "timescales", runs["gru"], "--text", runs["text"], "--max-chars", 2000,
                             "--out", tmp_path, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["cell"] == "gru" and info["gate"] == "1-z" and info["layers"] == 2 and info["chars"] == 2000
    lm = rnnlens.load(runs["gru"])
    z = lm.trace(runs["text"].read_text()[:2000], names=["layer1.gate.update"])["layer1.gate.update"]
    np.testing.assert_allclose(info["mean"][1], z.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(info["half_life"][1], np.log(0.5) / np.log(z.astype(np.float64).mean(axis=0)),
                               rtol=1e-5)
    assert (tmp_path / "timescales.png").stat().st_size > 10_000 and (tmp_path / "timescales.csv").exists()

    code, out, err = run_cli(capsys, "timescales", runs["gru"], "--text", runs["text"], "--out", tmp_path / "h")
    assert code == 0, err
    assert "layer 1" in out and "mean 1-z" in out and "half-life median" in out


def test_cli_timescales_errors(runs, capsys, tmp_path):
    for args, message in [((runs["rnn"], "--text", runs["text"]), "RNN has no forget or update gate"),
                          ((runs["gru"], "--text", tmp_path / "nope.txt"), "no such file"),
                          ((tmp_path / "norun", "--text", runs["text"]), "norun")]:
        code, _, err = run_cli(capsys, "timescales", *args, "--out", tmp_path)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
