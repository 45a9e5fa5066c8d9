"""Gate saturation: exact fractions on hand-made gate arrays (threshold edges, float16, memory-mapped
traces), the CSV/JSON helpers, and `rnnlens saturation` end to end with its errors."""

import csv
import json
import tempfile

import numpy as np
import pytest
from conftest import run_cli, train_tiny_runs

import rnnlens
from rnnlens import runs as run_info
from rnnlens.analysis import saturation as saturation_module
from rnnlens.analysis.saturation import gate_saturation, saturation_names, strict_bounds
from rnnlens.errors import RnnlensError
from rnnlens.trace import Trace

LSTM_GATES = ("input", "forget", "output")


def hand_trace(arrays, cell="lstm", layers=1, size=None):
    """A Trace from {name: [T, H] array}, every gate of the cell filled with 0.5 unless given."""
    T, H = next(iter(arrays.values())).shape
    gates = {"lstm": LSTM_GATES, "gru": ("reset", "update"), "rnn": ()}[cell]
    full = {f"layer{i}.gate.{g}": np.full((T, H), 0.5, np.float32) for i in range(layers) for g in gates}
    full.update(arrays)
    return Trace("a" * T, np.zeros(T, np.int64), full, cell=cell, layers=layers, size=size or H, chars=["a"])


