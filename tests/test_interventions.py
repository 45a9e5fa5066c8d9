"""Interventions inside the recurrence (rnnlens.interventions): exactness, equivalences, a planted unit."""

import numpy as np
import pytest
import torch

from rnnlens.api import LanguageModel
from rnnlens.corpus import Vocab
from rnnlens.errors import RnnlensError
from rnnlens.interventions import Ablate, Add, Clamp, Hook, Patch, Scale, parse_unit_spec, steer
from rnnlens.model import CharRNN, ModelConfig
from rnnlens.sample import SamplingOptions, Stepper, state_to_layers

CHARS = list("\n abcdefgh.")
TEXT = "abc def. gah\nbad cab. fed\n" * 3


def random_lm(cell="lstm", layers=2, size=12, seed=0) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=len(CHARS), cell=cell, layers=layers, size=size, embedding_size=6, dropout=0.0,
                      init="torch")
    return LanguageModel(CharRNN(cfg).eval(), Vocab(CHARS))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_setting_a_unit_to_the_value_it_already_has_changes_nothing(cell):
    lm = random_lm(cell)
    clean = lm.trace(TEXT)
    names = [n for n in clean.names() if n.startswith("layer")]
    same = [Patch(n, [1, 5], clean) for n in names] + [Scale(names[0], None, 1.0), Add(names[-1], 3, 0.0)]
    edited = lm.trace(TEXT, interventions=same)
    for n in clean.names():
        np.testing.assert_allclose(edited[n], clean[n], atol=1e-6, err_msg=n)
    # a hook that returns the value unchanged, on every activation
    hooked = lm.predict(TEXT, interventions=[Hook(lambda name, v, t: v.clone())])
    np.testing.assert_allclose(hooked.probs, clean["probs"][:-1], atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1])
def test_ablating_a_hidden_unit_equals_zeroing_its_outgoing_weights(layer):
    lm = random_lm("lstm", layers=2)
    unit = 4
    ablated = lm.predict(TEXT, interventions=[Ablate(f"layer{layer}.hidden", unit)])
    # the same edit made in the weights: h_unit feeds W_hh of its layer, then W_ih of the next layer or the head
    edited = random_lm("lstm", layers=2)
    with torch.no_grad():
        getattr(edited.model.rnn, f"weight_hh_l{layer}")[:, unit] = 0
        nxt = edited.model.rnn.weight_ih_l1 if layer == 0 else edited.model.head.weight
        nxt[:, unit] = 0
    np.testing.assert_allclose(ablated.probs, edited.predict(TEXT).probs, atol=1e-5)
    assert np.abs(ablated.probs - lm.predict(TEXT).probs).max() > 1e-3  # and it did change something
    # sampling on the fast path (float32 weights) with the intervention = sampling the edited weights
    a = lm.sample(60, "abc", argmax=True, precision="float32", interventions=[Ablate(f"layer{layer}.hidden", unit)])
    assert a == edited.sample(60, "abc", argmax=True, precision="float32")


def test_an_intervention_at_position_t_changes_nothing_before_t():
    lm = random_lm("gru", layers=2)
    t = 20
    clean = lm.trace(TEXT)
    edited = lm.trace(TEXT, interventions=[Clamp("layer0.hidden", [0, 1, 2], 0.9, start=t)])
    for n in clean.names():
        np.testing.assert_allclose(edited[n][:t], clean[n][:t], atol=1e-6, err_msg=n)  # stepped vs fused: float order
        assert np.nanmax(np.abs(edited[n][t:] - clean[n][t:])) > 1e-4, n
    once = lm.trace(TEXT, interventions=[Clamp("layer0.hidden", [0, 1, 2], 0.9, start=t, stop=t + 1)])
    assert np.all(once["layer0.hidden"][t, :3] == 0.9) and np.all(once["layer0.hidden"][t + 1, :3] != 0.9)


