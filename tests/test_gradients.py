"""Gradient flow: exact against autograd through torch's fused modules, vanishing and exploding as the
seed posts explain, and the `rnnlens gradients` command end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_text, run_cli

import rnnlens
from rnnlens.analysis.gradients import gradient_flow, gradient_flow_ids, model_label
from rnnlens.errors import RnnlensError
from rnnlens.model import CharRNN, ModelConfig
from rnnlens.trace import _single_layers, recompute_layer


def tiny_model(cell, layers=2, size=8, input="embedding", init="torch", seed=0, vocab=7):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, cell=cell, layers=layers, size=size, dropout=0.0, input=input,
                      embedding_size=5, init=init)
    return CharRNN(cfg).double().eval()


def brute_force(model, ids, t, k):
    """{series: ||d loss_t / d v_{t-k}||} by autograd through the fused torch modules over the whole
    prefix ids[:t+1] from the zero state; hidden and cell values are swapped for leaf tensors."""
    cfg = model.cfg
    prefix = torch.as_tensor(ids[:t + 1])[None]
    target = torch.as_tensor(ids[t + 1:t + 2])
    x = model.inputs(prefix).detach().requires_grad_(True)
    out, _ = model.rnn(x)
    loss = F.cross_entropy(model.head(out[:, -1]), target)
    result = {"input": float(torch.autograd.grad(loss, x)[0][0, t - k].norm())}
    layers = _single_layers(model)
    s = t - k  # the step whose value becomes a leaf
    for target_layer in range(cfg.layers):
        for what in (("hidden", "cell") if cfg.cell == "lstm" else ("hidden",)):
            inp = x.detach()
            for i, layer in enumerate(layers):
                if i != target_layer:
                    inp, _ = layer(inp)
                    continue
                before, state = layer(inp[:, :s + 1])  # through step s
                if what == "hidden":
                    leaf = before[:, -1].detach().requires_grad_(True)  # [1, H]
                    h_s = leaf
                    carried = (leaf[None], state[1]) if cfg.cell == "lstm" else leaf[None]
                else:  # h_s = o_s * tanh(c_s) depends on the cell: rebuild it from the leaf
                    leaf = state[1][0].detach().requires_grad_(True)
                    with torch.no_grad():  # o_s comes before c_s: it does not depend on the leaf
                        acts, _ = recompute_layer("lstm", layer, inp[0, :s + 1], before[0], None)
                    h_s = acts["gate.output"][-1:] * torch.tanh(leaf)
                    carried = (h_s[None], leaf[None])
                after = layer(inp[:, s + 1:], carried)[0] if k > 0 else inp.new_zeros(1, 0, cfg.size)
                inp = torch.cat([before[:, :-1].detach(), h_s[:, None], after], dim=1)
            loss = F.cross_entropy(model.head(inp[:, -1]), target)
            result[f"layer{target_layer}.{what}"] = float(torch.autograd.grad(loss, leaf)[0].norm())
    return result


@pytest.mark.parametrize("cell,input", [("lstm", "embedding"), ("gru", "embedding"), ("rnn", "embedding"),
                                        ("lstm", "onehot")])
def test_norms_equal_brute_force_autograd(cell, input):
    model = tiny_model(cell, input=input)
    ids = np.random.default_rng(1).integers(0, 7, size=40)
    flow = gradient_flow_ids(model, ids, max_lag=6, positions=5, seed=3)
    expected_series = ["input"] + [f"layer{i}.{w}" for i in range(2)
                                   for w in (("hidden", "cell") if cell == "lstm" else ("hidden",))]
    assert sorted(flow.series) == sorted(expected_series)
    assert flow.lags.tolist() == list(range(7)) and len(flow.positions) == 5
    assert all(6 <= t <= 38 for t in flow.positions) and flow.positions.max() > 20  # windows with a carried state
    for p in (0, 2, 4):
        t = int(flow.positions[p])
        for k in (0, 1, 3, 6):
            want = brute_force(model, ids, t, k)
            got = {s: flow.norms[s][p, k] for s in flow.series}
            assert got == pytest.approx(want, rel=1e-9, abs=1e-14), (t, k)
            assert want["input"] > 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_scale_equals_a_model_with_scaled_recurrent_weights(cell):
    model = tiny_model(cell)
    ids = np.random.default_rng(4).integers(0, 7, size=30)
    flow = gradient_flow_ids(model, ids, max_lag=4, positions=2, weight_scale=1.7)
    scaled = tiny_model(cell)
    with torch.no_grad():
        for i in range(2):
            getattr(scaled.rnn, f"weight_hh_l{i}").mul_(1.7)
    t = int(flow.positions[1])
    want = brute_force(scaled, ids, t, 3)
    assert {s: flow.norms[s][1, 3] for s in flow.series} == pytest.approx(want, rel=1e-9, abs=1e-14)
    assert brute_force(model, ids, t, 3)["input"] != pytest.approx(want["input"], rel=1e-3)  # the original is intact


def test_batches_and_seed():
    model = tiny_model("lstm")
    ids = np.random.default_rng(2).integers(0, 7, size=60)
    whole = gradient_flow_ids(model, ids, max_lag=5, positions=9, seed=4)
    split = gradient_flow_ids(model, ids, max_lag=5, positions=9, seed=4, batch=2)
    for s in whole.series:
        np.testing.assert_allclose(split.norms[s], whole.norms[s], rtol=1e-12)
    other = gradient_flow_ids(model, ids, max_lag=5, positions=9, seed=5)
    assert other.positions.tolist() != whole.positions.tolist()
    every = gradient_flow_ids(model, ids, max_lag=5, positions=1000)  # more than there are: all of them
    assert every.positions.tolist() == list(range(5, 59))


def test_small_recurrent_weights_vanish_and_large_ones_explode():
    """A tanh RNN with char-rnn's small init: the gradient reaching 20 characters back is a tiny
    fraction of the one at lag 0; scale W_hh up and it grows with the distance instead."""
    model = tiny_model("rnn", layers=1, size=32, init="uniform", vocab=7).float()
    ids = np.random.default_rng(0).integers(0, 7, size=300)
    small = gradient_flow_ids(model, ids, max_lag=20, positions=32)
    m = small.mean("layer0.hidden")
    assert m[20] < 1e-6 * m[0]
    assert np.all(np.diff(m[1:]) < 0)  # every step back loses more
    assert small.decay_per_lag("layer0.hidden") < 0.5
    big = gradient_flow_ids(model, ids, max_lag=20, positions=32, weight_scale=20.0)
    b = big.mean("layer0.hidden")
    assert b[20] > 100 * b[1]
    assert big.decay_per_lag("layer0.hidden") > 1.0
    assert model.rnn.weight_hh_l0.abs().max() <= 0.08  # the model itself is left as it was


def test_lstm_forget_gates_near_one_carry_gradients_far():
    """Forget bias 6 (f ~ 0.998) keeps the cell's gradient nearly whole over 30 steps."""
    model = tiny_model("lstm", layers=1, size=8, init="uniform")
    with torch.no_grad():
        model.rnn.bias_ih_l0[8:16] = 6.0
    ids = np.random.default_rng(0).integers(0, 7, size=100)
    flow = gradient_flow_ids(model, ids, max_lag=30, positions=16)
    c = flow.mean("layer0.cell")
    assert c[30] > 0.9 * c[1]


