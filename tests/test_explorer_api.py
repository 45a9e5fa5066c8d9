"""The explorer's JSON API (rnnlens.explorer), through Starlette's TestClient: every endpoint's
numbers against the Trace, the limits (413), the static files (no traversal), JSON errors, and
`rnnlens serve`'s checks before it serves."""

import socket
import warnings

import numpy as np
import pytest
from conftest import run_cli, train_tiny_runs

import rnnlens
from rnnlens.analysis.cells import discover
from rnnlens.analysis.select import match, units_on
from rnnlens.errors import RnnlensError
from rnnlens.explorer.engine import Explorer
from rnnlens.explorer.server import create_app
from rnnlens.render.colours import DIVERGING, GATE
from rnnlens.render.html import LEVEL_CODES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's notice about httpx versions
    from fastapi.testclient import TestClient

TEXT = "the cat sat on the mat.\nthe dog ran to a red box.\nthe cat ran.\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("explorer-runs"), ["lstm", "gru"])


@pytest.fixture(scope="module")
def explorer(runs):
    ex = Explorer.from_runs([runs["lstm"], runs["gru"]], default_text=TEXT, max_text_bytes=1000)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def client(explorer):
    return TestClient(create_app(explorer), base_url="http://127.0.0.1")


def post(client, path, **body):
    return client.post(path, json=body)


def codes(levels) -> str:
    return "".join(LEVEL_CODES[i] for i in levels)


def test_models_lists_both_runs_with_their_activations_and_limits(client):
    r = client.get("/api/models")
    assert r.status_code == 200
    d = r.json()
    assert [m["key"] for m in d["models"]] == ["lstm", "gru"]
    lstm, gru = d["models"]
    assert lstm["cell"] == "lstm" and lstm["size"] == 16 and lstm["default_activation"] == "layer0.cell"
    assert "layer0.gate.forget" in lstm["activations"] and "probs" not in lstm["activations"]
    assert gru["default_activation"] == "layer0.hidden" and "layer0.gate.update" in gru["activations"]
    assert d["text"] == TEXT and d["limits"]["max_text_bytes"] == 1000


def test_trace_gives_the_units_values_and_the_static_views_colour_levels(client, runs):
    r = post(client, "/api/trace", text=TEXT, model="lstm", name="layer0.cell", unit=5)
    assert r.status_code == 200, r.text
    d = r.json()
    expected = rnnlens.load(runs["lstm"]).trace(TEXT).unit("layer0.cell", 5)
    assert np.allclose(d["values"], expected, atol=1e-5)
    assert d["levels"] == codes(DIVERGING.level(np.tanh(expected)))  # cells are drawn as tanh(c), red -1 .. blue +1
    assert d["label"] == "layer 0 \u00b7 unit 5 \u00b7 tanh(c)" and d["transform"] == "tanh"
    assert d["scale"]["class_prefix"] == "d" and len(d["levels"]) == len(TEXT)
    gate = post(client, "/api/trace", text=TEXT, model="gru", name="layer0.gate.update", unit=2).json()
    update = rnnlens.load(runs["gru"]).trace(TEXT).unit("layer0.gate.update", 2)
    assert gate["levels"] == codes(GATE.level(update)) and gate["scale"]["name"] == "gate"


def test_trace_replaces_characters_the_model_never_saw_and_keeps_positions(client):
    text = "the \u20ac cat"
    d = post(client, "/api/trace", text=text, unit=0).json()
    assert d["replaced"] == ["\u20ac"] and len(d["values"]) == len(text)
    assert d["name"] == "layer0.cell"  # the default: the last layer's cell of an LSTM


def test_units_are_ranked_by_discovered_feature_strength(client, runs):
    d = post(client, "/api/units", text=TEXT, model="lstm").json()
    units = d["units"]
    assert units, d
    order = [(not u["visible"], -u["strength"]) for u in units]
    assert order == sorted(order)  # units that visibly switch first, each group strongest first
    assert len({(u["name"], u["unit"]) for u in units}) == len(units)
    trace = rnnlens.load(runs["lstm"]).trace(TEXT)
    scores = discover(trace, excerpts=0, exact_top=3)
    best = max((u for f in scores.features for u in scores.best(f.name, 3)),
               key=lambda u: (u.visible, u.strength))
    assert (units[0]["name"], units[0]["unit"]) == (best.activation, best.unit)
    assert units[0]["strength"] == pytest.approx(best.strength, abs=1e-4)
    # beside each score, the loss change when the unit is ablated: the same as causal_effects computes
    from rnnlens.analysis.causal import causal_effects
    effect = causal_effects(rnnlens.load(runs["lstm"]), TEXT, [units[0]]).effects[0]
    assert units[0]["ablated"]["change_all"] == pytest.approx(effect.change_all, abs=1e-4)
    assert effect.change_all != 0
    assert "when the unit is ablated" in d["note"]
    assert post(client, "/api/units", text="x").json()["units"] == []


