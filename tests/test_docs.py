"""The README's Python example runs as written (with fewer steps)."""

import re
from pathlib import Path

from conftest import make_text

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    code = blocks[0].replace("max_steps=300", "max_steps=12").replace("max_steps=600", "max_steps=20")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text("The end.\n" + make_text(300))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "LanguageModel(lstm 1x128" in out
    assert (tmp_path / "runs" / "demo" / "last.safetensors").exists()