def test_an_ablated_cell_stays_ablated_and_edits_feed_forward_in_order():
    lm = random_lm("lstm", layers=1)
    tr = lm.trace(TEXT, interventions=[Ablate("layer0.cell", 2)])
    assert np.all(tr["layer0.cell"][:, 2] == 0) and np.all(tr["layer0.hidden"][:, 2] == 0)  # h = o * tanh(0)
    # a gate clamped to zero: the cell keeps only its input part, c = i * g
    tr = lm.trace(TEXT, interventions=[Clamp("layer0.gate.forget", None, 0.0)])
    np.testing.assert_allclose(tr["layer0.cell"], tr["layer0.gate.input"] * tr["layer0.gate.candidate"], atol=1e-6)
    # the hook sees the step's values and the position
    seen = []
    lm.trace(TEXT[:5], interventions=[Hook(lambda name, v, t: seen.append((name, t)), name="layer0.cell")])
    assert seen == [("layer0.cell", t) for t in range(5)]


def test_ablate_to_mean_and_evaluate_and_errors():
    lm = random_lm("lstm", layers=2)
    clean = lm.trace(TEXT)
    tr = lm.trace(TEXT, interventions=[Ablate("layer1.cell", [3, 7], to="mean")])
    np.testing.assert_allclose(tr["layer1.cell"][:, [3, 7]], np.broadcast_to(clean["layer1.cell"][:, [3, 7]].mean(0),
                                                                           (len(TEXT), 2)), atol=1e-5)
    base = lm.evaluate(TEXT, batch_size=1, seq_len=len(TEXT))  # one stream, as with interventions
    same = lm.evaluate(TEXT, interventions=[Scale("layer0.cell", None, 1.0)], keep_losses=True)
    assert same.loss == pytest.approx(base.loss, abs=1e-5) and same.chars == len(TEXT) - 1
    other = lm.evaluate(TEXT, interventions=[Clamp("layer1.hidden", None, 1.0)])
    assert abs(other.loss - base.loss) > 1e-3
    with pytest.raises(RnnlensError, match="no activation 'layer2.cell'"):
        lm.trace(TEXT, interventions=[Ablate("layer2.cell", 0)])
    with pytest.raises(RnnlensError, match="unit 12 does not exist"):
        lm.predict(TEXT, interventions=[Ablate("layer0.cell", 12)])
    with pytest.raises(RnnlensError, match="mean_over"):
        lm.sample(10, interventions=[Ablate("layer0.cell", 1, to="mean")])
    assert len(lm.sample(10, interventions=[Ablate("layer0.cell", 1, to="mean", mean_over=TEXT)])) == 10


def test_steps_with_interventions_equal_the_trace():
    lm = random_lm("lstm", layers=2)
    iv = [Clamp("layer0.cell", 1, 0.5), Scale("layer1.gate.output", [2, 3], 0.2), Add("layer1.hidden", 0, 0.3)]
    from rnnlens.interventions import compile_interventions
    cfg = lm.config
    probs = lm.trace(TEXT, interventions=iv)["probs"]
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        stepper = Stepper(lm.model, 1, dtype, compile_interventions(iv, cfg.cell, cfg.layers, cfg.size), threads=1)
        stepper.set_state(state_to_layers("lstm", lm.model.initial_state(1)))
        for t, i in enumerate(lm.vocab.encode(TEXT)):
            p = torch.softmax(stepper.advance(torch.tensor([i]), t), -1)[0].numpy()
            np.testing.assert_allclose(p, probs[t], atol=tol)


def test_batched_samples_and_reproducible_seeds():
    lm = random_lm("lstm", layers=2)
    rows = lm.sample(30, "abc", num_samples=3, argmax=True)
    assert len(rows) == 3 and len(set(rows)) == 1 and rows[0] == lm.sample(30, "abc", argmax=True, precision="float32")
    a = lm.sample(40, "abc", num_samples=4, seed=3)
    assert a == lm.sample(40, "abc", num_samples=4, seed=3) and len(set(a)) > 1
    assert lm.sample(40, "abc", seed=5) == lm.sample(40, "abc", seed=5)
    with pytest.raises(RnnlensError, match="precision"):
        SamplingOptions(precision="int4")


