"""The command line: each command end to end, and every bad input as a one-line error with exit 2."""

import json

import numpy as np
import pytest
from conftest import run_cli, tiny_train_args, train_tiny_cli

TINY = tiny_train_args()


@pytest.fixture
def trained(tmp_path, text_file, capsys):
    return train_tiny_cli(capsys, text_file, tmp_path / "run")


def test_train_sample_eval_commands(trained, capsys, tmp_path):
    code, out, err = run_cli(capsys, "sample", trained, "--prime", "the ", "--length", "40", "--seed", "1",
                             "--num-samples", "2", "--temperature", "0.7")
    assert code == 0 and out.count("the ") >= 2 and "-" * 40 in out
    code2, out2, _ = run_cli(capsys, "sample", trained, "--prime", "the ", "--length", "40", "--seed", "1",
                             "--num-samples", "2", "--temperature", "0.7")
    assert out2 == out  # same seed, same text

    losses = tmp_path / "losses.npy"
    code, out, err = run_cli(capsys, "eval", trained, "--json", "--save-losses", losses)
    assert code == 0, err
    info = json.loads(out)
    assert info["split"] == "test" and info["loss_nats"] > 0
    assert info["bits_per_char"] == pytest.approx(info["loss_nats"] / np.log(2))
    arr = np.load(losses)
    assert arr.shape == (info["chars"],) and arr.mean() == pytest.approx(info["loss_nats"], rel=1e-5)
    code, out, err = run_cli(capsys, "eval", trained, "--split", "val")
    assert code == 0 and "val:" in out and "nats/char" in out and "bits/char" in out


def test_prime_file_and_unknown_policy(trained, capsys, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("the cat XY")
    code, out, err = run_cli(capsys, "sample", trained, "--prime-file", prime, "--length", "5")
    assert code == 2 and "'X'" in err and "'Y'" in err and "--unknown" in err
    code, out, err = run_cli(capsys, "sample", trained, "--prime-file", prime, "--length", "5", "--unknown", "drop")
    assert code == 0 and out.startswith("the cat XY")


def test_params_sizes_the_model(tmp_path, text_file, capsys):
    code, out, err = run_cli(capsys, "train", "--data", text_file, "--model", "gru", "--params", "5k",
                             "--batch-size", "4", "--seq-len", "20", "--max-steps", "2", "--quiet", "--out", tmp_path / "g")
    assert code == 0, err
    meta = json.loads((tmp_path / "g" / "run.json").read_text())
    assert meta["model"]["cell"] == "gru" and abs(meta["parameters"] - 5000) / 5000 < 0.1


def test_data_list(capsys):
    code, out, err = run_cli(capsys, "data", "list")
    assert code == 0
    for name in ("pystdlib", "tinyshakespeare", "warandpeace", "linux"):
        assert name in out


def bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x00\x01\x02" * 100)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf".encode() + b"\xe9 au lait\n" * 50)
    short = tmp_path / "short.txt"
    short.write_text("just a few characters here\n" * 4)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.py").write_text("x = 1\n")
    return [
        (["--data", tmp_path / "missing.txt"], "no file, folder or named corpus"),
        (["--data", empty], "empty"),
        (["--data", binary], "binary"),
        (["--data", latin], "byte offset 3"),
        (["--data", short], "--batch-size"),
        (["--data", folder, "--glob", "*.c"], "match --glob"),
        (["--data", short, "--size", "-3"], "--size must be an integer >= 1"),
        (["--data", short, "--dropout", "1.5"], "--dropout must be a number >= 0.0 and < 1.0"),
        (["--data", short, "--lr", "0"], "--lr must be"),
        (["--data", short, "--split", "0.5,0.6,0.1"], "--split"),
        (["--data", short, "--time-budget", "soon"], "--time-budget"),
    ]


def test_every_bad_training_input_is_one_line_with_exit_2(tmp_path, capsys):
    for args, phrase in bad_inputs(tmp_path):
        code, out, err = run_cli(capsys, "train", *args, "--max-steps", "1", "--batch-size", "50",
                                 "--seq-len", "100", "--quiet", "--out", tmp_path / "r")
        lines = err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], (args, err)
        assert "Traceback" not in err


def test_invalid_utf8_can_go_on_with_replace(tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"caf\xe9 au lait, the cat sat on the mat\n" * 60)
    code, out, err = run_cli(capsys, "train", "--data", latin, "--encoding-errors", "replace", *TINY,
                             "--max-steps", "2", "--out", tmp_path / "r")
    assert code == 0, err


def test_no_stopping_rule_and_refused_run_folder(trained, text_file, capsys):
    code, out, err = run_cli(capsys, "train", "--data", text_file, *TINY, "--out", trained.parent / "x")
    assert code == 2 and "stopping rule" in err
    code, out, err = run_cli(capsys, "train", "--data", text_file, *TINY, "--max-steps", "1", "--out", trained)
    assert code == 2 and "--resume" in err and "--force" in err


def test_bad_checkpoints_from_the_command_line(tmp_path, capsys):
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    for target, phrase in [(tmp_path / "nope", "does not exist"), (tmp_path / "cut.safetensors", "truncated")]:
        for cmd in (["sample"], ["eval"]):
            code, out, err = run_cli(capsys, *cmd, target)
            assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "train", "--resume", tmp_path / "nope")
    assert code == 2 and "no such run folder" in err


def test_resume_refuses_model_changes(trained, capsys):
    code, out, err = run_cli(capsys, "train", "--resume", trained, "--size", "64")
    assert code == 2 and "--size" in err
    code, out, err = run_cli(capsys, "train", "--resume", trained, "--max-steps", "35", "--quiet")
    assert code == 0, err
    assert "reached --max-steps 35" in err


def test_bad_sampling_options(trained, capsys):
    for args, phrase in [(["--temperature", "0"], "--temperature"), (["--top-p", "1.5"], "--top-p"),
                         (["--top-k", "0"], "--top-k"), (["--length", "-1"], "--length"),
                         (["--num-samples", "0"], "--num-samples")]:
        code, out, err = run_cli(capsys, "sample", trained, *args)
        assert code == 2 and phrase in err, (args, err)
