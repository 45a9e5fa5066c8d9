"""Character n-gram models: exact agreement with a plain-Python reference, normalisation, lower orders,
files, the CLI and bad inputs."""

import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from conftest import make_text, run_cli

import rnnlens
from rnnlens.corpus import Vocab, load_corpus
from rnnlens.errors import RnnlensError
from rnnlens.ngram import NGramModel, fit_ngram, is_ngram, train_ngram
from rnnlens.predictions import predict


# ----------------------------------------------------------------------------- the reference
class ReferenceKN:
    """Interpolated modified Kneser-Ney written from the formulas with dicts of tuples, one
    character at a time: the independent check of rnnlens.ngram (same documented rules:
    continuation counts + 1 for the j-gram that starts the training text, discounts from counts
    of counts with the fallbacks 0.5 and clipping to [0.05, r], uniform base over V, the
    order-(t+2) model at row t when fewer than n-1 characters precede)."""

    def __init__(self, text, chars, order, smoothing="kn", k=1.0, tables=None):
        # tables: {(j, "raw" or "cont"): [[D1, D2, D3+] per bucket]} (tuned discounts): bucket = 4 * (c(h.) = 1, 2,
        # 3-4, 5-9, >= 10) + (the context's raw occurrences / c(h.) < 1.5, < 3, < 6, >= 6)
        self.chars, self.order, self.smoothing, self.k = chars, order, smoothing, k
        self.tables = tables or {}
        self.V = len(chars)
        self.raw = {j: Counter(tuple(text[i:i + j]) for i in range(len(text) - j + 1)) for j in range(1, order + 1)}
        self.cont = {}
        for j in range(1, order):
            lefts = defaultdict(set)
            for gram in self.raw[j + 1]:
                lefts[gram[1:]].add(gram[0])
            cont = Counter({g: len(lefts[g]) for g in self.raw[j]})
            cont[tuple(text[:j])] += 1     # the unknown text before the start: one more left character
            self.cont[j] = cont
        self.disc = {(j, kind): self.discounts(table)
                     for kind, tables in (("raw", self.raw), ("cont", self.cont)) for j, table in tables.items()}

    @staticmethod
    def discounts(table):
        n = {r: sum(1 for c in table.values() if c == r) for r in (1, 2, 3, 4)}
        y = n[1] / (n[1] + 2 * n[2]) if n[1] > 0 else 0.5
        out = []
        for r in (1, 2, 3):
            d = r - (r + 1) * y * n[r + 1] / n[r] if n[r] > 0 else 0.5
            out.append(min(max(d, 0.05), r))
        return out

    def p_level(self, w, hist, j, kind):
        if j == 0:
            return 1.0 / self.V
        table = (self.raw if kind == "raw" else self.cont)[j]
        h = tuple(hist[len(hist) - (j - 1):]) if j > 1 else ()
        succ = {g[-1]: c for g, c in table.items() if g[:-1] == h}
        total = sum(succ.values())
        if total == 0:
            return self.p_level(w, hist, j - 1, "cont")
        d1, d2, d3 = self.disc[(j, kind)]
        if (j, kind) in self.tables:
            occurrences = sum(c for g, c in self.raw[j].items() if g[:-1] == h)
            ratio = occurrences / total
            bucket = 4 * (0 if total == 1 else 1 if total == 2 else 2 if total <= 4 else 3 if total <= 9 else 4)
            bucket += 0 if ratio < 1.5 else 1 if ratio < 3 else 2 if ratio < 6 else 3
            d1, d2, d3 = self.tables[(j, kind)][bucket]
        d = lambda c: d1 if c == 1 else d2 if c == 2 else d3  # noqa: E731
        gamma = sum(d(c) for c in succ.values()) / total
        c = succ.get(w, 0)
        return (max(c - d(c), 0) if c else 0) / total + gamma * self.p_level(w, hist, j - 1, "cont")

    def p(self, w, hist, order=None):
        order = order or self.order
        m = min(order, len(hist) + 1)
        if self.smoothing == "addk":
            h = tuple(hist[len(hist) - (m - 1):]) if m > 1 else ()
            succ = {g[-1]: c for g, c in self.raw[m].items() if g[:-1] == h}
            return (succ.get(w, 0) + self.k) / (sum(succ.values()) + self.k * self.V)
        return self.p_level(w, hist, m, "raw")

    def table(self, text, order=None):
        return np.array([[self.p(w, text[:t + 1], order) for w in self.chars] for t in range(len(text) - 1)])


