"""Symmetric KL between predictions, its course over training snapshots, and `rnnlens kl`."""

import csv
import json
import math

import numpy as np
import pytest
from conftest import make_text, run_cli

import rnnlens
from rnnlens.analysis.resemblance import (
    Resemblance,
    list_snapshots,
    resemblance_over_training,
    symmetric_kl,
    symmetric_kl_per_position,
)
from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, predict


def preds(text, chars, rows, name="m"):
    return Predictions(text, list(chars), np.asarray(rows, dtype=np.float32), name=name)


def two_point(a, b):
    """The closed form of KL(p||q) + KL(q||p) for p = (a, 1-a), q = (b, 1-b)."""
    return (a - b) * math.log(a / b) + (b - a) * math.log((1 - a) / (1 - b))


def test_identical_predictions_are_zero_apart():
    p = preds("abca", "abc", [[0.2, 0.3, 0.5], [0.9, 0.05, 0.05], [1e-3, 0.5, 0.499]])
    assert symmetric_kl(p, p) == 0.0
    # the same distributions over the vocabulary in another order
    q = preds("abca", "cab", p.probs[:, [2, 0, 1]])
    assert symmetric_kl(p, q) == pytest.approx(0.0, abs=1e-12)


def test_two_element_distributions_match_the_closed_form():
    p = preds("xyx", "xy", [[0.3, 0.7], [0.9, 0.1]])
    q = preds("xyx", "xy", [[0.6, 0.4], [0.5, 0.5]])
    per = symmetric_kl_per_position(p, q)
    expected = [two_point(0.3, 0.6), two_point(0.9, 0.5)]
    assert per == pytest.approx(expected, rel=1e-6)
    assert symmetric_kl(p, q) == pytest.approx(np.mean(expected), rel=1e-6)
    assert symmetric_kl(q, p) == pytest.approx(symmetric_kl(p, q), rel=1e-12)  # symmetric


def test_missing_characters_are_floored_then_renormalised():
    # q has no 'c'; p gives it 0.2. With the floor f: q becomes (0.5, 0.5, f) / (1 + f).
    f = 1e-4
    p = preds("ab", "abc", [[0.4, 0.4, 0.2]])
    q = preds("ab", "ab", [[0.5, 0.5]])
    qq = np.array([0.5, 0.5, f]) / (1 + f)
    pp = np.array([0.4, 0.4, 0.2])
    expected = float(((pp - qq) * (np.log(pp) - np.log(qq))).sum())
    assert symmetric_kl(p, q, floor=f) == pytest.approx(expected, rel=1e-6)
    assert symmetric_kl(q, p, floor=f) == pytest.approx(expected, rel=1e-6)
    # a smaller floor makes the missing character cost more, but never infinitely much
    assert expected < symmetric_kl(p, q, floor=1e-9) < 0.2 * math.log(0.2 / 1e-9) + 1


def test_bad_inputs():
    p = preds("ab", "ab", [[0.5, 0.5]])
    with pytest.raises(RnnlensError, match="different texts"):
        symmetric_kl(p, preds("ba", "ab", [[0.5, 0.5]], name="other"))
    with pytest.raises(RnnlensError, match="floor must be in"):
        symmetric_kl(p, p, floor=0)


