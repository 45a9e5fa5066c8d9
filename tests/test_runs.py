"""A run folder works from anywhere: its corpus is found by content hash, by the absolute path it stored, or
through a --data the user gives (checked against the hash); resuming can extend a run."""

import json
import shutil

import pytest
from conftest import make_text, run_cli

import rnnlens
import rnnlens.ngram
from rnnlens.checkpoint import read_checkpoint

TINY = ["--size", "8", "--batch-size", "4", "--seq-len", "16", "--quiet"]


@pytest.fixture
def moved_run(tmp_path, capsys, monkeypatch):
    """`rnnlens train --data input.txt` typed in work/, the run then used from another folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text(make_text(200))
    monkeypatch.chdir(work)
    code, _, err = run_cli(capsys, "train", "--data", "input.txt", "--max-steps", "6", "--out", "runs/lstm", *TINY)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    return tmp_path, work / "runs" / "lstm"


def test_a_run_stores_its_texts_absolute_path_and_evaluates_from_another_folder(moved_run, capsys):
    root, run = moved_run
    meta = read_checkpoint(run / "last.safetensors").meta
    assert meta["train"]["data"] == str(root / "work" / "input.txt")
    code, out, err = run_cli(capsys, "eval", run, "--json")
    assert code == 0, err
    assert json.loads(out)["chars"] > 0
    code, _, err = run_cli(capsys, "report", run, "--out", root / "r.html", "--ngram-order", "2")
    assert code == 0, err


def test_a_moved_run_finds_its_text_by_hash_or_through_data(moved_run, capsys, private_cache):
    root, run = moved_run
    elsewhere = root / "copy" / "lstm"
    shutil.copytree(run, elsewhere)  # the folder moved to another machine: no cache, no text at the old path
    shutil.rmtree(private_cache)
    (root / "work" / "input.txt").rename(root / "moved.txt")
    code, _, err = run_cli(capsys, "eval", elsewhere)
    assert code == 2 and err.count("\n") == 1
    assert "was trained on" in err and "give that text with --data" in err
    code, out, err = run_cli(capsys, "train", "--resume", elsewhere, "--data", root / "moved.txt", "--max-steps", "9",
                             "--quiet")
    assert code == 0, err
    assert "step 9" in err
    code, out, err = run_cli(capsys, "eval", elsewhere)  # resuming prepared it again: found by hash from now on
    assert code == 0, err
    (root / "other.txt").write_text(make_text(200, seed=5))
    shutil.rmtree(private_cache)
    code, _, err = run_cli(capsys, "train", "--resume", elsewhere, "--data", root / "other.txt", "--max-steps", "12")
    assert code == 2 and "is not the text" in err and "content hash differs" in err


def test_resume_extends_a_run_with_a_new_stopping_rule(moved_run, capsys):
    root, run = moved_run
    code, _, err = run_cli(capsys, "train", "--resume", run, "--max-steps", "10", "--quiet")
    assert code == 0, err
    assert "reached --max-steps 10 at step 10" in err
    assert "not bit-identical" in err and "wsd" in err  # the default schedule depends on the end
    code, _, err = run_cli(capsys, "train", "--resume", run, "--max-epochs", "100", "--max-steps", "13", "--quiet")
    assert code == 0 and "at step 13" in err


def test_eval_scores_a_whole_file_with_split_fractions_0_0_1(moved_run, capsys):
    root, run = moved_run
    (root / "held.txt").write_text(make_text(30, seed=9))
    n = len((root / "held.txt").read_text())
    for model in (run,):
        code, out, err = run_cli(capsys, "eval", model, "--data", root / "held.txt", "--split-fractions", "0,0,1",
                                 "--json")
        assert code == 0, err
        assert json.loads(out)["chars"] == n - 1
    ngram = rnnlens.ngram.train_ngram(str(root / "work" / "input.txt"), 3, root / "ng3")
    assert ngram.order == 3
    code, out, err = run_cli(capsys, "eval", root / "ng3", "--data", root / "held.txt", "--split-fractions", "0,0,1",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["chars"] == n - 1


def test_python_api_resume_and_module_names(moved_run):
    root, run = moved_run
    lm = rnnlens.resume(run, max_steps=8, progress=False)
    assert read_checkpoint(run / "last.safetensors").meta["state"]["step"] == 8 and lm.kind == "rnn"
    from rnnlens import trainer  # the lower-level pieces live in a module of another name than the function
    assert callable(rnnlens.train) and trainer.Trainer.__name__ == "Trainer"
    assert trainer.TrainConfig().batch_size == 16
