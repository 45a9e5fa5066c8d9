"""Predictions: the common per-position output of every model kind."""

import numpy as np
import pytest
from conftest import make_text, train_tiny_runs

import rnnlens
from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, check_same_text, predict


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("pred"), ["lstm"])


def test_predict_matches_the_evaluator(lstm_run):
    lm = rnnlens.load(lstm_run["lstm"])
    text = make_text(20, seed=3)
    preds = predict(lm, text, name="lstm")
    assert preds.probs.shape == (len(text) - 1, len(lm.vocab))
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1.0, atol=1e-5)
    assert preds.name == "lstm"
    assert preds.loss == pytest.approx(lm.evaluate(text, batch_size=1).loss, abs=1e-5)


def test_targets_losses_and_other_vocab():
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32)
    preds = Predictions("abz", ["a", "b", "c"], probs)
    assert preds.targets.tolist() == [1, -1]
    np.testing.assert_allclose(preds.target_probs, [0.25, 0.0])
    assert preds.losses[0] == pytest.approx(np.log(4))
    assert np.isfinite(preds.losses).all()
    moved = preds.on_vocab(["c", "z", "a"])
    np.testing.assert_allclose(moved, [[0.25, 0, 0.5], [0.7, 0, 0.1]])


def test_shape_and_text_checks():
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        Predictions("abc", ["a", "b", "c"], np.zeros((3, 3), dtype=np.float32))
    a = Predictions("ab", ["a", "b"], np.full((1, 2), 0.5, dtype=np.float32), name="one")
    b = Predictions("ba", ["a", "b"], np.full((1, 2), 0.5, dtype=np.float32), name="two")
    with pytest.raises(RnnlensError, match="'one' and 'two' were scored on different texts"):
        check_same_text(a, b)
    assert check_same_text(a, a) == "ab"