# ---------------------------------------------------------------------------------------------
# Over training: real tiny runs with snapshots


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = root / "input.txt"
    data.write_text(make_text(300))
    held = root / "held.txt"
    held.write_text(make_text(12, seed=5))
    common = dict(size=16, embedding_size=8, batch_size=4, seq_len=20, lr=1e-2, eval_every=20, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLENS_CACHE", str(root / "cache"))
        rnnlens.train(data=str(data), out=root / "lstm", model="lstm", max_steps=30, snapshot_every=10, **common)
        rnnlens.train(data=str(data), out=root / "nnn", model="ffn", context=3, max_steps=30, **common)
        rnnlens.train(data=str(data), out=root / "plain", model="lstm", max_steps=3, **common)
    return {"root": root, "data": data, "held": held, "lstm": root / "lstm", "nnn": root / "nnn",
            "plain": root / "plain"}


class StandIn:
    """What an n-gram model offers the analysis: predict(text) -> Predictions."""

    def __init__(self, chars, order=1):
        self.chars, self.order, self.calls = list(chars), order, []

    def predict(self, text, order=None):
        self.calls.append(order)
        v = len(self.chars)
        probs = np.full((len(text) - 1, v), 1.0 / v, dtype=np.float32)
        if order == 2:  # something that differs from uniform, deterministically
            probs = np.random.default_rng(0).dirichlet(np.ones(v), len(text) - 1).astype(np.float32)
        return Predictions(text, self.chars, probs, name="stand-in")


def test_resemblance_over_training(runs):
    text = runs["held"].read_text()
    snaps = list_snapshots(runs["lstm"])
    assert [s for s, _ in snaps] == [0, 10, 20, 30]
    final = snaps[-1][1]
    chars = rnnlens.load(runs["lstm"]).vocab.chars
    uniform = StandIn(chars)
    given = uniform.predict(text)
    res = resemblance_over_training(runs["lstm"], {"self": final, "uniform": uniform, "nnn": rnnlens.load(runs["nnn"]),
                                                   "given": given}, text)
    assert isinstance(res, Resemblance)
    assert res.steps.tolist() == [0, 10, 20, 30] and res.chars == len(text) - 1
    assert res.kl["self"][-1] == pytest.approx(0.0, abs=1e-9)  # the last snapshot against itself
    assert (res.kl["self"][:-1] > 0).all()
    assert res.kl["uniform"].tolist() == pytest.approx(res.kl["given"].tolist(), rel=1e-12)
    # each value is the symmetric KL of that snapshot's own predictions
    mid = predict(rnnlens.load(snaps[1][1]), text)
    assert res.kl["nnn"][1] == pytest.approx(symmetric_kl(mid, predict(rnnlens.load(runs["nnn"]), text)), rel=1e-9)
    assert res.loss[1] == pytest.approx(mid.loss, rel=1e-9)
    assert res.loss[-1] < res.loss[0]  # it learned
    assert (np.diff(res.seconds) > 0).all() and res.seconds[0] == 0
    assert res.baseline_loss["uniform"] == pytest.approx(math.log(len(chars)), rel=1e-6)
    assert res.closest()[-1] == "self"
    assert given.name == "stand-in"  # the caller's object is not renamed
    d = res.to_dict()
    assert d["baselines"]["nnn"]["kl"] == res.kl["nnn"].tolist() and d["steps"] == [0, 10, 20, 30]
    json.dumps(d)


def test_resemblance_errors(runs):
    text = runs["held"].read_text()
    with pytest.raises(RnnlensError, match="no snapshots.*--snapshot-every"):
        resemblance_over_training(runs["plain"], {"u": StandIn("ab")}, text)
    with pytest.raises(RnnlensError, match="no baselines"):
        resemblance_over_training(runs["lstm"], {}, text)
    other = StandIn(rnnlens.load(runs["lstm"]).vocab.chars).predict(text[:-1] + "x")
    with pytest.raises(RnnlensError, match="another text"):
        resemblance_over_training(runs["lstm"], {"o": other}, text)


def test_cli_kl_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    final = list_snapshots(runs["lstm"])[-1][1]
    code, stdout, err = run_cli(capsys, "kl", runs["lstm"], "--text", runs["held"], "--baseline", f"nnn={runs['nnn']}",
                                "--baseline", f"self={final}", "--out", out)
    assert code == 0, err
    assert "closest" in stdout and "nnn" in stdout and "wrote" in stdout
    with open(out / "kl.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 30]
    assert list(rows[0]) == ["step", "seconds", "loss_nats", "kl_nnn", "kl_self", "closest"]
    assert float(rows[-1]["kl_self"]) == pytest.approx(0.0, abs=1e-9) and rows[-1]["closest"] == "self"
    summary = json.loads((out / "kl.json").read_text())
    assert summary["steps"] == [0, 10, 20, 30] and set(summary["baselines"]) == {"nnn", "self"}
    assert summary["baselines"]["nnn"]["kl"] == pytest.approx([float(r["kl_nnn"]) for r in rows], rel=1e-9)
    assert (out / "kl.png").read_bytes()[:4] == b"\x89PNG"

    code, stdout, _ = run_cli(capsys, "kl", runs["lstm"], "--text", runs["held"], "--baseline", f"nnn={runs['nnn']}",
                              "--out", out, "--json", "--max-chars", 50, "--device", "auto")
    assert code == 0
    info = json.loads(stdout)
    assert info["chars"] == 49 and info["csv"].endswith("kl.csv") and info["figure"].endswith("kl.png")


def test_cli_kl_fits_ngram_orders(runs, tmp_path, capsys, monkeypatch):
    chars = rnnlens.load(runs["lstm"]).vocab.chars
    made = []

    def train_ngram(data=None, order=20, out=None, *, corpus=None, **kw):
        made.append((data if corpus is None else corpus.content_hash, order, kw))
        return StandIn(chars, order)
    from rnnlens import ngram
    monkeypatch.setattr(ngram, "train_ngram", train_ngram)
    code, stdout, err = run_cli(capsys, "kl", runs["lstm"], "--text", runs["held"], "--ngram-orders", "2,1",
                                "--out", tmp_path, "--json")
    assert code == 0, err
    run_corpus = rnnlens.load(runs["lstm"]).meta["corpus"]["content_hash"]
    assert made[0][0] == run_corpus and made[0][1] == 2  # the run's corpus, the largest order
    info = json.loads(stdout)
    assert list(info["baselines"]) == ["1-gram", "2-gram"]
    one = info["baselines"]["1-gram"]
    assert one["loss"] == pytest.approx(math.log(len(chars)), rel=1e-6)
    assert info["baselines"]["2-gram"]["kl"] != one["kl"]
    # --data names another corpus
    code, _, err = run_cli(capsys, "kl", runs["lstm"], "--text", runs["held"], "--ngram-orders", "3",
                           "--data", runs["held"], "--out", tmp_path, "--json")
    assert code == 0 and made[-1][:2] == (str(runs["held"]), 3)


@pytest.mark.parametrize("args, message", [
    ([], "nothing to compare with"),
    (["--baseline", "nnn"], "NAME=PATH"),
    (["--baseline", "a=x", "--baseline", "a=y"], "given twice"),
    (["--ngram-orders", "2,x"], "--ngram-orders takes integers"),
    (["--ngram-orders", "0"], "--ngram-orders takes integers"),
    (["--baseline", "a=x", "--data", "corpus.txt"], "--data is the corpus for --ngram-orders"),
    (["--baseline", "a=x", "--floor", "0"], "--floor"),
    (["--baseline", "a=does-not-exist"], "does-not-exist"),
])
def test_cli_kl_bad_input(runs, tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, "kl", runs["lstm"], "--text", runs["held"], "--out", tmp_path, *args)
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_cli_kl_needs_snapshots(runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, "kl", runs["plain"], "--text", runs["held"], "--baseline", f"n={runs['nnn']}",
                           "--out", tmp_path)
    assert code == 2 and "--snapshot-every" in err


def test_cli_kl_unknown_characters(runs, tmp_path, capsys):
    odd = tmp_path / "odd.txt"
    odd.write_text("the cat Z sat.\nthe dog ran.\n")
    base = ["kl", runs["lstm"], "--text", odd, "--baseline", f"nnn={runs['nnn']}", "--out", tmp_path]
    code, _, err = run_cli(capsys, *base)
    assert code == 2 and "'Z'" in err
    code, out, err = run_cli(capsys, *base, "--unknown", "drop", "--json")
    assert code == 0, err
    assert json.loads(out)["chars"] == len("the cat  sat.\nthe dog ran.\n") - 1