TRAIN = make_text(60, seed=1) + "Zq"      # 'Z' and 'q' occur once, at the very end
SCORE = "the cat sat.\nZ dog and the box ran to a red mat.\n## the"   # '#' is in the vocabulary, never in train


def vocab():
    return Vocab(set(TRAIN) | set(SCORE))


def fit(order, **kw):
    v = vocab()
    return fit_ngram(v.encode(TRAIN), v, order, **kw)


# ----------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kneser_ney_matches_the_reference(order):
    model = fit(order)
    ref = ReferenceKN(TRAIN, model.chars, order)
    probs = model.predict(SCORE).probs
    assert probs.shape == (len(SCORE) - 1, len(model.chars))
    np.testing.assert_allclose(probs, ref.table(SCORE), atol=1e-6, rtol=0)
    # the discounts the model reports are the reference's
    for j in range(1, order + 1):
        np.testing.assert_allclose(model.discounts()["raw"][j - 1], ref.disc[(j, "raw")])


def tuned(order):
    """A model whose discounts are tuned on held-out text (SCORE, twice, and more of the same source)."""
    v = vocab()
    held_out = v.encode(make_text(30, seed=7) + SCORE)
    model = fit_ngram(v.encode(TRAIN), v, order, discounts="tuned", val_ids=held_out)
    return model, held_out


@pytest.mark.parametrize("order", [1, 2, 4])
def test_tuned_discounts_match_the_reference_with_the_same_tables(order):
    model, _ = tuned(order)
    assert model.tuned
    tables = {(j, "raw" if j == order else "cont"): np.asarray(lv.t_raw if j == order else lv.t_cont).tolist()
              for j, lv in enumerate(model.levels, start=1)}
    assert all(np.asarray(t).shape == (20, 3) for t in tables.values())
    ref = ReferenceKN(TRAIN, model.chars, order, tables=tables)
    np.testing.assert_allclose(model.predict(SCORE).probs, ref.table(SCORE), atol=1e-6, rtol=0)
    if order > 1:   # contexts fall in more than one occurrence-ratio bucket, so the reference checks them
        ratios = {int(b) % 4 for j in range(1, order + 1) for b in model._stats(j, j == order,
                                                                                np.arange(model._parents(j)))[2]}
        assert len(ratios) > 1


def test_a_version_2_file_loads_as_the_model_it_was(tmp_path):
    """Version 2 stored one discount row per context total; each serves all of that total's ratio buckets."""
    from safetensors import safe_open
    from safetensors.numpy import save_file
    model, _ = tuned(3)
    for lv in model.levels:                     # a model as version 2 had it: equal rows within a total
        for kind in ("t_raw", "t_cont"):
            if getattr(lv, kind) is not None:
                setattr(lv, kind, np.repeat(getattr(lv, kind)[::4], 4, axis=0))
    model.__dict__.pop("_stats_cache", None)
    folder = model.save(tmp_path / "v3")
    with safe_open(str(folder / "ngram.safetensors"), framework="numpy") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(f.metadata()["info"])
    for kind, tables in info["discounts"]["tuned"].items():
        info["discounts"]["tuned"][kind] = {j: t[::4] for j, t in tables.items()}   # 5 rows of (D1, D2, D3+)
    (tmp_path / "v2").mkdir()
    save_file(arrays, str(tmp_path / "v2" / "ngram.safetensors"),
              metadata={"format": "rnnlens-ngram", "version": "2", "info": json.dumps(info | {"version": 2})})
    old = NGramModel.load(tmp_path / "v2")
    assert old.tuned
    np.testing.assert_array_equal(old.predict(SCORE).probs, model.predict(SCORE).probs)


