"""The tracer: recomputed activations equal what the fused kernels computed, for every cell and depth."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

import rnnlens
from rnnlens.errors import RnnlensError
from rnnlens.model import CharRNN, ModelConfig
from rnnlens.trace import Trace, activation_names, linear_scan, parse_unit, trace_ids

CHARS = [chr(c) for c in range(32, 96)]


def random_model(cell, layers, size=24, input="embedding", seed=0):
    torch.manual_seed(seed)
    # torch's default init has larger weights than char-rnn's, so the gates actually move
    return CharRNN(ModelConfig(vocab_size=len(CHARS), cell=cell, layers=layers, size=size, init="torch",
                               input=input, dropout=0.3)).eval()


def random_ids(n, seed=1):
    return np.random.default_rng(seed).integers(0, len(CHARS), n)


def fused_layer_outputs(model, ids):
    """Each layer's outputs from the fused stack itself, layer by layer through nn.LSTM/GRU/RNN's own
    multi-layer call: feed the stack truncated to i+1 layers (same weights)."""
    outs = []
    x = model.inputs(torch.from_numpy(ids)[None])
    with torch.no_grad():
        for i in range(model.cfg.layers):
            rnn = type(model.rnn)(x.shape[-1], model.cfg.size, num_layers=i + 1, batch_first=True)
            rnn.load_state_dict({k: v for k, v in model.rnn.state_dict().items() if int(k[-1]) <= i})
            outs.append(rnn.eval()(x)[0][0].numpy())
    return outs


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_recomputed_hidden_states_equal_the_fused_outputs(cell, layers):
    model, ids = random_model(cell, layers), random_ids(1500)
    trace = trace_ids(model, ids, CHARS, chunk=400)  # chunks of 400: the state is carried 3 times
    assert trace.names() == activation_names(cell, layers)
    assert trace.max_recompute_error <= 1e-5
    for i, fused in enumerate(fused_layer_outputs(model, ids)):
        h = trace[f"layer{i}.hidden"]
        assert h.shape == (1500, 24) and h.dtype == np.float32
        assert np.abs(h - fused).max() <= 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
def test_checking_every_kth_row_and_keeping_some_names_changes_no_value(cell, input):
    model, ids = random_model(cell, 2, input=input), random_ids(1000)
    every = trace_ids(model, ids, CHARS, chunk=300)
    for names in [[f"layer{i}.hidden" for i in range(2)], [n for n in every.names() if "cell" in n or "hidden" in n]]:
        sparse = trace_ids(model, ids, CHARS, names=names, chunk=300, check_every=16)
        assert sparse.names() == names and sparse.max_recompute_error <= 1e-5
        for name in names:
            np.testing.assert_allclose(sparse[name], every[name], atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_identities_hold_across_chunk_boundaries(layers):
    model, ids = random_model("lstm", layers, seed=3), random_ids(1000, seed=4)
    trace = trace_ids(model, ids, CHARS, chunk=128)
    for i in range(layers):
        f, g = trace[f"layer{i}.gate.forget"], trace[f"layer{i}.gate.candidate"]
        inp, o = trace[f"layer{i}.gate.input"], trace[f"layer{i}.gate.output"]
        c, h = trace[f"layer{i}.cell"], trace[f"layer{i}.hidden"]
        c_prev = np.vstack([np.zeros((1, 24), np.float32), c[:-1]])
        assert np.abs(c - (f * c_prev + inp * g)).max() <= 1e-5
        assert np.abs(h - o * np.tanh(c)).max() <= 1e-5
        assert 0 < f.min() and f.max() < 1 and -1 < g.min() < 0 < g.max() < 1
    assert np.abs(trace["layer0.cell"]).max() > 1.0  # cells leave (-1, 1): a scan that clipped would show


def test_gru_identity_and_gate_ranges():
    model, ids = random_model("gru", 2, seed=5), random_ids(600)
    trace = trace_ids(model, ids, CHARS, chunk=97)
    for i in range(2):
        r, z, n = (trace[f"layer{i}.gate.{g}"] for g in ("reset", "update", "candidate"))
        h = trace[f"layer{i}.hidden"]
        h_prev = np.vstack([np.zeros((1, 24), np.float32), h[:-1]])
        assert np.abs(h - ((1 - z) * n + z * h_prev)).max() <= 1e-5
        assert 0 < r.min() and r.max() < 1 and 0 < z.min() and z.max() < 1


def test_chunking_does_not_change_the_trace():
    model, ids = random_model("lstm", 2), random_ids(900)
    whole = trace_ids(model, ids, CHARS, chunk=10_000)
    chunked = trace_ids(model, ids, CHARS, chunk=64)
    for name in whole.names():
        np.testing.assert_allclose(chunked[name], whole[name], atol=1e-5, rtol=0)


def test_the_pipelined_trace_writes_into_given_arrays_and_keeps_each_chunks_state(monkeypatch):
    import threading

    import rnnlens.trace as trace_module
    model, ids = random_model("lstm", 2), random_ids(1000)
    whole = trace_ids(model, ids, CHARS, chunk=10_000)  # one chunk: nothing to pipeline
    threads, recompute_layer = set(), trace_module.recompute_layer

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return recompute_layer(*args, **kwargs)
    monkeypatch.setattr(trace_module, "recompute_layer", spy)
    monkeypatch.setattr(trace_module, "available_cores", lambda: 2)  # two cores, whatever this machine has
    names = ["layer0.cell", "layer1.hidden", "loss"]
    into = {n: np.zeros((900,) if n == "loss" else (900, 24), np.float32 if n == "loss" else np.float16)
            for n in names}
    part = trace_ids(model, ids[:900], CHARS, names=names, chunk=128, into=into, next_id=ids[900])
    assert {t.split("_")[0] for t in threads} == {"rnnlens-trace"}  # every recomputation ran beside the fused pass
    for name in names:
        assert np.shares_memory(part[name], into[name])
        np.testing.assert_allclose(into[name].astype(np.float32), whole[name][:900], rtol=2 ** -10, atol=1e-5,
                                   err_msg=name)
    assert not np.isnan(into["loss"]).any()  # the last row predicted the next_id
    assert len(part.chunk_states) == 8 and part.chunk_states[-1] is part.final_state
    rest = trace_ids(model, ids[512:], CHARS, names=names, initial_state=part.chunk_states[3])  # after 4 x 128
    for name in names:
        np.testing.assert_allclose(rest[name], whole[name][512:], atol=1e-5, rtol=0, err_msg=name)
    with pytest.raises(RnnlensError, match="into= needs an array of at least 900 rows for each of loss"):
        trace_ids(model, ids[:900], CHARS, names=names, into={**into, "loss": into["loss"][:10]})


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "ffn"])
def test_a_trace_resumed_from_a_final_state_equals_the_whole_trace(cell):
    model = random_model(cell, 2) if cell != "ffn" else CharRNN(ModelConfig(
        vocab_size=len(CHARS), cell="ffn", layers=1, size=24, context=4)).eval()
    ids = random_ids(1300)
    whole = trace_ids(model, ids, CHARS, chunk=500)
    first = trace_ids(model, ids[:700], CHARS, chunk=500)
    rest = trace_ids(model, ids[700:], CHARS, chunk=500, initial_state=first.final_state)
    for name in whole.names():
        joined = np.concatenate([first[name], rest[name]])
        if name == "loss":  # the first piece does not know the character after it
            joined[699] = whole["loss"][699]
        np.testing.assert_allclose(joined, whole[name], atol=1e-5, rtol=0)
    with pytest.raises(RnnlensError, match="initial_state"):
        trace_ids(model, ids[:10], CHARS, initial_state="zeros")


def test_probs_and_loss_match_the_model_and_the_evaluator():
    model, ids = random_model("lstm", 2, input="onehot"), random_ids(700)
    trace = trace_ids(model, ids, CHARS, chunk=300)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids)[None])
    probs = torch.softmax(logits[0], -1).numpy()
    assert trace["probs"].shape == (700, len(CHARS))
    np.testing.assert_allclose(trace["probs"], probs, atol=1e-6)
    np.testing.assert_allclose(trace["probs"].sum(1), 1.0, atol=1e-5)
    expected = -np.log(probs[np.arange(699), ids[1:]])
    np.testing.assert_allclose(trace["loss"][:-1], expected, rtol=1e-5)
    assert math.isnan(trace["loss"][-1])
    from rnnlens.evaluate import evaluate
    assert np.nanmean(trace["loss"]) == pytest.approx(evaluate(model, ids, batch_size=1, seq_len=50).loss, rel=1e-5)


def test_linear_scan_equals_the_sequential_recurrence():
    gen = torch.Generator().manual_seed(0)
    for n, block in [(1, None), (7, None), (1000, None), (1000, 33), (1001, 1000)]:
        a, b, c0 = torch.rand(n, 5, generator=gen), torch.randn(n, 5, generator=gen), torch.randn(5, generator=gen)
        c = linear_scan(a, b, c0, block=block)
        state, ref = c0, []
        for t in range(n):
            state = a[t] * state + b[t]
            ref.append(state)
        assert c.shape == (n, 5)
        assert (c - torch.stack(ref)).abs().max() <= 1e-5


def test_names_subset_float16_and_file_round_trip(tmp_path):
    model, ids = random_model("lstm", 2), random_ids(500)
    full = trace_ids(model, ids, CHARS)
    path = tmp_path / "t.safetensors"
    part = trace_ids(model, ids, CHARS, names=["layer1.cell", "loss"], float16=True, out=path, chunk=128)
    assert part.names() == ["layer1.cell", "loss"] and part.path == path
    assert part["layer1.cell"].dtype == np.float16 and part["loss"].dtype == np.float32
    assert isinstance(part["layer1.cell"], np.memmap)
    np.testing.assert_allclose(part["layer1.cell"], full["layer1.cell"], atol=2e-3)
    assert part.text == "".join(CHARS[i] for i in ids)
    # other safetensors readers see the same arrays; nothing in the file is code
    with safe_open(str(path), "np") as f:
        assert set(f.keys()) == {"ids", "layer1.cell", "loss"}
        np.testing.assert_array_equal(f.get_tensor("ids"), ids)
        info = json.loads(f.metadata()["rnnlens.trace"])
    assert info["cell"] == "lstm" and info["layers"] == 2 and info["chars"] == CHARS
    again = Trace.load(path)
    np.testing.assert_array_equal(again["loss"], part["loss"])
    saved = full.save(tmp_path / "full.safetensors")
    assert saved.names() == full.names()
    np.testing.assert_array_equal(saved["layer0.gate.input"], full["layer0.gate.input"])
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp file left behind


def test_errors_name_the_problem(tmp_path):
    model = random_model("gru", 1)
    with pytest.raises(RnnlensError, match="has no layer0.cell"):
        trace_ids(model, random_ids(10), CHARS, names=["layer0.cell"])
    with pytest.raises(RnnlensError, match="empty"):
        trace_ids(model, np.array([], np.int64), CHARS)
    trace = trace_ids(model, random_ids(10), CHARS)
    with pytest.raises(RnnlensError, match="no 'layer3.hidden'"):
        trace["layer3.hidden"]
    with pytest.raises(RnnlensError, match="units 0..23"):
        trace.unit("layer0.hidden", 24)
    assert parse_unit("0:5", 2, 24) == (0, 5)
    for spec, msg in [("5", "LAYER:INDEX"), ("2:1", "layers 0..1"), ("0:24", "units 0..23")]:
        with pytest.raises(RnnlensError, match=msg):
            parse_unit(spec, 2, 24)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(RnnlensError, match="not a trace file"):
        Trace.load(bad)
    with pytest.raises(RnnlensError, match="no such trace file"):
        Trace.load(tmp_path / "missing.safetensors")


def test_api_and_cli_trace_a_trained_model(tmp_path, text_file):
    run = tmp_path / "run"
    rnnlens.train(data=str(text_file), out=run, layers=2, size=16, max_steps=20, batch_size=4, seq_len=20,
                  progress=False)
    lm = rnnlens.load(run)
    trace = lm.trace("the cat sat.\n")
    assert len(trace) == 13 and trace["layer1.cell"].shape == (13, 16)
    with pytest.raises(RnnlensError, match="not in the vocabulary"):
        lm.trace("the cat sat Z")
    assert lm.trace("the cat sat Z", unknown="drop").text == "the cat sat "
    assert lm.trace("the cat Zat", unknown="replace", replacement="s").text == "the cat sat"

    text = tmp_path / "in.txt"
    text.write_text("the dog ran to a red box.\n")
    out = tmp_path / "t.safetensors"
    cmd = [sys.executable, "-m", "rnnlens", "trace", str(run), "--text", str(text), "--out", str(out),
           "--names", "layer0.hidden,probs", "--float16"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    saved = rnnlens.load_trace(out)
    assert saved.names() == ["layer0.hidden", "probs"] and len(saved) == 26
    np.testing.assert_allclose(saved["probs"], lm.trace(text.read_text())["probs"], atol=1e-3)

    text.write_text("QQQ")
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not in the vocabulary" in done.stderr


def test_the_trace_runs_on_one_thread_and_restores_the_setting():
    """Batch 1 on a busy machine: a second thread's barrier made the fused kernel 10-100x slower (issue #18).
    The trace (and the explorer's document, which calls it) runs on one thread and leaves torch's setting."""
    from rnnlens.interventions import Hook
    model, ids = random_model("lstm", 2), random_ids(300)
    seen = []
    hook = Hook(lambda name, value, t: seen.append(torch.get_num_threads()), "layer1.cell")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trace = trace_ids(model, ids, CHARS, interventions=[hook])
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        same = trace_ids(model, ids, CHARS, interventions=[hook], threads=None)  # torch's setting, as asked
        assert set(seen) == {2}
        np.testing.assert_allclose(trace["layer0.cell"], same["layer0.cell"], atol=1e-5, rtol=0)
    finally:
        torch.set_num_threads(before)