def test_errors():
    model = tiny_model("gru")
    ids = np.zeros(10, dtype=np.int64)
    with pytest.raises(RnnlensError, match="at least 12"):
        gradient_flow_ids(model, ids, max_lag=10)
    for kwargs, name in [({"max_lag": -1}, "--max-lag"), ({"positions": 0}, "--positions"),
                         ({"weight_scale": 0.0}, "--weight-scale"), ({"weight_scale": float("nan")}, "--weight-scale")]:
        with pytest.raises(RnnlensError, match=name):
            gradient_flow_ids(model, ids, **{"max_lag": 2, **kwargs})
    flow = gradient_flow_ids(model, ids, max_lag=2, positions=3)
    with pytest.raises(RnnlensError, match="no gradient series 'layer0.cell'"):
        flow.mean("layer0.cell")


def test_model_label(tmp_path):
    assert model_label(tmp_path / "runs" / "gru" / "best.safetensors") == "gru"
    assert model_label(tmp_path / "my-model.safetensors") == "my-model"
    assert model_label(None) == "model"


# ---------------------------------------------------------------------------------------------
# The API on a trained model and the command line


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradient-runs")
    data = root / "input.txt"
    data.write_text(make_text(300))
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLENS_CACHE", str(root / "cache"))
        for cell in ("lstm", "rnn"):
            rnnlens.train(data=str(data), out=root / cell, model=cell, layers=1, size=16, max_steps=30,
                          batch_size=4, seq_len=20, progress=False)
            out[cell] = root / cell
    out["text"] = data
    return out