def test_exact_fractions_and_threshold_edges():
    # 8 characters, 3 units. Unit 0 has values equal to both thresholds: neither counts (strict).
    forget = np.array([[0.125, 0.0, 1.0],
                       [0.875, 0.0, 1.0],
                       [0.124, 0.0, 1.0],
                       [0.876, 0.0, 0.5],
                       [0.5, 0.0, 0.5],
                       [0.5, 0.0, 0.5],
                       [0.5, 0.9, 0.5],
                       [0.5, 0.1, 0.5]], dtype=np.float32)
    sat = gate_saturation(hand_trace({"layer0.gate.forget": forget}), low=0.125, high=0.875)
    left, right = sat.gate(0, "forget")
    assert left.tolist() == [1 / 8, 7 / 8, 0.0]
    assert right.tolist() == [1 / 8, 1 / 8, 3 / 8]
    assert sat.gates == LSTM_GATES and sat.left.shape == (1, 3, 3) and sat.chars == 8
    assert sat.left[0, 0].tolist() == [0, 0, 0] and sat.right[0, 2].tolist() == [0, 0, 0]  # 0.5 everywhere
    assert np.all(sat.left + sat.right <= 1)

    at_edges = gate_saturation(hand_trace({"layer0.gate.forget": forget}), low=0.0, high=1.0)
    assert at_edges.gate(0, "gate.forget")[0].tolist() == [0, 0, 0]  # nothing is below 0 or above 1
    assert at_edges.gate(0, "forget")[1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_thresholds_that_the_storage_type_cannot_hold_are_exact(dtype):
    """0.1 is not representable: the nearest float16/32 value on each side is classified as its true value says."""
    below_low = np.nextafter(dtype(0.1), dtype(0)) if float(dtype(0.1)) >= 0.1 else dtype(0.1)
    above_low = np.nextafter(below_low, dtype(1))
    above_high = np.nextafter(dtype(0.9), dtype(1)) if float(dtype(0.9)) <= 0.9 else dtype(0.9)
    below_high = np.nextafter(above_high, dtype(0))
    assert float(below_low) < 0.1 < float(above_low) and float(below_high) < 0.9 < float(above_high)
    gate = np.array([[below_low], [above_low], [below_high], [above_high]], dtype=dtype)
    sat = gate_saturation(hand_trace({"layer0.gate.update": gate}, cell="gru"))
    left, right = sat.gate(0, "update")
    assert left.tolist() == [0.25] and right.tolist() == [0.25]
    below, above = strict_bounds(0.1, 0.9, dtype)
    assert np.dtype(type(below)) == np.dtype(type(above)) == np.dtype(dtype)


def test_two_layers_gru_and_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {f"layer{i}.gate.{g}": rng.random((1000, 5)).astype(np.float32) for i in range(2)
              for g in ("reset", "update")}
    trace = hand_trace(arrays, cell="gru", layers=2)
    whole = gate_saturation(trace, low=0.2, high=0.7)
    monkeypatch.setattr(saturation_module, "row_blocks",
                        lambda a: (a[s:s + 7] for s in range(0, a.shape[0], 7)))  # many small blocks
    blocked = gate_saturation(trace, low=0.2, high=0.7)
    for layer in range(2):
        for g, gate in enumerate(("reset", "update")):
            a = arrays[f"layer{layer}.gate.{gate}"]
            if gate == "update":  # counted as the paper's z, the weight of the candidate: 1 - torch's
                a = 1.0 - a.astype(np.float64)
            np.testing.assert_array_equal(whole.left[layer, g], (a < 0.2).mean(axis=0))
            np.testing.assert_array_equal(whole.right[layer, g], (a > 0.7).mean(axis=0))
    np.testing.assert_array_equal(blocked.left, whole.left)
    np.testing.assert_array_equal(blocked.right, whole.right)
    assert saturation_names("gru", 2) == ["layer0.gate.reset", "layer0.gate.update", "layer1.gate.reset",
                                          "layer1.gate.update"]


def test_memory_mapped_trace(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"layer0.gate.{g}": rng.random((3000, 4)).astype(np.float16) for g in LSTM_GATES}
    saved = hand_trace(arrays).save(tmp_path / "t.safetensors")
    assert isinstance(saved["layer0.gate.forget"], np.memmap)
    sat = gate_saturation(saved)
    for g, gate in enumerate(LSTM_GATES):
        a = arrays[f"layer0.gate.{gate}"].astype(np.float64)
        np.testing.assert_array_equal(sat.left[0, g], (a < 0.1).mean(axis=0))
        np.testing.assert_array_equal(sat.right[0, g], (a > 0.9).mean(axis=0))


def test_rows_csv_summary_and_dict(tmp_path):
    forget = np.array([[0.05, 0.95], [0.05, 0.95], [0.05, 0.5], [0.5, 0.5]], np.float32)
    sat = gate_saturation(hand_trace({"layer0.gate.forget": forget}))
    rows = sat.to_rows()
    assert len(rows) == 3 * 2 and rows[2] == {"layer": 0, "gate": "forget", "unit": 0, "left": 0.75, "right": 0.0}
    with open(sat.write_csv(tmp_path / "s.csv")) as f:
        read = list(csv.DictReader(f))
    assert [float(r["right"]) for r in read if r["gate"] == "forget"] == [0.0, 0.5]
    summary = {r["gate"]: r for r in sat.summary()}
    assert summary["forget"]["mean_left"] == pytest.approx(0.375) and summary["forget"]["mean_right"] == 0.25
    assert summary["forget"]["mostly_left"] == 1 and summary["forget"]["mostly_right"] == 0  # 0.5 is not "more than half"
    d = json.loads(json.dumps(sat.to_dict()))
    assert d["left"][0][1] == [0.75, 0.0] and d["gates"] == list(LSTM_GATES) and d["low"] == 0.1


def test_errors():
    trace = hand_trace({"layer0.gate.forget": np.full((4, 2), 0.5, np.float32)})
    for low, high in [(0.9, 0.1), (0.5, 0.5), (-0.1, 0.9), (0.1, 1.5), (float("nan"), 0.9)]:
        with pytest.raises(RnnlensError, match="0 <= low < high <= 1"):
            gate_saturation(trace, low=low, high=high)
    rnn = Trace("ab", np.zeros(2, np.int64), {"layer0.hidden": np.zeros((2, 3), np.float32)}, cell="rnn",
                layers=1, size=3, chars=["a"])
    with pytest.raises(RnnlensError, match="RNN has none; use an LSTM or GRU"):
        gate_saturation(rnn)
    partial = Trace("ab", np.zeros(2, np.int64), {"layer0.gate.forget": np.zeros((2, 3), np.float32)},
                    cell="lstm", layers=1, size=3, chars=["a"])
    with pytest.raises(RnnlensError, match="no 'layer0.gate.input'"):
        gate_saturation(partial)
    with pytest.raises(RnnlensError, match="gates input, forget, output; got 'reset'"):
        gate_saturation(trace).gate(0, "reset")


# ---------------------------------------------------------------------------------------------
# On a trained model, and the command line


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("saturation-runs"), ("lstm", "rnn", "gru"), layers=1)