def test_tuning_never_worsens_the_held_out_loss_and_sums_to_one(tmp_path):
    for order in (2, 5, 8):
        model, held_out = tuned(order)
        closed = fit(order)
        assert model.tuning["kept"] == model.tuned
        assert model.losses(held_out).mean() <= closed.losses(held_out).mean() + 1e-12
        assert model.tuning["val_closed"] == pytest.approx(closed.losses(held_out).mean(), abs=1e-12)
    assert model.tuned and model.tuning["val_tuned"] < model.tuning["val_closed"]   # order 8: a real gain
    text = "Zqq# the dog ##" + SCORE
    for k in (8, 3, 1):                         # lower orders inside the tuned model are distributions too
        probs = model.predict(text, order=k).probs.astype(np.float64)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (probs > 0).all()
    # the tables are saved and loaded; "tuned" in the repr and the JSON
    loaded = NGramModel.load(model.save(tmp_path / "t"))
    np.testing.assert_array_equal(loaded.predict(SCORE).probs, model.predict(SCORE).probs)
    assert "discounts tuned on held-out text" in repr(loaded) and "closed-form discounts" in repr(closed)
    assert "tuned" in json.loads((tmp_path / "t" / "ngram.json").read_text())["discounts"]
    with pytest.raises(RnnlensError, match="--discounts must be one of tuned, closed"):
        fit(3, discounts="best")
    with pytest.raises(RnnlensError, match="need held-out text"):
        fit(3, discounts="tuned")


