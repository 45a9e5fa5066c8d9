"""Cell numerics, parameter counting and sizing, batch layout."""

import numpy as np
import pytest
import torch

from rnnlens.batches import EvalWindows, StreamBatches
from rnnlens.checks import parse_count
from rnnlens.errors import RnnlensError
from rnnlens.model import CharRNN, ModelConfig, count_parameters, size_for_params
from rnnlens.sample import Stepper, state_to_layers


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_forward(model: CharRNN, ids: np.ndarray) -> np.ndarray:
    """Textbook equations, one step at a time in float64 numpy: hidden states of the top layer [T, H]."""
    cfg = model.cfg
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    x_seq = sd["embed.weight"][ids] if cfg.input == "embedding" else np.eye(cfg.vocab_size)[ids]
    H = cfg.size
    for l in range(cfg.layers):
        w_ih, w_hh = sd[f"rnn.weight_ih_l{l}"], sd[f"rnn.weight_hh_l{l}"]
        b_ih, b_hh = sd[f"rnn.bias_ih_l{l}"], sd[f"rnn.bias_hh_l{l}"]
        h = np.zeros(H)
        c = np.zeros(H)
        out = []
        for x in x_seq:
            gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
            if cfg.cell == "lstm":
                i, f, g, o = np.split(gi + gh, 4)
                c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                h = sigmoid(o) * np.tanh(c)
            elif cfg.cell == "gru":
                r = sigmoid(gi[:H] + gh[:H])
                z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
                n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
                h = (1 - z) * n + z * h
            else:
                h = np.tanh(gi + gh)
            out.append(h)
        x_seq = np.array(out)
    return x_seq


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fused_model_matches_textbook_equations_and_stepper(cell, layers):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=11, cell=cell, layers=layers, size=8, embedding_size=5, dropout=0.0,
                      init="torch", input="onehot" if layers == 2 else "embedding")
    model = CharRNN(cfg).eval()
    ids = np.random.default_rng(0).integers(0, 11, size=30)
    with torch.no_grad():
        out, _ = model.rnn(model.inputs(torch.tensor(ids)[None]), None)
    ref = reference_forward(model, ids)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-5)

    # the sampler's step path gives the same logits as the fused forward, step after step
    with torch.no_grad():
        logits, _ = model(torch.tensor(ids)[None])
        stepper = Stepper(model)
        layers_state = state_to_layers(cell, model.initial_state(1))
        for t, i in enumerate(ids):
            step_logits, layers_state = stepper.step(torch.tensor([i]), layers_state)
            torch.testing.assert_close(step_logits[0], logits[0, t], atol=1e-5, rtol=1e-5)


def test_lstm_init_uniform_and_forget_bias():
    cfg = ModelConfig(vocab_size=7, layers=2, size=6, init="uniform", init_range=0.05, forget_bias=1.0)
    model = CharRNN(cfg)
    w = model.rnn.weight_hh_l1.detach()
    assert float(w.abs().max()) <= 0.05
    b = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach()
    assert torch.all(b[6:12] == 1.0)          # forget gate rows (i, f, g, o layout)
    assert float(b[:6].abs().max()) <= 0.1


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("inp", ["embedding", "onehot"])
def test_parameter_count_formula(cell, inp):
    cfg = ModelConfig(vocab_size=13, cell=cell, layers=3, size=9, input=inp, embedding_size=4)
    assert count_parameters(cfg) == sum(p.numel() for p in CharRNN(cfg).parameters())


def test_size_for_params_matches_budget_across_cells():
    base = dict(vocab_size=65, layers=2)
    lstm = ModelConfig(cell="lstm", size=128, **base)
    budget = count_parameters(lstm)
    assert size_for_params(lstm, budget) == 128
    for cell in ("gru", "rnn"):
        cfg = ModelConfig(cell=cell, **base)
        size = size_for_params(cfg, budget)
        cfg.size = size
        assert abs(count_parameters(cfg) - budget) / budget < 0.02
        assert size > 128  # fewer gates per unit: wider at equal size
    assert parse_count("3.3M") == 3_300_000 and parse_count("250k") == 250_000 and parse_count("1e6") == 1_000_000
    with pytest.raises(RnnlensError, match="--params"):
        parse_count("lots")


@pytest.mark.parametrize("kwargs, flag", [
    ({"size": -4}, "--size"), ({"dropout": 1.0}, "--dropout"), ({"layers": 0}, "--layers"),
    ({"cell": "transformer"}, "--model"), ({"size": 2.5}, "--size"),
])
def test_bad_hyperparameters_name_the_parameter(kwargs, flag):
    with pytest.raises(RnnlensError) as e:
        ModelConfig(vocab_size=10, **kwargs)
    assert flag in str(e.value)


def test_stream_batches_layout_continues_rows():
    data = np.arange(1000, dtype=np.uint16)
    b = StreamBatches(data, batch_size=4, seq_len=10)
    assert b.stream_len == 249 and len(b) == 24
    x0, y0 = b.window(0)
    x1, y1 = b.window(1)
    assert x0.shape == (4, 10) and x0.dtype == torch.int64
    assert torch.equal(y0, x0 + 1)                     # targets are the next character
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)        # row i of window k+1 continues row i of window k
    assert x0[:, 0].tolist() == [0, 249, 498, 747]     # contiguous streams


def test_stream_batches_read_from_file_equal_the_array(tmp_path):
    data = (np.arange(5000) % 300).astype(np.uint16)
    path = tmp_path / "data.bin"
    data.tofile(path)
    part = np.memmap(path, dtype=np.uint16, mode="r")[1000:4000]  # a split that starts mid-file
    from_file = StreamBatches(part, batch_size=7, seq_len=13, file=(path, 1000 * 2))
    in_memory = StreamBatches(np.array(part), batch_size=7, seq_len=13)
    for k in (0, 1, len(in_memory) - 1):
        for a, b in zip(from_file.window(k), in_memory.window(k)):
            assert torch.equal(a, b)


def test_stream_batches_too_short_names_sizes_that_fit():
    with pytest.raises(RnnlensError) as e:
        StreamBatches(np.arange(300), batch_size=50, seq_len=100)
    msg = str(e.value)
    assert "300 characters" in msg and "needs at least 5001" in msg and "--batch-size" in msg


def test_eval_windows_cover_every_target_once_in_order():
    data = np.arange(53)
    w = EvalWindows(data, batch_size=4, seq_len=5)
    ys = torch.cat([w.window(k)[1] for k in range(len(w))], dim=1).reshape(-1)
    ys = ys[ys >= 0]
    assert ys.tolist() == list(range(1, 53))
