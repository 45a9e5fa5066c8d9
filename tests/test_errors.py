"""The error taxonomy: each rule on crafted positions, the peeling order, two-model comparison, `rnnlens errors`."""

import json
from collections import Counter

import numpy as np
import pytest
from compare_helpers import CountNgram, preds_with
from conftest import make_text, run_cli, train_tiny_runs

from rnnlens.analysis.taxonomy import (
    Context,
    compare_taxonomies,
    ngram_oracle,
    rule_memory,
    rule_ngram,
    rule_punct,
    rule_rare,
    rule_word,
    taxonomy,
    word_counts,
)
from rnnlens.errors import RnnlensError


def ctx(text, *, oracle=None, counts=None, memory=1000, rare=5, threshold=0.5):
    return Context(text=text, p_true=np.zeros(len(text) - 1), oracle_p=oracle, train_counts=counts,
                   threshold=threshold, memory=memory, rare=rare)


def hits(mask) -> list[int]:
    """Text positions (row + 1) a rule takes."""
    return (np.flatnonzero(mask) + 1).tolist()


def test_words_indexed():
    c = ctx("ab, c_1 d\u00e9")
    assert c.words == ["ab", "c_1", "d\u00e9"]
    assert c.word_index.tolist() == [0, 0, -1, -1, 1, 1, 1, -1, 2, 2]
    assert c.word_start.tolist() == [0, 4, 8]


def test_rule_memory_window_and_second_char():
    #       0123456789
    text = "foo bar foo"
    assert hits(rule_memory(ctx(text, memory=8))) == [9, 10]   # 'oo' of the second foo; its 'f' is not taken
    assert hits(rule_memory(ctx(text, memory=7))) == []        # the first foo began 8 characters before
    assert hits(rule_memory(ctx("foo bar food", memory=100))) == []  # 'food' is another word
    assert hits(rule_memory(ctx("Foo foo", memory=100))) == []   # case matters


def test_rule_rare_counts_training_words():
    text = "cat dog emu"
    counts = Counter({"cat": 6, "dog": 5})
    assert hits(rule_rare(ctx(text, counts=counts))) == [4, 5, 6, 8, 9, 10]  # dog (5 times) and emu (never)
    assert hits(rule_rare(ctx(text, counts=counts, rare=4))) == [8, 9, 10]
    assert hits(rule_rare(ctx(text, counts=None))) == []
    assert word_counts("a cat, a dog; a\ncat") == Counter({"a": 3, "cat": 2, "dog": 1})


def test_rule_word_first_character_after_space_newline_or_quote():
    #       0123456789012345
    text = "ab cd\nef 'gh (ij"
    assert hits(rule_word(ctx(text))) == [3, 6, 10]   # not 'a' (text start) nor 'i' (after '(')


def test_rule_punct_and_ngram():
    text = "a, (b)'c' 1"
    assert hits(rule_punct(ctx(text))) == [1, 3, 5, 6, 8]
    oracle = np.array([0.9, 0.5, 0.51, 0.1])
    assert hits(rule_ngram(ctx("abcde", oracle=oracle))) == [1, 3]  # strictly above the threshold
    assert hits(rule_ngram(ctx("abcde"))) == []