def test_select_returns_exactly_the_units_on_across_the_span(client, runs):
    trace = rnnlens.load(runs["lstm"]).trace(TEXT)
    shown = np.tanh(trace["layer0.cell"])
    threshold = float(np.median(shown[4:7].min(axis=0)))  # about half the units qualify
    d = post(client, "/api/select", text=TEXT, model="lstm", name="layer0.cell", start=4, end=7,
             threshold=threshold).json()
    on = set(d["units"])
    assert on and d["span"] == "cat" and d["of"] == 16
    for u in range(16):
        assert (shown[4:7, u].min() >= threshold) == (u in on)


def test_match_scores_windows_by_the_fraction_of_selected_units_on(client, runs):
    body = dict(text=TEXT, model="lstm", name="layer0.cell", start=4, end=7, threshold=0.2)
    units = post(client, "/api/select", **body).json()["units"]
    assert units
    d = post(client, "/api/match", **body, units=units, top=5).json()
    shown = np.tanh(rnnlens.load(runs["lstm"]).trace(TEXT)["layer0.cell"])
    assert 1 <= len(d["matches"]) <= 5
    for m in d["matches"]:
        expected = (shown[m["start"]:m["end"]][:, units] >= 0.2).mean()
        assert m["score"] == pytest.approx(expected, abs=1e-4) and m["end"] - m["start"] == 3
        assert m["text"] == TEXT[m["start"]:m["end"]]
        assert m["end"] <= 4 or m["start"] >= 7  # never the selection itself
    scores = [m["score"] for m in d["matches"]]
    assert scores == sorted(scores, reverse=True)
    # without units, it matches what select finds
    assert post(client, "/api/match", **body, top=5).json()["matches"] == d["matches"]


def test_match_rule_on_known_values():
    # 2 units over 12 characters; both on at 2..4 and 8..10, one of them on at 5
    values = np.zeros((12, 3), dtype=np.float32)
    values[2:5, :2] = 1
    values[8:11, :2] = 1
    values[5, 0] = 1
    assert units_on(values, 2, 5, 0.5).tolist() == [0, 1]
    spans = lambda found: [(m.start, m.end, round(m.score, 6)) for m in found]
    # windows of 3: both on all through 2..5 and 8..11; the first is the selection itself, excluded
    assert spans(match(values, [0, 1], 0.5, 3, exclude=(2, 5))) == [(8, 11, 1.0)]
    # a lower bar lets in 5..8 (1 of 6 pairs on); windows overlapping one already taken are skipped
    assert spans(match(values, [0, 1], 0.5, 3, exclude=(2, 5), min_score=0.1)) == [(8, 11, 1.0), (5, 8, 0.166667)]
    assert spans(match(values, [0, 1], 0.5, 3)) == [(2, 5, 1.0), (8, 11, 1.0)]  # ties: earlier first
    assert spans(match(values, [0, 1], 0.5, 3, top=1)) == [(2, 5, 1.0)]
    with pytest.raises(RnnlensError, match="no units"):
        match(values, [], 0.5, 3)


def test_predict_gives_the_top_next_characters_and_the_true_one(client, runs):
    lm = rnnlens.load(runs["lstm"])
    d = post(client, "/api/predict", text=TEXT, model="lstm", position=5, before=2, after=1).json()
    assert [c["position"] for c in d["columns"]] == [3, 4, 5, 6]
    probs = lm.trace(TEXT)["probs"]
    col = d["columns"][2]
    assert col["char"] == TEXT[5] and col["next"] == TEXT[6]
    assert col["next_p"] == pytest.approx(probs[5, lm.vocab.index(TEXT[6])], abs=1e-5)
    ps = [p["p"] for p in col["top"]]
    assert len(ps) == 5 and ps == sorted(ps, reverse=True)
    assert ps[0] == pytest.approx(probs[5].max(), abs=1e-5)
    assert col["top"][0]["char"] == lm.vocab.chars[int(np.argmax(probs[5]))]
    last = post(client, "/api/predict", text="the", position=2).json()["columns"][0]
    assert last["next"] is None and last["next_p"] is None


def test_sample_is_reproducible_with_a_seed_and_checked(client, runs):
    body = dict(model="gru", prime="the ", temperature=0.7, length=40, seed=3)
    a, b = post(client, "/api/sample", **body).json(), post(client, "/api/sample", **body).json()
    assert a["text"] == b["text"] and len(a["text"]) == 40
    assert a["text"] == rnnlens.load(runs["gru"]).sample(40, "the ", temperature=0.7, seed=3)
    r = post(client, "/api/sample", prime="a", temperature=0, length=10)
    assert r.status_code == 400 and "temperature" in r.json()["error"]
    r = post(client, "/api/sample", prime="a", length=5000)
    assert r.status_code == 400 and "2000" in r.json()["error"]
    # steering: units clamped while sampling, as `rnnlens sample --steer`
    from rnnlens.interventions import Clamp
    steered = post(client, "/api/sample", **body, steer=["0:1,2,3=1", "layer0.gate.update:4=0"]).json()
    assert steered["steer"] == ["0:1,2,3=1", "layer0.gate.update:4=0"]
    assert steered["text"] == rnnlens.load(runs["gru"]).sample(
        40, "the ", temperature=0.7, seed=3,
        interventions=[Clamp("layer0.hidden", [1, 2, 3], 1.0), Clamp("layer0.gate.update", [4], 0.0)])
    r = post(client, "/api/sample", prime="a", steer=["9:1=1"])
    assert r.status_code == 400 and "layer 9 does not exist" in r.json()["error"]