def test_cli_saturation_json_csv_png(runs, capsys, tmp_path):
    code, out, err = run_cli(capsys, "saturation", runs["lstm"], "--text", runs["text"], "--max-chars", 1500,
                             "--low", 0.2, "--high", 0.8, "--out", tmp_path / "figs", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["cell"] == "lstm" and info["chars"] == 1500 and info["low"] == 0.2 and info["gates"] == list(LSTM_GATES)
    # the command's numbers are the API's numbers on the same text
    lm = rnnlens.load(runs["lstm"])
    trace = lm.trace(runs["text"].read_text()[:1500], names=saturation_names("lstm", 1))
    forget = trace["layer0.gate.forget"]
    assert info["left"][0][1] == pytest.approx((forget < 0.2).mean(axis=0).tolist())
    assert info["right"][0][1] == pytest.approx((forget > 0.8).mean(axis=0).tolist())
    assert (tmp_path / "figs" / "saturation.png").stat().st_size > 10_000
    with open(tmp_path / "figs" / "saturation.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * 16

    code, out, err = run_cli(capsys, "saturation", runs["lstm"], "--text", runs["text"], "--out", tmp_path / "f2")
    assert code == 0, err
    assert "layer 0 forget" in out and "mean left" in out and "mostly right" in out and "saturation.png" in out


def test_cli_saturation_through_a_temporary_trace_file(runs, capsys, tmp_path, monkeypatch):
    args = ("saturation", runs["lstm"], "--text", runs["text"], "--max-chars", 800, "--out", tmp_path, "--json")
    code, in_memory, err = run_cli(capsys, *args)
    assert code == 0, err
    monkeypatch.setattr(run_info, "IN_MEMORY_BYTES", 0)  # every trace is "large": memory-mapped from a file
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code, mapped, err = run_cli(capsys, *args)
    assert code == 0, err
    assert json.loads(mapped)["right"] == json.loads(in_memory)["right"]
    assert json.loads(mapped)["left"] == json.loads(in_memory)["left"]
    assert list((tmp_path / "tmp").iterdir()) == []  # the trace file is gone


def test_cli_saturation_errors(runs, capsys, tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("the cat ~ sat")
    cases = [((runs["rnn"], "--text", runs["text"]), "RNN has none"),
             ((runs["lstm"], "--text", runs["text"], "--low", 0.9, "--high", 0.1), "0 <= low < high <= 1"),
             ((runs["lstm"], "--text", runs["text"], "--high", 2), "0 <= low < high <= 1"),
             ((runs["lstm"], "--text", odd), "--unknown drop"),
             ((runs["lstm"], "--text", runs["text"], "--max-chars", 0), "--max-chars")]
    for args, message in cases:
        code, _, err = run_cli(capsys, "saturation", *args, "--out", tmp_path)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    code, out, err = run_cli(capsys, "saturation", runs["lstm"], "--text", odd, "--unknown", "drop", "--json",
                             "--out", tmp_path)
    assert code == 0 and json.loads(out)["chars"] == len("the cat  sat")


def test_gru_update_gate_in_the_papers_convention_on_a_real_trace(runs):
    lm = rnnlens.load(runs["gru"])
    trace = lm.trace(runs["text"].read_text()[:600])
    stored = np.asarray(trace["layer0.gate.update"], dtype=np.float64)
    z = 1.0 - stored  # the paper's z: h = (1 - z) h_prev + z h~
    h = np.asarray(trace["layer0.hidden"], dtype=np.float64)
    cand = np.asarray(trace["layer0.gate.candidate"], dtype=np.float64)
    h_prev = np.vstack([np.zeros((1, h.shape[1])), h[:-1]])
    np.testing.assert_allclose(h, (1 - z) * h_prev + z * cand, atol=1e-5)
    sat = gate_saturation(trace)
    update = list(sat.gates).index("update")
    np.testing.assert_array_equal(sat.left[0, update], (z < 0.1).mean(axis=0))
    np.testing.assert_array_equal(sat.right[0, update], (z > 0.9).mean(axis=0))