def test_peeling_order_each_error_counted_once():
    #       012345678901
    text = "foo, foo zz."
    p = np.full(len(text) - 1, 0.05)
    p[0] = 0.6                       # 'o' at 1: not an error
    model = preds_with(text, p)
    oracle = np.zeros(len(text) - 1)
    oracle[6] = 0.9                  # 'o' at 7: both oracle and memory: the oracle takes it first
    t = taxonomy(model, oracle=oracle, train_counts=Counter({"foo": 9}))
    cat = {name: i for i, name in enumerate(t.categories)}
    by_position = {i + 1: t.categories[k] if k >= 0 else None for i, k in enumerate(t.category.tolist())}
    assert by_position[1] is None
    assert by_position[7] == "ngram" and by_position[6] == "memory"
    assert by_position[8] == by_position[4] == "boost >5x"      # spaces: no rule takes them
    assert by_position[9] == by_position[10] == "rare"  # zz: never seen in training; its first z (after a space) too
    assert by_position[3] == by_position[11] == "punct"
    assert by_position[5] == "word"             # 'f' after the space
    assert by_position[2] == "boost >5x"        # second 'o' of the first foo: not seen before
    assert t.errors == 10 and t.counts.sum() == t.errors
    assert t.shares.sum() == pytest.approx(1.0)
    # without the oracle, the memory rule takes position 7
    t2 = taxonomy(model, train_counts=Counter({"foo": 9}))
    assert t2.category[6] == cat["memory"] and t2.counts[cat["ngram"]] == 0
    assert t2.counts.sum() == t.counts.sum()


def test_boost_buckets_and_threshold():
    text = "abcdefgh"
    p = [0.5, 0.3, 0.25, 0.2, 0.1, 0.05, 0.0]
    t = taxonomy(preds_with(text, p))
    assert t.categories[5:] == ["boost <=2x", "boost 2-5x", "boost >5x"]
    assert [t.categories[k] if k >= 0 else None for k in t.category] == \
        [None, "boost <=2x", "boost <=2x", "boost 2-5x", "boost 2-5x", "boost >5x", "boost >5x"]
    t = taxonomy(preds_with(text, p), threshold=0.3, boost_edges=(3,))
    assert t.categories[5:] == ["boost <=3x", "boost >3x"]
    assert t.errors == 5 and t.counts[5:].tolist() == [3, 2]   # 0.25, 0.2, 0.1 | 0.05, 0
    for bad in ({"threshold": 0}, {"threshold": 1.5}, {"memory": 0}, {"rare": -1}, {"boost_edges": (1,)},
                {"boost_edges": (5, 2)}):
        with pytest.raises(RnnlensError):
            taxonomy(preds_with(text, p), **bad)


def test_oracle_from_predictions_and_from_a_fitted_ngram():
    train = "abcabcabcabd" * 5
    ngram = CountNgram(train, 9)
    text = "abcabd"
    model = preds_with(text, 0.1, chars=ngram.chars)
    orders = [ngram.predict(text, order=k) for k in range(1, 10)]
    best = np.max([o.target_probs for o in orders], axis=0)
    assert ngram_oracle(ngram, text) == pytest.approx(best)
    t_list = taxonomy(model, oracle=orders)
    t_array = taxonomy(model, oracle=ngram_oracle(ngram, text))
    assert t_list.category.tolist() == t_array.category.tolist()
    assert t_list.counts[0] == int((best > 0.5).sum()) > 0
    with pytest.raises(RnnlensError, match="order >= 9"):
        ngram_oracle(CountNgram(train, 5), text)
    with pytest.raises(RnnlensError, match="another text"):
        taxonomy(model, oracle=[ngram.predict("abcabc", order=2)])


def test_two_models_which_errors_scaling_removes():
    text = "ab, cd ab."
    small = preds_with(text, 0.1, name="small")
    p = np.full(len(text) - 1, 0.1)
    p[[2, 3, 7]] = 0.9       # the large model gets ' ' at 3 (boost), 'c' at 4 (word) and 'b' at 8 (memory)
    p[0] = 0.6               # and 'b' at 1 (boost)
    large = preds_with(text, p, name="large")
    ts, tl = taxonomy(small), taxonomy(large)
    cmp = compare_taxonomies(ts, tl)
    rows = {r["category"]: r for r in cmp.rows()}
    assert cmp.fixed == 4 and cmp.new == 0
    assert rows["word"]["fixed"] == 1 and rows["memory"]["fixed"] == 1 and rows["memory"]["fixed_fraction"] == 1.0
    assert sum(r["fixed"] for r in rows.values()) == 4
    assert sum(r["small"] for r in rows.values()) == ts.errors == 9
    assert "fixes 4 of 9 errors" in cmp.table()
    small_right = preds_with(text, np.where(np.arange(len(p)) == 4, 0.9, 0.1), name="s")
    assert compare_taxonomies(taxonomy(small_right), tl).new == 1
    with pytest.raises(RnnlensError, match="same text"):
        compare_taxonomies(ts, taxonomy(preds_with("ab", 0.1)))