@pytest.mark.parametrize("body, status, words", [
    (dict(text=TEXT, model="nope"), 404, ["'nope'", "'lstm'", "'gru'"]),
    (dict(text=TEXT, name="layer7.cell"), 404, ["layer7.cell", "layer0.gate.forget", "layer0.hidden"]),
    (dict(text=TEXT, unit=16), 404, ["unit 16", "0..15"]),
    (dict(text=""), 400, ["empty"]),
    (dict(txt=TEXT), 422, ["text", "required"]),
    (dict(text=TEXT, unit="five"), 422, ["unit"]),
])
def test_errors_are_json_naming_the_valid_choices(client, body, status, words):
    r = client.post("/api/trace", json=body)
    assert r.status_code == status
    message = r.json()["error"]
    for w in words:
        assert w.lower() in message.lower()


def test_bad_spans_and_positions_are_400(client):
    r = post(client, "/api/select", text=TEXT, start=5, end=5)
    assert r.status_code == 400 and "0 <= start < end" in r.json()["error"]
    r = post(client, "/api/predict", text=TEXT, position=len(TEXT))
    assert r.status_code == 400 and "position" in r.json()["error"]
    r = client.post("/api/trace", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_texts_over_the_limit_get_a_clear_413(client):
    r = post(client, "/api/trace", text="a" * 1001)
    assert r.status_code == 413
    assert "1,001 bytes" in r.json()["error"] and "--max-text-bytes" in r.json()["error"]
    assert post(client, "/api/trace", text="\u00e9" * 501).status_code == 413  # bytes, not characters: 1002
    assert post(client, "/api/trace", text="the " * 250).status_code == 200   # exactly 1000 bytes
    r = post(client, "/api/sample", prime="a" * 1001, length=5)
    assert r.status_code == 413 and "prime" in r.json()["error"]
    # a body too large is refused before it is read at all
    r = client.post("/api/trace", content=b"x" * 80_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "80,000 bytes" in r.json()["error"]


def test_serves_its_page_and_only_its_own_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    css = client.get("/static/rnnlens.css").text
    assert f".rl .d0{{background:{DIVERGING.level_hex()[0]}}}" in css  # the static views' own colours
    for path in ["/static/../engine.py", "/static/..%2fengine.py", "/static/%2e%2e%2fserver.py",
                 "/static/__init__.py", "/static/%2e%2e%2f%2e%2e%2f__init__.py", "/static//etc/passwd",
                 "/..%2f..%2fetc%2fpasswd", "/static/app.js%00.py", "/static/.", "/static/"]:
        r = client.get(path)
        assert r.status_code == 404, path
        assert "error" in r.json() and "import" not in r.text, path
    assert client.get("/static/missing.js").json()["error"] == "no such file: missing.js"


def test_other_routes_methods_and_hosts_get_json_errors(client, explorer):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "/api" in r.json()["error"]
    r = client.get("/api/trace")
    assert r.status_code == 405 and "GET" in r.json()["error"]
    r = TestClient(create_app(explorer), base_url="http://evil.example").get("/api/models")
    assert r.status_code == 400 and "evil.example" in r.json()["error"]
    assert TestClient(create_app(explorer), base_url="http://localhost:8000").get("/api/models").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/api/models", "/api/trace", "/api/units", "/api/select", "/api/match", "/api/predict",
            "/api/sample"} <= set(spec["paths"])


def test_the_trace_cache_keeps_the_last_few_texts(explorer):
    texts = [f"the cat {i}." for i in range(6)]
    for t in texts:
        explorer.trace("lstm", t, ["layer0.cell"])
    trace, _ = explorer.trace("lstm", texts[-1], ["layer0.cell"])
    again, _ = explorer.trace("lstm", texts[-1], ["layer0.cell"])
    assert again is trace  # cached
    more, _ = explorer.trace("lstm", texts[-1], ["layer0.hidden"])
    assert {"layer0.cell", "layer0.hidden"} <= set(more.names())  # the union of what was asked
    assert len(explorer._traces) <= 4


def test_serve_fails_in_one_line_when_the_port_is_taken(runs, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", runs["lstm"], "--port", port)
    assert code == 2
    assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err


def test_serve_checks_its_runs_before_serving(runs, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    for args, words in [((bad,), "corrupt"), ((tmp_path / "none",), "does not exist"),
                        ((runs["lstm"], runs["gru"], runs["lstm"]), "one or two models"),
                        ((runs["lstm"], "--max-text-bytes", "0"), "--max-text-bytes"),
                        ((runs["lstm"], "--port", "70000"), "--port")]:
        code, _, err = run_cli(capsys, "serve", *args, "--port" if "--port" not in args else "--host",
                                 "0" if "--port" not in args else "127.0.0.1")
        assert code == 2 and err.startswith("error:") and words in err, (args, err)
