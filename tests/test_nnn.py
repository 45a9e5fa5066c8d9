"""The n-NN baseline (cell 'ffn'): locality, carried state, training, sampling, checkpoints, resume,
and the trainer's --snapshot-every."""

import json

import numpy as np
import pytest
import torch
from conftest import make_text, run_cli

import rnnlens
from rnnlens.checkpoint import read_checkpoint
from rnnlens.errors import RnnlensError
from rnnlens.evaluate import evaluate
from rnnlens.model import (
    CharRNN,
    ModelConfig,
    count_parameters,
    detach_state,
    state_from_tensors,
    state_tensors,
)
from rnnlens.predictions import predict
from rnnlens.trainer import TrainConfig, Trainer

FFN = dict(model="ffn", context=4, size=24, embedding_size=8, dropout=0.0, batch_size=4, seq_len=20, lr=1e-2,
           eval_every=10, log_every=5, progress=False)


def ffn(context=4, input="embedding", vocab=9, size=12, seed=0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, cell="ffn", context=context, size=size, embedding_size=5,
                               input=input, dropout=0.0)).eval()


@pytest.mark.parametrize("input", ["embedding", "onehot"])
@pytest.mark.parametrize("context", [1, 4])
def test_shapes_state_and_parameter_count(input, context):
    model = ffn(context, input)
    ids = torch.randint(0, 9, (3, 7))
    logits, state = model(ids)
    assert logits.shape == (3, 7, 9)
    assert state.shape == (3, context - 1) and state.dtype == torch.long
    assert torch.equal(state, ids[:, 7 - (context - 1):])  # the last n-1 ids carried on
    assert count_parameters(model.cfg) == sum(p.numel() for p in model.parameters())
    assert model.rnn is None
    # the start state is the start id (one past the vocabulary), which has its own input row
    assert torch.equal(model.initial_state(2), torch.full((2, context - 1), 9))
    assert model.cfg.input_vocab == 10


def test_output_depends_on_exactly_the_last_n_characters():
    n = 5
    model = ffn(context=n)
    ids = torch.randint(0, 9, (1, 40))
    t = 30  # logits[t] predict character t+1 from ids[t-n+1 .. t]
    base = model(ids)[0][0, t]
    for back in range(1, n + 4):  # the character `back` places before the predicted one, t+1
        changed = ids.clone()
        changed[0, t + 1 - back] = (changed[0, t + 1 - back] + 1) % 9
        out = model(changed)[0][0, t]
        if back <= n:
            assert not torch.allclose(out, base), back
        else:
            assert torch.equal(out, base), back


def test_start_padding_is_the_start_id_not_a_character():
    model = ffn(context=3)
    ids = torch.tensor([[2, 5, 1, 7]])
    assert torch.equal(model(ids)[0], model(ids, model.initial_state(1))[0])
    # a real character in the padding slots changes the first predictions, not the later ones
    other = model(ids, torch.tensor([[0, 0]]))[0]
    assert not torch.allclose(other[0, 0], model(ids)[0][0, 0])
    assert torch.equal(other[0, 2:], model(ids)[0][0, 2:])


def test_carried_state_across_windows_equals_one_long_pass():
    model = ffn(context=6)
    ids = torch.randint(0, 9, (2, 50))
    whole = model(ids)[0]
    parts, state = [], None
    for s in (0, 3, 4, 17, 30):  # windows shorter and longer than the context
        e = {0: 3, 3: 4, 4: 17, 17: 30, 30: 50}[s]
        logits, state = model(ids[:, s:e], state)
        state = detach_state(state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-6)
    # the checkpoint round trip of a carried state: a list of tensors and back
    assert torch.equal(state_from_tensors("ffn", state_tensors(state)), state)