def test_api_on_a_trained_model(runs):
    lm = rnnlens.load(runs["lstm"])
    flow = gradient_flow(lm, runs["text"].read_text()[:2000], max_lag=10, positions=8, seed=1)
    assert flow.label == "lstm" and flow.cell == "lstm" and flow.size == 16 and flow.chars == 2000
    assert flow.norms["input"].shape == (8, 11)
    with pytest.raises(RnnlensError, match="not in the vocabulary"):
        gradient_flow(lm, "the cat ~~~ sat. " * 5, max_lag=3)
    flow = gradient_flow(lm, "the cat ~~~ sat. " * 5, max_lag=3, unknown="drop")
    assert flow.chars == len("the cat  sat. ") * 5


def test_cli_gradients_json_and_png(runs, capsys, tmp_path):
    png = tmp_path / "g.png"
    code, out, err = run_cli(capsys, "gradients", runs["lstm"], runs["rnn"], "--text", runs["text"], "--max-lag", 12,
                             "--positions", 6, "--seed", 2, "--weight-scale", 1, 3, "--out", png, "--json")
    assert code == 0, err
    info = json.loads(out)
    models = info["models"]
    assert [(m["label"], m["cell"], m["weight_scale"]) for m in models] == [
        ("lstm", "lstm", 1.0), ("lstm", "lstm", 3.0), ("rnn", "rnn", 1.0), ("rnn", "rnn", 3.0)]
    # the command's numbers are the API's numbers
    lm = rnnlens.load(runs["rnn"])
    flow = gradient_flow(lm, runs["text"].read_text(), max_lag=12, positions=6, seed=2, weight_scale=3.0)
    np.testing.assert_allclose(models[3]["series"]["layer0.hidden"]["mean"], flow.mean("layer0.hidden"), rtol=1e-6)
    assert models[0]["lags"] == list(range(13)) and len(models[0]["positions"]) == 6
    assert info["figure"] == str(png) and png.stat().st_size > 10_000

    code, out, err = run_cli(capsys, "gradients", runs["rnn"], "--text", runs["text"], "--max-lag", 5,
                             "--positions", 4, "--out", tmp_path / "h.png")
    assert code == 0, err
    assert "rnn (RNN 1x16)" in out and "lag" in out and (tmp_path / "h.png").exists()


def test_cli_gradients_errors(runs, capsys, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the cat")
    for args, message in [(("--text", short), "needs at least 102"),
                          (("--text", runs["text"], "--weight-scale", "-1"), "--weight-scale"),
                          (("--text", tmp_path / "missing.txt"), "no such file")]:
        code, _, err = run_cli(capsys, "gradients", runs["rnn"], *args, "--out", tmp_path / "x.png")
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
