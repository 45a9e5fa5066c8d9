"""The Python example of docs/dynamics.md runs as written, on a tiny model trained here."""

import re
from pathlib import Path

from conftest import make_text

import rnnlens

DOC = Path(__file__).resolve().parents[1] / "docs" / "dynamics.md"


def test_dynamics_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text(make_text(300))
    rnnlens.train(data="input.txt", out="runs/demo", layers=1, size=16, max_steps=10, batch_size=4, seq_len=20,
                  progress=False)
    exec(compile(blocks[0], "docs/dynamics.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'gate': 'forget'" in out and "mean_left" in out
    for figure in ("saturation.png", "timescales.png", "gradients.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