def test_evaluate_with_carried_state_matches_a_single_forward():
    model = ffn(context=4)
    ids = np.random.default_rng(0).integers(0, 9, 61)
    full = torch.log_softmax(model(torch.from_numpy(ids)[None, :-1])[0][0], -1)
    expected = -full[torch.arange(60), torch.from_numpy(ids[1:])].mean()
    got = evaluate(model, ids, batch_size=1, seq_len=7)
    assert got.loss == pytest.approx(float(expected.detach()), abs=1e-5)


def test_config_validation():
    with pytest.raises(RnnlensError, match="--context must be an integer >= 1"):
        ModelConfig(vocab_size=5, cell="ffn", context=0)
    with pytest.raises(RnnlensError, match="one hidden layer.*--layers 2"):
        ModelConfig(vocab_size=5, cell="ffn", layers=2)
    assert ModelConfig.from_dict({"vocab_size": 5, "cell": "lstm"}).context == 20  # older checkpoints


def test_train_lowers_the_loss_samples_and_round_trips(tmp_path, text_file):
    lm = rnnlens.train(data=str(text_file), out=tmp_path / "run", max_steps=60, seed=1, **FFN)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r["train_loss"] for r in rows if "train_loss" in r]
    assert train[-1] < train[0] - 0.5, train
    assert lm.evaluate(split="test").loss < 2.0  # uniform over ~20 characters would be 3.0
    assert lm.config.cell == "ffn" and lm.config.context == 4

    # sampling: argmax steps agree with the full forward over the growing text
    greedy = lm.sample(20, prime="the ", argmax=True)
    text = "the "
    for ch in greedy:
        ids = lm.encode(text)[None]
        expected = lm.vocab.chars[int(lm.model(ids)[0][0, -1].argmax())]
        assert ch == expected
        text += ch
    a = lm.sample(60, prime="the", seed=3)
    assert a == lm.sample(60, prime="the", seed=3) and set(a) <= set(lm.vocab.chars) and len(a) == 60

    # checkpoint round trip: the file's weights rebuild a model that computes the same logits
    ckpt = read_checkpoint(tmp_path / "run" / "best.safetensors")
    again = ckpt.build_model().eval()
    ids = lm.encode(make_text(5))[None]
    assert torch.equal(again(ids)[0], lm.model(ids)[0])
    assert ckpt.config == lm.config and ckpt.config.context == 4
    last = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert last.group("state")["0"].dtype == torch.long  # the carried last ids, saved for resuming
    assert last.group("state")["0"].shape == (4, 3)        # [B, n-1]

    # traces: probs, loss and the hidden layer; probs equal the forward's softmax
    text = make_text(3)
    trace = lm.trace(text)
    assert sorted(trace.names()) == ["layer0.hidden", "loss", "probs"]
    assert trace["layer0.hidden"].shape == (len(text), 24)
    probs = torch.softmax(lm.model(lm.encode(text)[None])[0][0], -1).detach().numpy()
    assert np.allclose(trace["probs"], probs, atol=1e-6)
    pred = predict(lm, text)
    assert pred.loss == pytest.approx(float(np.nanmean(trace["loss"])), rel=1e-5)
    chunked = lm.trace(text, chunk=7)  # chunks carry the last ids like windows do
    assert np.allclose(chunked["probs"], trace["probs"], atol=1e-6)


