"""The README's Python examples run as written (with fewer steps)."""

import re
from pathlib import Path

from conftest import make_text

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2, "README.md should have the API example and the inspection example"
    code = "\n".join(blocks).replace("max_steps=300", "max_steps=12").replace("max_steps=600", "max_steps=20")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text("The end.\n" + make_text(300))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "LanguageModel(lstm 1x128" in out
    assert "'layer0.gate.forget'" in out and "(24, 128)" in out
    assert (tmp_path / "runs" / "demo" / "last.safetensors").exists()
    assert "layer 0 \u00b7 unit 42" in (tmp_path / "unit.html").read_text()
