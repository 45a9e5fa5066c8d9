"""The explorer's Document: a long text traced once with checkpoints; an edit re-traces only from the
checkpoint before it, and gives exactly what a full trace of the edited text gives."""

import numpy as np
import pytest
from conftest import make_text, train_tiny_runs

import rnnlens
from rnnlens.explorer.document import Document, stored_names


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("document-runs"), ["lstm", "gru"], layers=2)


def full(lm, text, names):
    tr = lm.trace(text, names=[*names, "loss"], unknown="replace")
    return tr


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_edit_retraces_from_its_checkpoint_and_equals_a_full_trace(runs, cell):
    lm = rnnlens.load(runs[cell])
    text = make_text(1200, seed=3)[:20_000]
    doc = Document(lm, text, cache=False, dtype=np.float32, every=1000)
    doc.advance()
    assert doc.recomputed == len(text)
    names = stored_names(lm.config.cell, lm.config.layers)
    for start, end, insert in [(19_500, 19_501, "Q"), (12_345, 12_345, "the dog. "), (3_000, 3_010, ""),
                               (len(text) - 1 - 9, len(text) - 9, "x")]:
        text = text[:start] + insert + text[end:]
        out = doc.edit(start, end, insert)
        assert out["retraced_from"] == start // 1000 * 1000
        assert out["recomputed"] == len(text) - out["retraced_from"]
        assert doc.text == text
        ref = full(lm, text, names)
        for name in [*names, "loss"]:
            np.testing.assert_allclose(doc.rows(name, 0, len(text)), ref[name], atol=1e-5, rtol=0, err_msg=name)
    doc.close()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float16_arrays_equal_trace_ids_to_float16_rounding_before_and_after_an_edit(runs, cell):
    from rnnlens.trace import trace_ids
    lm = rnnlens.load(runs[cell])
    text = make_text(600, seed=11)[:9_000]
    doc = Document(lm, text, cache=False, every=2000)  # float16, the default
    names = stored_names(lm.config.cell, lm.config.layers)

    def same_as_trace_ids():
        ref = trace_ids(lm.model, lm.vocab.encode(doc.text, unknown="replace"), lm.vocab.chars,
                        names=[*names, "loss"])
        for name in names:  # float16 keeps 11 significant bits: relative error <= 2^-11
            np.testing.assert_allclose(np.asarray(doc.rows(name, 0, len(doc)), np.float32), ref[name],
                                       rtol=2 ** -10, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(doc.rows("loss", 0, len(doc)), ref["loss"], atol=1e-5, err_msg="loss")

    doc.advance()
    same_as_trace_ids()
    out = doc.edit(6_001, 6_003, "dog")
    assert out["retraced_from"] == 6_000 and out["recomputed"] == len(doc) - 6_000
    same_as_trace_ids()
    doc.close()


def test_windows_of_gates_are_exact_and_the_cache_is_reused(runs, tmp_path):
    lm = rnnlens.load(runs["lstm"])
    text = make_text(800, seed=5)
    doc = Document(lm, text, cache=True, every=500, cache_root=tmp_path)
    doc.run_background()
    deadline = __import__("time").monotonic() + 60
    while not (tmp_path / "explorer").exists() or not list((tmp_path / "explorer").glob("*/meta.json")):
        assert __import__("time").monotonic() < deadline
        __import__("time").sleep(0.05)
    ref = lm.trace(text, unknown="replace")
    tr, off = doc.window_trace(1234, 1600, ["layer1.gate.forget", "layer0.cell"])
    np.testing.assert_allclose(tr["layer1.gate.forget"][off:], ref["layer1.gate.forget"][1234:1600], atol=1e-5)
    np.testing.assert_allclose(doc.rows("layer1.cell", 0, len(text)), ref["layer1.cell"], rtol=2 ** -10,
                               atol=1e-3)  # float16: 11 significant bits
    doc.close()
    again = Document(lm, text, cache=True, every=500, cache_root=tmp_path)
    assert again.cache_hit and again.complete and again.recomputed == 0
    np.testing.assert_array_equal(again.rows("layer1.cell", 0, len(text)), doc.rows("layer1.cell", 0, len(text)))
    out = again.edit(len(text) - 3, len(text) - 2, "z")  # the first edit leaves the cache as it was
    assert out["recomputed"] <= 500
    assert Document(lm, text, cache=True, every=500, cache_root=tmp_path).cache_hit
    again.close()


def test_lstmvis_match_rule_on_known_values():
    from rnnlens.analysis.select import match_runs
    v = np.zeros((30, 3), np.float32)
    v[5:9, 0] = v[5:9, 1] = 1      # both units on at 5..8: a match of 2 units
    v[15:19, 0] = 1                # unit 0 only: 1 unit
    v[20:27, 1] = 1                # too long for max_length 5
    v[2:4, 2] = 1                  # length 2: too short
    v[0:4, 0] = 1                  # unit 0 at the text start: outside counts as off
    found, hist, n = match_runs(v, [0, 1, 2], 0.5, min_length=3, max_length=5, bins=3)
    assert [(m.start, m.end, m.units) for m in found] == [(5, 9, 2), (0, 4, 1), (15, 19, 1)]
    assert n == 3 and hist.tolist() == [2, 1, 0]
    # look-around 2: unit 0's run at 0..4 is only one character before its run at 5..9
    found, _, _ = match_runs(v, [0, 1], 0.5, min_length=3, max_length=5, before=2, after=2)
    assert [(m.start, m.end, m.units) for m in found] == [(5, 9, 1), (15, 19, 1)]


def test_corpus_endpoints_window_edit_select_match_tracks(runs):
    import base64

    from fastapi.testclient import TestClient

    from rnnlens.explorer.engine import Explorer
    from rnnlens.explorer.server import create_app
    text = make_text(3000, seed=7)[:50_000]
    ex = Explorer.from_runs([runs["lstm"]], max_text_bytes=200_000)
    ex.open_document(text, cache=False, every=2000, background=False, dtype=np.float32)
    ex.set_labels("".join("q" if c == "." else " " for c in text))
    client = TestClient(create_app(ex), base_url="http://127.0.0.1")
    st = client.get("/api/status").json()
    assert st["length"] == len(text) and st["models"]["lstm"]["traced"] == 0
    w = client.get("/api/window", params={"from": 49_000, "to": 50_000, "unit": 3, "name": "layer1.cell"}).json()
    assert w["text"] == text[49_000:] and len(w["levels"]) == 1000
    values = np.frombuffer(base64.b64decode(w["values_f16"]), "<f2")
    ref = rnnlens.load(runs["lstm"]).trace(text, unknown="replace")
    np.testing.assert_allclose(values, ref["layer1.cell"][49_000:, 3], rtol=2 ** -10, atol=1e-3)  # float16
    g = client.get("/api/window", params={"from": 100, "to": 300, "unit": 1, "name": "layer0.gate.forget"}).json()
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(g["values_f16"]), "<f2"),
                               ref["layer0.gate.forget"][100:300, 1], atol=2e-3)
    lines = client.get("/api/lines", params={"from": 0, "to": 100, "name": "layer1.hidden"}).json()
    assert np.frombuffer(base64.b64decode(lines["values_f16"]), "<f2").shape == (100 * 16,)
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 200
    # an edit near the end re-traces from its checkpoint only
    before = client.get("/api/status").json()["models"]["lstm"]["recomputed"]
    e = client.post("/api/edit", json={"from": 49_990, "to": 49_991, "insert": "Z"}).json()
    assert e["retraced_from"] == 48_000 and e["models"]["lstm"]["recomputed"] == 2000
    assert client.get("/api/status").json()["models"]["lstm"]["recomputed"] == before + 2000
    assert client.get("/api/text", params={"from": 49_985, "to": 49_995}).json()["text"] == \
        text[49_985:49_990] + "Z" + text[49_991:49_995]
    sel = client.post("/api/corpus/select", json={"from": 10, "to": 14, "threshold": 0.1}).json()
    assert sel["of"] == 16
    units = sel["units"] or [0, 1]
    m = client.post("/api/corpus/match", json={"units": units, "threshold": 0.1, "min_length": 2,
                                                "max_length": 8, "bins": 50}).json()
    assert len(m["histogram"]) == 50 and sum(m["histogram"]) == m["total"]
    assert all(2 <= x["end"] - x["start"] <= 8 for x in m["matches"])
    tr = client.get("/api/tracks", params={"from": 0, "to": 500}).json()
    names = [t["name"] for t in tr["tracks"]]
    assert "in_double_quotes" in names and "loss" in names and "labels" in names
    assert client.get("/api/next", params={"position": 5}).json()["top"]
    ex.close()