def test_unit_specs():
    assert parse_unit_spec("1:42", "lstm", 2, 64) == ("layer1.cell", [42], None)
    assert parse_unit_spec("0:3,4", "gru", 2, 64) == ("layer0.hidden", [3, 4], None)
    assert parse_unit_spec("layer0.gate.forget:7=0.5", "lstm", 2, 64, value=True) == ("layer0.gate.forget", [7], 0.5)
    assert steer(["1:2=-1"], "lstm", 2, 8) == [Clamp("layer1.cell", [2], -1.0)]
    for spec, message in [("1-42", "LAYER:UNIT"), ("2:1", "layer 2 does not exist"), ("1:99", "unit 99"),
                          ("layer0.gate.reset:1", "not a layer number"), ("1:4=x", "not a number")]:
        with pytest.raises(RnnlensError, match=message):
            parse_unit_spec(spec, "lstm", 2, 64, value="=" in spec)
    with pytest.raises(RnnlensError, match="needs a value"):
        steer(["1:2"], "lstm", 2, 8)


# ---------------------------------------------------------------------------------------------
# A planted model: one LSTM cell unit alone carries the "inside a quotation" bit


def planted_quote_model() -> LanguageModel:
    """Characters a, b, space, '"'. Cell unit 0 toggles at every '"': its forget gate closes and its input gate
    opens only there, and its candidate is +1 when the unit was off (h ~ 0) and ~0 when it was on
    (h = tanh(1) = 0.76). The head predicts '"' from h_0. Unit 1 is inert (all its weights zero)."""
    vocab = Vocab(["a", "b", " ", '"'])
    cfg = ModelConfig(vocab_size=4, cell="lstm", layers=1, size=2, input="onehot", dropout=0.0, init="torch")
    model = CharRNN(cfg).eval()
    q = vocab.chars.index('"')
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        rnn = model.rnn
        i_row, f_row, g_row, o_row = 0, 2, 4, 6  # unit 0's rows in the [i, f, g, o] blocks of H = 2
        rnn.bias_ih_l0[i_row] = -10.0
        rnn.weight_ih_l0[i_row, q] = 20.0          # input gate opens on '"'
        rnn.bias_ih_l0[f_row] = 10.0
        rnn.weight_ih_l0[f_row, q] = -20.0         # forget gate closes on '"'
        rnn.bias_ih_l0[g_row] = 10.0
        rnn.weight_hh_l0[g_row, 0] = -10.0 / np.tanh(1.0)  # candidate: +1 from off, 0 from on
        rnn.bias_ih_l0[o_row] = 10.0               # output gate open
        model.head.weight[q, 0] = 6.0
        model.head.bias[q] = -2.0
    return LanguageModel(model, vocab)


def test_planted_quote_unit_closes_quotes_and_loses_it_when_ablated():
    lm = planted_quote_model()
    text = 'ab "ab ba" ba "a b" ab "bb a" a "ab" ba ' * 4
    closing = [i - 1 for i, ch in enumerate(text) if ch == '"' and text[:i].count('"') % 2 == 1]
    clean = lm.predict(text)
    q = lm.vocab.chars.index('"')
    tr = lm.trace(text)
    inside = np.array([text[:i + 1].count('"') % 2 == 1 for i in range(len(text))])
    assert np.all(tr["layer0.cell"][inside, 0] > 0.9) and np.all(tr["layer0.cell"][~inside, 0] < 0.1)
    assert clean.probs[closing, q].min() > 0.7
    ablated = lm.predict(text, interventions=[Ablate("layer0.cell", 0)])
    assert ablated.probs[closing, q].max() < 0.1
    # ablating the inert unit changes nothing
    np.testing.assert_allclose(lm.predict(text, interventions=[Ablate("layer0.cell", 1)]).probs, clean.probs,
                               atol=1e-6)
    # steering: the unit clamped on makes the model close a quote at once while sampling greedily
    on = lm.sample(3, "ab", argmax=True, interventions=[Clamp("layer0.cell", 0, 1.0)])
    off = lm.sample(3, "ab", argmax=True, interventions=[Clamp("layer0.cell", 0, 0.0)])
    assert on == '"""' and '"' not in off


# ---------------------------------------------------------------------------------------------
# The command line: `rnnlens ablate` and `rnnlens sample --steer`

