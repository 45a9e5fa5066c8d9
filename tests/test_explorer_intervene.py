"""The explorer's interventions (POST /api/intervene, and `intervention` on /api/trace, /api/predict and
/api/sample), through Starlette's TestClient, on the planted quote model of tests/test_interventions.py:
the numbers against the model run with rnnlens.interventions directly."""

import warnings

import numpy as np
import pytest
from test_interventions import planted_quote_model

from rnnlens.explorer.engine import Explorer
from rnnlens.explorer.server import create_app
from rnnlens.interventions import Ablate, Clamp
from rnnlens.render.html import LEVEL_CODES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's notice about httpx versions
    from fastapi.testclient import TestClient

QUOTES = 'ab "ab ba" ba "a b" ab "bb a" a "ab" ba ' * 2
CLOSING = [i for i, ch in enumerate(QUOTES) if ch == '"' and QUOTES[:i].count('"') % 2 == 1]
QUOTE_UNIT = {"name": "layer0.cell", "unit": 0}


@pytest.fixture(scope="module")
def lm():
    return planted_quote_model()


@pytest.fixture(scope="module")
def client(lm):
    ex = Explorer({"planted": lm}, default_text=QUOTES)
    yield TestClient(create_app(ex), base_url="http://127.0.0.1")
    ex.close()


def test_ablating_the_quote_unit_makes_closing_quotes_hard_and_says_by_how_much(client, lm):
    d = client.post("/api/intervene", json={"text": QUOTES, "intervention": {**QUOTE_UNIT, "mode": "ablate"},
                                            "position": CLOSING[0] - 1, "before": 2, "after": 2, "top": 3}).json()
    clean = lm.predict(QUOTES)
    ablated = lm.predict(QUOTES, interventions=[Ablate("layer0.cell", 0)])
    delta = ablated.losses - clean.losses  # [T-1]: predicting text[t + 1]
    assert d["intervention"]["label"] == "layer0.cell unit 0 ablated (set to 0)"
    assert d["chars"] == len(QUOTES) - 1 and (d["from"], d["to"]) == (0, len(QUOTES))
    assert d["loss"]["as_trained"] == pytest.approx(clean.loss, abs=1e-5)
    assert d["loss"]["edited"] == pytest.approx(ablated.loss, abs=1e-5)
    assert d["loss"]["change"] == pytest.approx(delta.mean(), abs=1e-5)
    # character t carries the change in the loss of predicting it: none at 0, + ~2 nats at each closing quote
    assert d["change"][0] is None
    np.testing.assert_allclose(d["change"][1:], np.round(delta, 4), atol=2e-4)
    assert min(d["change"][t] for t in CLOSING) > 1.9
    red = LEVEL_CODES.index(d["change_levels"][CLOSING[0]])
    assert red == 0 and d["change_levels"][0] == LEVEL_CODES[16]  # full red; no change is white (the middle)
    # the shown unit, as edited: zero everywhere
    assert d["trace"]["values"] == [0.0] * len(QUOTES) and d["trace"]["intervention"]["mode"] == "ablate"
    # the prediction strip: p('"') before a closing quote falls from > 0.7 to < 0.1
    col = next(c for c in d["strip"]["columns"] if c["position"] == CLOSING[0] - 1)
    assert col["next"] == '"' and col["next_p"] < 0.1
    plain = client.post("/api/predict", json={"text": QUOTES, "position": CLOSING[0] - 1, "top": 3}).json()
    assert plain["columns"][0]["next_p"] > 0.7 and plain["intervention"] is None


def test_a_window_of_the_answer_and_the_inert_unit_changes_nothing(client):
    d = client.post("/api/intervene", json={"text": QUOTES, "intervention": {"name": "layer0.cell", "unit": 1},
                                            "from": 10, "to": 30, "show_unit": 0}).json()
    assert (d["from"], d["to"]) == (10, 30) and len(d["change"]) == 20 and len(d["change_levels"]) == 20
    # the edited layer runs step by step, the clean one fused: equal to float rounding, not bit for bit
    assert d["loss"]["change"] == pytest.approx(0.0, abs=1e-6) and set(d["change"]) <= {0.0, -0.0}
    assert len(d["trace"]["values"]) == 20 and d["trace"]["unit"] == 0 and max(d["trace"]["values"]) > 0.9


def test_clamp_high_holds_the_unit_at_its_maximum_and_the_other_endpoints_follow(client, lm):
    sample = {"prime": "ab", "temperature": 0.5, "length": 12, "seed": 4}
    d = client.post("/api/intervene", json={"text": QUOTES, "intervention": {**QUOTE_UNIT, "mode": "clamp_high"},
                                            "sample": sample}).json()
    top = float(np.max(lm.trace(QUOTES)["layer0.cell"][:, 0]))
    edit = d["intervention"]
    assert edit["mode"] == "clamp_high" and edit["value"] == pytest.approx(top, abs=1e-6)
    assert "(its maximum over the text)" in edit["label"]
    assert d["trace"]["values"] == pytest.approx([top] * len(QUOTES), abs=1e-5)
    expected = lm.sample(12, "ab", temperature=0.5, seed=4, interventions=[Clamp("layer0.cell", 0, edit["value"])])
    assert d["sample"]["text"] == expected
    # the value the answer gives, sent back as a clamp, is the same edit for /api/trace, /api/predict, /api/sample
    held = {**QUOTE_UNIT, "mode": "clamp", "value": edit["value"]}
    traced = client.post("/api/trace", json={"text": QUOTES, **QUOTE_UNIT, "intervention": held}).json()
    assert traced["values"] == d["trace"]["values"]
    sampled = client.post("/api/sample", json={**sample, "intervention": held}).json()
    assert sampled["text"] == expected and sampled["intervention"]["value"] == edit["value"]
    predicted = client.post("/api/predict", json={"text": QUOTES, "position": 0, "top": 3, "intervention": held}).json()
    clamped = lm.predict(QUOTES, interventions=[Clamp("layer0.cell", 0, edit["value"])])
    top_p = max(p["p"] for p in predicted["columns"][0]["top"])
    assert top_p == pytest.approx(float(clamped.probs[0].max()), abs=1e-5)


@pytest.mark.parametrize("path, body, words", [
    ("/api/intervene", {"text": QUOTES, "intervention": {**QUOTE_UNIT, "mode": "clamp"}}, ["clamp needs a finite value"]),
    ("/api/intervene", {"text": QUOTES, "intervention": {**QUOTE_UNIT, "mode": "zap"}}, ["mode must be one of", "ablate"]),
    ("/api/intervene", {"text": QUOTES, "intervention": {"name": "layer0.cell", "unit": 7}}, ["unit 7 does not exist"]),
    ("/api/intervene", {"text": QUOTES, "intervention": QUOTE_UNIT, "from": 5, "to": 5}, ["from..to"]),
    ("/api/intervene", {"text": "a", "intervention": QUOTE_UNIT}, ["at least two characters"]),
    ("/api/sample", {"prime": "ab", "intervention": {**QUOTE_UNIT, "mode": "clamp_low"}}, ["over a text"]),
])
def test_bad_interventions_are_one_line_json_errors(client, path, body, words):
    r = client.post(path, json=body)
    assert r.status_code in (400, 404)
    for w in words:
        assert w in r.json()["error"]