# ------------------------------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("errors"), ["lstm", "gru"])


def test_cli_errors_with_oracle_and_two_models(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    body = make_text(40, seed=3)
    text.write_text(body)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "errors", runs["lstm"], runs["gru"], "--text", text, "--out", out)
    assert code == 0, err
    assert f"fitting a 9-gram on the training split of {runs['text']}" in err  # the corpus the run trained on
    assert "n-gram oracle" in stdout and "gru against lstm" in stdout
    result = json.loads((out / "errors.json").read_text())
    for model in result["models"]:
        assert model["chars"] == len(body) - 1 and model["oracle"] and model["rare_words"]
        assert sum(c["count"] for c in model["categories"]) == model["errors"]
        assert sum(c["share"] for c in model["categories"]) == pytest.approx(1.0)
    assert result["comparison"]["small"] == "lstm"
    assert (out / "errors.png").stat().st_size > 1000
    lines = (out / "errors.csv").read_text().splitlines()
    assert lines[0] == "model,category,label,count,share" and len(lines) == 1 + 2 * 8


def test_cli_errors_no_oracle_json(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(make_text(20, seed=4))
    code, stdout, err = run_cli(capsys, "errors", runs["lstm"], "--text", text, "--out", tmp_path, "--no-oracle",
                                "--json", "--threshold", "0.3")
    assert code == 0, err
    result = json.loads(stdout)
    (model,) = result["models"]
    assert not model["oracle"] and model["threshold"] == 0.3 and model["categories"][0]["count"] == 0
    assert result["comparison"] is None


def test_cli_errors_with_a_fitted_ngram_gives_the_same_oracle(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(make_text(30, seed=5))
    code, _, err = run_cli(capsys, "ngram", "--data", runs["text"], "--order", "9", "--out", tmp_path / "g9")
    assert code == 0, err
    results = []
    for extra in ([], ["--ngram", tmp_path / "g9"]):
        code, stdout, err = run_cli(capsys, "errors", runs["lstm"], "--text", text, "--out", tmp_path / "o",
                                    "--json", *extra)
        assert code == 0, err
        results.append(json.loads(stdout)["models"][0]["categories"])
    assert results[0] == results[1] and results[0][0]["category"] == "ngram"
    code, _, err = run_cli(capsys, "ngram", "--data", runs["text"], "--order", "3", "--out", tmp_path / "g3")
    code, _, err = run_cli(capsys, "errors", runs["lstm"], "--text", text, "--out", tmp_path / "o",
                           "--ngram", tmp_path / "g3")
    assert code == 2 and "order >= 9" in err


@pytest.mark.parametrize("args, message", [
    (["RUN", "RUN", "RUN"], "one model, or two"),
    (["MISSING"], "does not exist"),
    (["RUN", "--threshold", "0"], "--threshold"),
    (["RUN", "--memory", "0"], "--memory"),
    (["RUN", "--data", "MISSING"], "no file, folder or named corpus"),
])
def test_cli_errors_bad_inputs(runs, tmp_path, capsys, args, message):
    text = tmp_path / "t.txt"
    text.write_text(make_text(5))
    args = [str(runs["lstm"]) if a == "RUN" else str(tmp_path / "nope") if a == "MISSING" else a for a in args]
    code, _, err = run_cli(capsys, "errors", *args, "--text", text, "--out", tmp_path / "o", "--no-oracle")
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_errors_unknown_characters(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat {sat}\n")
    code, _, err = run_cli(capsys, "errors", runs["lstm"], "--text", text, "--out", tmp_path, "--no-oracle")
    assert code == 2 and "never saw 2 of the text's characters" in err
