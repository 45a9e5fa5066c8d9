"""Plausible mistakes on the command line: each gives exactly one line on stderr, `error: ...`, exit
status 2, no traceback, and leaves no run folder behind."""

import sys

import pytest
from conftest import make_text, train_tiny_runs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    runs = train_tiny_runs(root, ["lstm"])
    (root / "empty.txt").write_text("")
    (root / "short.txt").write_text("tiny text\n")
    (root / "binary.bin").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    (root / "act1.txt").write_text(make_text(50))
    corrupt = root / "corrupt"
    corrupt.mkdir()
    good = (runs["lstm"] / "best.safetensors").read_bytes()
    (corrupt / "best.safetensors").write_bytes(good[: len(good) // 3])
    from rnnlens.ngram import train_ngram
    train_ngram(str(runs["text"]), 3, root / "ng3")
    return root


def cli(world, capsys, monkeypatch, *args):
    """Run `rnnlens ARGS` in `world` as a user would: (exit status, stdout, stderr)."""
    from rnnlens.cli import main
    monkeypatch.chdir(world)
    monkeypatch.setenv("RNNLENS_CACHE", str(world / "cache"))
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


TRAIN = ["train", "--size", "8", "--max-steps", "2", "--batch-size", "2", "--seq-len", "8", "--quiet"]

MISTAKES = [
    (TRAIN + ["--data", "missing.txt", "--out", "runs/new"], "no file, folder or named corpus called 'missing.txt'"),
    (TRAIN + ["--data", "empty.txt", "--out", "runs/new"], "is empty"),
    (TRAIN + ["--data", "binary.bin", "--out", "runs/new"], "binary"),
    (TRAIN + ["--data", "latin1.txt", "--out", "runs/new"], "not valid UTF-8"),
    (["train", "--data", "short.txt", "--max-steps", "2", "--out", "runs/new"], "needs at least"),
    (TRAIN + ["--data", "act1.txt", "--device", "cuda", "--out", "runs/new"], "cuda"),
    (TRAIN + ["--data", "act1.txt", "--nproc", "2", "--batch-size", "3", "--out", "runs/new"],
     "--batch-size 3 does not split over --nproc 2"),
    (["train", "--data", "act1.txt", "--out", "runs/new"], "give a stopping rule"),
    (TRAIN + ["--data", "act1.txt", "--split", "0,0.5,0.5", "--out", "runs/new"], "train fraction above 0"),
    (TRAIN + ["--data", "act1.txt", "--siz", "3", "--out", "runs/new"], "unrecognized arguments: --siz 3"),
    (TRAIN + ["--data", "act1.txt", "--size", "32", "--params", "1k", "--out", "runs/new"], "either --size or --params"),
    (["train", "--resume", "lstm", "--layers", "2"], "drop --layers"),
    (["grid", "--size", "32", "--dry-run"], "unrecognized arguments: --size 32"),
    (["eval", "act1.txt"], "act1.txt is a .txt file, not a run"),
    (["eval", "nowhere"], "run nowhere does not exist"),
    (["eval", "corrupt"], "truncated or corrupt"),
    (["eval", "ng3", "--split", "dev"], "invalid choice: 'dev'"),
    (["eval", "lstm", "--data", "act1.txt", "--split-fractions", "0,0"], "--split-fractions fractions must sum to 1"),
    (["sample", "lstm", "--length", "0"], "--length must be an integer >= 1"),
    (["sample", "lstm", "--prime", "Z\u00e9"], "not in the vocabulary"),
    (["sample", "ng3"], "is an n-gram model; sampling needs an RNN run"),
    (["serve", "lstm", "ng3", "--port", "0"], "is an n-gram model; the explorer needs an RNN run"),
    (["cells", "lstm", "--text", "missing.txt"], "missing.txt"),
    (["report", "lstm", "--out", "report.txt"], "must end in .html"),
    (["saturation", "lstm", "--text", "act1.txt", "--low", "0.9", "--high", "0.1"], "--low"),
]


@pytest.mark.parametrize("args, message", MISTAKES, ids=[" ".join(a[:3]) + f" [{i}]" for i, (a, _) in
                                                           enumerate(MISTAKES)])
def test_a_mistake_is_one_line_and_leaves_nothing_behind(world, capsys, monkeypatch, args, message):
    if "--tensorboard" in args:
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code, out, err = cli(world, capsys, monkeypatch, *args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err and out == ""
    assert not (world / "runs" / "new").exists()


def test_tensorboard_without_the_package_fails_before_the_run_folder(world, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    code, _, err = cli(world, capsys, monkeypatch, *TRAIN, "--data", "act1.txt", "--tensorboard", "--out", "runs/tb")
    assert code == 2 and err.count("\n") == 1 and "pip install 'rnnlens[tensorboard]'" in err
    assert not (world / "runs" / "tb").exists()


@pytest.mark.parametrize("module, args, pip", [
    ("fastapi", ["serve", "lstm", "--port", "0"], "pip install 'rnnlens[serve]'"),
    ("h5py", ["export-lstmvis", "lstm", "--text", "act1.txt", "--out", "lv"], "pip install 'rnnlens[lstmvis]'"),
])
def test_a_missing_extra_is_one_line_naming_the_pip_command(world, capsys, monkeypatch, module, args, pip):
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    code, _, err = cli(world, capsys, monkeypatch, *args)
    assert code == 2 and err.count("\n") == 1 and pip in err and f"needs the {module} package" in err