@pytest.fixture
def trained(tmp_path, text_file, capsys):
    from conftest import train_tiny_cli
    return train_tiny_cli(capsys, text_file, tmp_path / "run", layers=2, steps=20)


def test_cli_ablate_writes_the_page_tables_and_samples(trained, text_file, tmp_path, capsys):
    import json

    from conftest import run_cli
    out = tmp_path / "abl"
    code, stdout, err = run_cli(capsys, "ablate", trained, "--unit", "1:3", "--unit", "layer0.hidden:2,5", "--text",
                                text_file, "--max-chars", "3000", "--out", out, "--sample-length", "40", "--json")
    assert code == 0, err
    info = json.loads(stdout)
    for name in ("ablate.html", "delta.npy", "classes.csv", "classes.md", "classes.png", "features.csv", "samples.md",
                 "ablate.json"):
        assert (out / name).exists(), name
    delta = np.load(out / "delta.npy")
    assert delta.shape == (2999,) and info["chars"] == 2999
    assert info["loss_change"] == pytest.approx(float(delta.astype(np.float64).mean()), abs=1e-4)
    assert set(info["samples"]) == {"clamped low", "left alone", "clamped high"}
    assert all(len(s) == 40 for s in info["samples"].values())
    assert len(info["clamp_values"]["clamped low"]) == 3  # 1:3 and layer0.hidden:2,5
    page = (out / "ablate.html").read_text()
    assert "red: the ablated model predicts worse" in page
    # ... and the colours say so: red is where the model as trained (B) gave the higher probability
    assert "<b style='color:#e64b3c'>red</b>: as trained (B) did" in page
    # the free sample is the model's own sample at the same seed and temperature
    import rnnlens
    assert info["samples"]["left alone"] == rnnlens.load(trained).sample(40, "\n", seed=0, temperature=0.8)

    code, stdout, err = run_cli(capsys, "ablate", trained, "--unit", "1:3", "--to", "mean", "--text", text_file,
                                "--max-chars", "500", "--out", out, "--sample-length", "0")
    assert code == 0 and "ablating 1:3" in stdout and "loss by class" in stdout


@pytest.mark.parametrize("spec, message", [("1-3", "LAYER:UNIT"), ("5:1", "layer 5 does not exist"),
                                           ("1:99", "unit 99 does not exist"), ("layer0.gate.reset:1", "not a layer")])
def test_cli_bad_unit_specs_are_one_line_errors(trained, text_file, tmp_path, capsys, spec, message):
    from conftest import run_cli
    code, out, err = run_cli(capsys, "ablate", trained, "--unit", spec, "--text", text_file, "--out", tmp_path / "x")
    assert code == 2 and message in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "sample", trained, "--steer", spec + "=1", "--length", "5")
    assert code == 2 and message in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "sample", trained, "--steer", "1:2", "--length", "5")
    assert code == 2 and "needs a value" in err


def test_cli_sample_steer_and_batch(trained, capsys):
    from conftest import run_cli

    import rnnlens
    lm = rnnlens.load(trained)
    code, out, err = run_cli(capsys, "sample", trained, "--prime", "the ", "--length", "60", "--seed", "2",
                             "--steer", "1:3=5", "--steer", "layer0.gate.forget:1,2=0",
                             "--steer", "layer1.hidden:" + ",".join(map(str, range(16))) + "=1")
    assert code == 0, err
    from rnnlens.interventions import Clamp
    steered = lm.sample(60, "the ", seed=2, interventions=[Clamp("layer1.cell", [3], 5.0),
                                                           Clamp("layer0.gate.forget", [1, 2], 0.0),
                                                           Clamp("layer1.hidden", list(range(16)), 1.0)])
    assert out == "the " + steered + "\n" and steered != lm.sample(60, "the ", seed=2)
    code, out, err = run_cli(capsys, "sample", trained, "--prime", "a", "--length", "30", "--seed", "1",
                             "--num-samples", "3", "--batch")
    assert code == 0, err
    samples = out.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert samples == ["a" + s for s in lm.sample(30, "a", seed=1, num_samples=3)]