def test_fit_on_train_and_val_keeps_the_discounts_chosen_on_val(tmp_path):
    data = tmp_path / "input.txt"
    data.write_text(make_text(300))
    alone = train_ngram(str(data), 5)
    both = train_ngram(str(data), 5, fit_on="train+val")
    corpus = load_corpus(str(data))
    n_train, n_val = len(corpus.split("train")), len(corpus.split("val"))
    assert alone.meta["train"]["train_chars"] == n_train and alone.meta["train"]["fit_on"] == "train"
    assert both.meta["train"]["train_chars"] == n_train + n_val and both.meta["train"]["fit_on"] == "train+val"
    assert alone.tuned and both.tuned
    for a, b in zip(alone.levels, both.levels):           # the discounts chosen on val, with train counts
        for x, y in ((a.t_raw, b.t_raw), (a.t_cont, b.t_cont)):
            assert (x is None and y is None) or np.array_equal(x, y)
    ids = corpus.vocab.encode(corpus.text("val") + corpus.text("test"))
    assert both.entries > alone.entries and int(both.levels[0].raw.sum()) == n_train + n_val
    probs = both.probs(ids[:200]).astype(np.float64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(RnnlensError, match="fit_on must be"):
        train_ngram(str(data), 3, fit_on="all")


@pytest.mark.parametrize("order", [1, 3])
def test_add_k_matches_the_reference(order):
    model = fit(order, smoothing="addk", k=0.5)
    ref = ReferenceKN(TRAIN, model.chars, order, smoothing="addk", k=0.5)
    np.testing.assert_allclose(model.predict(SCORE).probs, ref.table(SCORE), atol=1e-6, rtol=0)
    # by hand: a trigram after "th" counts every "th" of the training text followed by something;
    # a unigram counts characters
    e, V = model.chars.index("e"), len(model.chars)
    p = model.predict("the").probs[1]          # row 1 predicts 'e' from "th"
    if order == 3:
        after = Counter(TRAIN[i + 2] for i in range(len(TRAIN) - 2) if TRAIN[i:i + 2] == "th")
        assert p[e] == pytest.approx((after["e"] + 0.5) / (sum(after.values()) + 0.5 * V), abs=1e-7)
    else:
        assert p[e] == pytest.approx((TRAIN.count("e") + 0.5) / (len(TRAIN) + 0.5 * V), abs=1e-7)


@pytest.mark.parametrize("smoothing", ["kn", "addk"])
def test_probabilities_sum_to_one_everywhere(smoothing):
    model = fit(7, smoothing=smoothing)
    # seen contexts, unseen contexts ('##', 'Zq' then more), a never-seen character, the text start
    text = "Zqq# the dog ##" + SCORE
    probs = model.predict(text).probs.astype(np.float64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs > 0).all()                     # smoothing leaves no character at 0
    # '#' never occurs in training: it only gets the uniform share (a product of gammas < 1) / V,
    # or k / (total + kV) with add-k (1/V after an unseen context), and is the least likely character
    assert "#" not in TRAIN
    hash_p = probs[:, model.chars.index("#")]
    if smoothing == "kn":
        assert (hash_p < 1 / len(model.chars)).all()
    else:
        assert (hash_p <= 1 / len(model.chars) + 1e-7).all() and (hash_p < 1 / len(model.chars)).any()
    np.testing.assert_allclose(hash_p, probs.min(axis=1), rtol=1e-6)


def test_lower_order_predictions_equal_a_standalone_model():
    big = fit(6)
    for k in (1, 2, 4, 5):
        alone = fit(k)
        np.testing.assert_allclose(big.predict(SCORE, order=k).probs, alone.predict(SCORE).probs, atol=1e-7, rtol=0)
        assert big.predict(SCORE, order=k).name == f"{k}-gram"
    np.testing.assert_array_equal(big.predict(SCORE, order=6).probs, big.predict(SCORE).probs)
    with pytest.raises(RnnlensError, match="above this model's order 6"):
        big.predict(SCORE, order=7)
    addk = fit(4, smoothing="addk")
    np.testing.assert_allclose(addk.predict(SCORE, order=2).probs, fit(2, smoothing="addk").predict(SCORE).probs,
                               atol=1e-7, rtol=0)


@pytest.mark.parametrize("smoothing", ["kn", "addk"])
def test_long_texts_take_the_same_values_through_tables_and_blocks(monkeypatch, smoothing):
    """Long texts use per-context tables and go in blocks; short ones compute each context from its
    successors in one piece. Force the long-text paths on a short text: the same numbers."""
    from rnnlens import ngram
    text = SCORE * 3
    small = fit(6, smoothing=smoothing)
    expect_probs, expect_losses = small.predict(text).probs, small.losses(vocab().encode(text))
    assert not small.__dict__.get("_stats_cache")          # the short path built no table
    monkeypatch.setattr(ngram, "STATS_TABLE_MIN", 0)
    monkeypatch.setattr(ngram, "BLOCK_ROWS", 7)
    monkeypatch.setattr(ngram, "ROW_CHUNK", 3)
    big = fit(6, smoothing=smoothing)
    np.testing.assert_allclose(big.predict(text).probs, expect_probs, atol=1e-7, rtol=0)
    np.testing.assert_allclose(big.losses(vocab().encode(text)), expect_losses, atol=1e-9, rtol=1e-9)
    assert big.__dict__["_stats_cache"]
    # and the losses are the predicted probabilities of the true next characters
    np.testing.assert_allclose(expect_losses, small.predict(text).losses, atol=1e-5)


def test_higher_orders_fit_the_training_text_better():
    losses = [fit(n).evaluate(TRAIN[:300]).loss for n in (1, 2, 3, 5)]
    assert losses == sorted(losses, reverse=True)
    assert losses[0] > 2.0 and losses[-1] < 1.0


def test_evaluate_is_the_mean_loss_of_predict():
    model = fit(4)
    pred = model.predict(SCORE)
    result = model.evaluate(SCORE, keep_losses=True)
    assert result.chars == len(SCORE) - 1
    assert result.loss == pytest.approx(pred.loss, abs=1e-6)
    np.testing.assert_allclose(result.losses, pred.losses, atol=1e-5)
    assert result.bpc == pytest.approx(result.loss / math.log(2))


def test_unknown_characters():
    model = fit(3)
    with pytest.raises(RnnlensError, match=r"not in the vocabulary .*'@'.*--unknown"):
        model.predict("the @ cat")
    dropped = model.predict("the @ cat", unknown="drop")
    assert dropped.text == "the  cat" and dropped.probs.shape == (7, len(model.chars))
    np.testing.assert_array_equal(dropped.probs, model.predict("the  cat").probs)


def test_bad_orders_and_options():
    v = vocab()
    ids = v.encode(TRAIN)
    for order in (0, 21, 2.5, "3"):
        with pytest.raises(RnnlensError, match="order must be an integer from 1 to 20"):
            fit_ngram(ids, v, order)
    with pytest.raises(RnnlensError, match="--smoothing must be one of kn, addk"):
        fit_ngram(ids, v, 3, smoothing="witten-bell")
    with pytest.raises(RnnlensError, match="--k must be a finite number > 0"):
        fit_ngram(ids, v, 3, smoothing="addk", k=0)
    with pytest.raises(RnnlensError, match="training text is empty"):
        fit_ngram(ids[:0], v, 3)


def test_order_above_the_text_length_still_normalises():
    v = Vocab("abc")
    model = fit_ngram(v.encode("abcab"), v, 9)
    probs = model.predict("abcabcaab").probs
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    ref = ReferenceKN("abcab", model.chars, 9)
    np.testing.assert_allclose(probs, ref.table("abcabcaab"), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- files
def test_save_load_round_trip_and_rnnlens_load(tmp_path):
    model = fit(5)
    folder = model.save(tmp_path / "ng")
    assert is_ngram(folder) and is_ngram(folder / "ngram.safetensors")
    assert not is_ngram(tmp_path) and not is_ngram(tmp_path / "missing")
    info = json.loads((folder / "ngram.json").read_text())
    assert info["order"] == 5 and info["smoothing"] == "kn" and info["vocab"]["chars"] == model.chars
    assert len(info["discounts"]["raw"]) == 5 and len(info["discounts"]["cont"]) == 4
    loaded = rnnlens.load(folder)
    assert isinstance(loaded, NGramModel) and loaded.order == 5
    np.testing.assert_array_equal(loaded.predict(SCORE).probs, model.predict(SCORE).probs)
    # the shared contract works on it
    assert predict(loaded, SCORE, name="kn5").name == "kn5"


def test_corrupt_or_missing_files(tmp_path):
    folder = fit(3).save(tmp_path / "ng")
    file = folder / "ngram.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(RnnlensError, match="truncated or corrupt"):
        rnnlens.load(folder)
    file.write_bytes(b"")
    with pytest.raises(RnnlensError, match="truncated or corrupt.*empty"):
        NGramModel.load(folder)
    with pytest.raises(RnnlensError, match="no n-gram model at"):
        NGramModel.load(tmp_path / "nothing")
    # arrays that do not fit together (a level's keys out of order)
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
    file.write_bytes(data)
    with safe_open(str(file), framework="numpy") as f:
        header = f.metadata()
    arrays = load_file(str(file))
    arrays["level2.keys"] = arrays["level2.keys"][::-1].copy()
    save_file(arrays, str(file), metadata=header)
    with pytest.raises(RnnlensError, match="level 2 keys are not sorted"):
        NGramModel.load(folder)


# ----------------------------------------------------------------------------- corpus and CLI
def test_train_ngram_on_a_corpus_file(tmp_path):
    data = tmp_path / "input.txt"
    data.write_text(make_text(200))
    model = train_ngram(str(data), 4, tmp_path / "ng")
    corpus = load_corpus(str(data))
    assert model.meta["train"]["train_chars"] == len(corpus.split("train"))
    # evaluate with no data: the test split of the training corpus, scored as one text
    test_ids = np.asarray(corpus.split("test"), dtype=np.int64)
    result = rnnlens.load(tmp_path / "ng").evaluate()
    assert result.chars == len(test_ids) - 1
    assert result.loss == pytest.approx(model.predict(corpus.text("test")).loss, abs=1e-6)


def test_cli_ngram_and_eval(tmp_path, capsys):
    data = tmp_path / "input.txt"
    data.write_text(make_text(200))
    out = tmp_path / "ng"
    code, stdout, err = run_cli(capsys, "ngram", "--data", data, "--order", 5, "--out", out)
    assert code == 0, err
    assert "5-gram" in stdout and "interpolated modified Kneser-Ney" in stdout
    assert json.loads((out / "ngram.json").read_text())["meta"]["train"]["discounts"] == "tuned on val"
    val = [line for line in stdout.splitlines() if line.startswith("val:")]
    test = [line for line in stdout.splitlines() if line.startswith("test:")]
    assert len(val) == 1 and len(test) == 1 and "bits/char" in test[0]
    nats = float(test[0].split()[1])
    assert 0 < nats < 2.0        # the generated text is very predictable
    assert is_ngram(out)

    code, stdout, err = run_cli(capsys, "eval", out)
    assert code == 0, err
    assert stdout.startswith(f"test: {nats:.4f} nats/char")
    code, stdout, err = run_cli(capsys, "eval", out, "--split", "val", "--json")
    info = json.loads(stdout)
    assert info["split"] == "val" and info["loss_nats"] == pytest.approx(float(val[0].split()[1]), abs=1e-4)

    code, stdout, err = run_cli(capsys, "ngram", "--data", data, "--order", 2, "--out", tmp_path / "two", "--json")
    info = json.loads(stdout)
    assert info["order"] == 2 and info["train_chars"] > 0 and info["test"]["loss_nats"] > nats

    # commands that need an RNN say so
    code, stdout, err = run_cli(capsys, "sample", out, "--length", 5)
    assert code == 2 and "is an n-gram model; sampling needs an RNN run" in err
    code, stdout, err = run_cli(capsys, "viz", out, "--text", data, "--unit", "0:0")
    assert code == 2 and "is an n-gram model" in err

    code, stdout, err = run_cli(capsys, "ngram", "--data", data, "--order", 3, "--smoothing", "addk", "--k", "0.1",
                                "--out", tmp_path / "addk")
    assert code == 0, err
    assert stdout.startswith("3-gram, add-0.1, on ")
    assert json.loads((tmp_path / "addk" / "ngram.json").read_text())["k"] == 0.1


def test_cli_bad_inputs(tmp_path, capsys):
    data = tmp_path / "input.txt"
    data.write_text(make_text(50))
    for order in ("0", "21"):
        code, out, err = run_cli(capsys, "ngram", "--data", data, "--order", order, "--out", tmp_path / "ng")
        assert code == 2 and "--order must be an integer from 1 to 20" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, out, err = run_cli(capsys, "ngram", "--data", empty, "--order", 3, "--out", tmp_path / "ng")
    assert code == 2 and "is empty" in err
    code, out, err = run_cli(capsys, "ngram", "--data", data, "--order", 3, "--smoothing", "addk", "--k", "-1",
                             "--out", tmp_path / "ng")
    assert code == 2 and "--k must be" in err
    # a text the model has never seen characters of
    run_cli(capsys, "ngram", "--data", data, "--order", 3, "--out", tmp_path / "ng")
    other = tmp_path / "other.txt"
    other.write_text("@@@ the cat\n" * 20)
    code, out, err = run_cli(capsys, "eval", tmp_path / "ng", "--data", other)
    assert code == 2 and "never saw ('@')" in err and "--unknown drop" in err
    (tmp_path / "ng" / "ngram.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    code, out, err = run_cli(capsys, "eval", tmp_path / "ng")
    assert code == 2 and "truncated or corrupt" in err and "Traceback" not in err


def test_docs_python_example_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path
    doc = Path(__file__).resolve().parents[1] / "docs" / "baselines.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text(make_text(300))
    exec(compile(blocks[0], "baselines.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("NGramModel(order 5, interpolated modified Kneser-Ney")
    assert 0 < float(out[1]) < 1.5
    assert out[2].startswith("(23, ") and out[3].startswith("2-gram ")
    assert (tmp_path / "ngrams" / "five" / "ngram.safetensors").exists()