def test_resume_gives_the_same_weights_as_one_run(tmp_path, text_file):
    opts = {k: v for k, v in FFN.items() if k != "progress"}
    model_keys = ("model", "context", "size", "embedding_size", "dropout")
    model_kwargs = {("cell" if k == "model" else k): opts.pop(k) for k in model_keys}
    model_kwargs["dropout"] = 0.1  # dropout draws from the RNG, which resuming must restore too
    # a constant rate: a cosine schedule would depend on max_steps, which differs between the two halves
    cfg = TrainConfig(data=str(text_file), max_steps=30, checkpoint_every=5, lr_schedule="constant", **opts)
    full = Trainer.start(tmp_path / "full", cfg=cfg, progress=False, **model_kwargs)
    full.run()
    half = Trainer.start(tmp_path / "half", cfg=TrainConfig(**{**cfg.to_dict(), "max_steps": 17}), progress=False,
                         **model_kwargs)
    half.run()
    resumed = Trainer.resume(tmp_path / "half", overrides={"max_steps": 30}, progress=False)
    assert resumed.hidden is not None and resumed.hidden.dtype == torch.long
    resumed.run()
    a = read_checkpoint(tmp_path / "full" / "last.safetensors").model_state()
    b = read_checkpoint(tmp_path / "half" / "last.safetensors").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_snapshots_every_n_steps(tmp_path, text_file):
    run = tmp_path / "run"
    rnnlens.train(data=str(text_file), out=run, max_steps=25, snapshot_every=10, **FFN)
    names = sorted(p.name for p in (run / "snapshots").iterdir())
    assert names == ["step-000000.safetensors", "step-000010.safetensors", "step-000020.safetensors",
                     "step-000025.safetensors"]  # the start, every 10 steps, and the final weights
    snap = read_checkpoint(run / "snapshots" / "step-000010.safetensors")
    assert snap.meta["kind"] == "snapshot" and snap.meta["step"] == 10 and snap.meta["elapsed_s"] > 0
    assert not snap.group("optim") and not snap.group("state")  # weights and metadata only
    final = read_checkpoint(run / "snapshots" / "step-000025.safetensors").model_state()
    last = read_checkpoint(run / "last.safetensors").model_state()
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert rnnlens.load(run / "snapshots" / "step-000000.safetensors").config.cell == "ffn"
    # --force starts a new history
    rnnlens.train(data=str(text_file), out=run, max_steps=5, snapshot_every=10, force=True, **FFN)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step-000000.safetensors",
                                                                     "step-000005.safetensors"]
    with pytest.raises(RnnlensError, match="--snapshot-every must be an integer >= 1"):
        TrainConfig(snapshot_every=0)


def test_cli_train_ffn_and_errors(tmp_path, text_file, capsys):
    code, out, err = run_cli(capsys, "train", "--data", text_file, "--model", "ffn", "--context", 3, "--size", 16,
                             "--max-steps", 5, "--batch-size", 4, "--seq-len", 20, "--out", tmp_path / "r",
                             "--quiet", "--snapshot-every", 2)
    assert code == 0, err
    assert "16-unit n-NN (ffn, context 3)" in err
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["model"]["cell"] == "ffn" and info["model"]["context"] == 3 and info["train"]["snapshot_every"] == 2
    assert len(list((tmp_path / "r" / "snapshots").iterdir())) == 4  # steps 0, 2, 4, 5

    code, _, err = run_cli(capsys, "train", "--data", text_file, "--model", "lstm", "--context", 3,
                           "--max-steps", 5, "--out", tmp_path / "x")
    assert code == 2 and "--context" in err and "--model ffn" in err
    code, _, err = run_cli(capsys, "train", "--data", text_file, "--model", "ffn", "--layers", 2,
                           "--max-steps", 5, "--out", tmp_path / "y")
    assert code == 2 and "one hidden layer" in err

    # analyses that need gates or recurrence say so in one line; those on hidden units work
    for command in (["saturation", "--out", tmp_path / "o"], ["timescales", "--out", tmp_path / "o"],
                    ["gradients", "--out", tmp_path / "g.png"]):
        code, _, err = run_cli(capsys, command[0], tmp_path / "r", "--text", text_file, *command[1:])
        assert code == 2 and "n-NN" in err and "Traceback" not in err, err
    code, _, err = run_cli(capsys, "viz", tmp_path / "r", "--text", text_file, "--unit", "0:1", "--what", "cell")
    assert code == 2 and "choose from hidden" in err
    code, out, err = run_cli(capsys, "cells", tmp_path / "r", "--text", text_file, "--features", "word_position")
    assert code == 0 and "0:" in out and "hidden" in out
    code, out, err = run_cli(capsys, "sample", tmp_path / "r", "--length", 30, "--seed", 1, "--prime", "the")
    assert code == 0 and len(out) == len("the") + 30 + 1
