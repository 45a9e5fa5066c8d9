"""Causal effect of discovered units (rnnlens.analysis.causal): the loss change on a unit's feature when it is
ablated, batched over units in one step-by-step pass."""

import numpy as np
import pytest
from test_interventions import TEXT, planted_quote_model, random_lm

from rnnlens.analysis.causal import causal_effects
from rnnlens.analysis.features import callable_feature
from rnnlens.errors import RnnlensError
from rnnlens.interventions import Ablate

QUOTES = 'ab "ab ba" ba "a b" ab "bb a" a "ab" ba ' * 4


def closing_quote(text: str) -> np.ndarray:
    """On at each closing quote: the character planted unit 0 is there to predict."""
    return np.array([ch == '"' and text[:i].count('"') % 2 == 1 for i, ch in enumerate(text)])


def test_ablating_the_planted_quote_unit_makes_closing_quotes_hard_and_an_inert_unit_changes_nothing_exactly():
    lm = planted_quote_model()
    closing = callable_feature("closing_quote", closing_quote)
    units = [{"feature": "closing_quote", "layer": 0, "kind": "cell", "unit": 0, "metric": "auc", "score": 0.99},
             {"feature": "closing_quote", "layer": 0, "kind": "cell", "unit": 1},     # all its weights are zero
             {"feature": "in_double_quotes", "layer": 0, "kind": "cell", "unit": 0},
             {"feature": "in_double_quotes", "layer": 0, "kind": "hidden", "unit": 1}]
    result = causal_effects(lm, QUOTES, units, features=[closing, "in_double_quotes"])
    planted, inert, quotes, inert_hidden = result.effects
    assert (planted.metric, planted.score) == ("auc", 0.99)
    assert planted.chars_on == 16  # 16 closing quotes in the text
    # p(closing quote) > 0.7 as trained (loss < 0.36) and < 0.1 ablated (loss > 2.3): a rise of about 2 nats
    assert planted.loss_on < 0.36 and planted.change_on > 1.9
    # elsewhere it gets easier: inside a quotation the planted model half-expects a quote at every character
    assert planted.change_off < 0
    # the span feature switches at the opening and closing quotes; only the closing ones get harder
    assert quotes.chars_switch == 32 and quotes.change_switch == pytest.approx(planted.change_on / 2, abs=0.02)
    for e in (inert, inert_hidden):
        assert e.change_on == 0.0 and e.change_off == 0.0 and e.change_all == 0.0
    assert result.chars == len(QUOTES) - 1 and result.text_chars == len(QUOTES)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_batched_pass_equals_ablating_each_unit_alone(cell):
    lm = random_lm(cell, layers=2, size=12)
    kinds = ["cell", "hidden"] if cell == "lstm" else ["hidden", "gate.update"]
    units = [{"feature": "word_position", "layer": layer, "kind": kind, "unit": unit}
             for layer, kind, unit in [(0, kinds[0], 3), (1, kinds[1], 5), (1, kinds[0], 0), (0, kinds[1], 11)]]
    result = causal_effects(lm, TEXT, units)
    clean = lm.predict(TEXT)
    assert result.loss == pytest.approx(clean.loss, abs=1e-5)
    on = np.array([ch.isalpha() for ch in TEXT[1:]])  # word_position > 0 on letters
    for u, e in zip(units, result.effects):
        delta = lm.predict(TEXT, interventions=[Ablate(f"layer{u['layer']}.{u['kind']}", u["unit"])]).losses \
            - clean.losses
        assert e.change_all == pytest.approx(delta.mean(), abs=1e-5)
        assert e.change_on == pytest.approx(delta[on].mean(), abs=1e-5)
        assert e.chars_on == int(on.sum())


def test_only_the_first_max_chars_are_scored_and_the_answer_says_so():
    lm = random_lm("lstm", layers=1, size=8)
    text = TEXT * 4
    result = causal_effects(lm, text, [{"feature": "line_position", "layer": 0, "kind": "cell", "unit": 2}],
                            max_chars=50)
    assert result.chars == 50 and result.text_chars == len(text) and result.max_chars == 50
    assert result.to_dict()["effects"][0]["activation"] == "layer0.cell"
    delta = lm.predict(text[:51], interventions=[Ablate("layer0.cell", 2)]).losses - lm.predict(text[:51]).losses
    assert result.effects[0].change_all == pytest.approx(delta.mean(), abs=1e-5)


def test_bad_units_and_features_are_one_line_errors():
    lm = random_lm("lstm", layers=1, size=8)
    with pytest.raises(RnnlensError, match="unit 0:8 cell is not in this LSTM 1x8"):
        causal_effects(lm, TEXT, [{"feature": "indent", "layer": 0, "kind": "cell", "unit": 8}])
    with pytest.raises(RnnlensError, match="no feature 'nope'"):
        causal_effects(lm, TEXT, [{"feature": "nope", "layer": 0, "kind": "cell", "unit": 1}])
    with pytest.raises(RnnlensError, match="needs feature, layer, kind and unit"):
        causal_effects(lm, TEXT, [{"layer": 0, "unit": 1}])
    with pytest.raises(RnnlensError, match="max_chars"):
        causal_effects(lm, TEXT, [], max_chars=0)
