"""The import contract of docs/architecture.md: each layer imports only from itself and the layers
above it (core first), counting imports inside functions too. A new module must be given a layer here."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rnnlens"

# layer of each module (dotted name below rnnlens); packages list their prefix with a trailing dot
LAYERS = {
    "core": ["_version", "errors", "fileio", "checks", "names", "corpus", "cache", "datasets", "batches", "model", "recurrence",
             "interventions",
             "trainer", "distributed", "checkpoint", "evaluate", "sample", "plan", "reproducibility",
             "threads"],
    "inspection": ["trace", "predictions", "ngram", "api", "runs", "analysis."],
    "rendering": ["render."],
    "apps": ["report", "explorer.", "grid.", "lstmvis", "demo", "workflows."],
    "cli": ["cli.", "__main__", "__init__"],
}
ORDER = list(LAYERS)


def layer_of(module: str) -> str:
    for layer, names in LAYERS.items():
        for name in names:
            if module == name or (name.endswith(".") and (module + ".").startswith(name)):
                return layer
    raise AssertionError(f"rnnlens.{module} has no layer in tests/test_architecture.py: give it one")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def rnnlens_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rnnlens":  # from rnnlens import x: x is a module, or the root's API
                found |= {alias.name if (SRC / alias.name).with_suffix(".py").exists() or (SRC / alias.name).is_dir()
                          else "__init__" for alias in node.names}
            elif node.module.startswith("rnnlens."):
                found.add(node.module.removeprefix("rnnlens."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "rnnlens":
                    found.add("__init__")
                elif alias.name.startswith("rnnlens."):
                    found.add(alias.name.removeprefix("rnnlens."))
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_each_module_imports_only_from_its_layer_and_above(path):
    module = module_name(path)
    mine = ORDER.index(layer_of(module))
    wrong = sorted(f"rnnlens.{dep} ({layer_of(dep)})" for dep in rnnlens_imports(path)
                   if ORDER.index(layer_of(dep)) > mine)
    assert not wrong, f"rnnlens.{module} ({layer_of(module)}) imports from a later layer: {', '.join(wrong)}"


def test_the_contract_catches_a_renderer_that_computes(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rnnlens.report import build_report\n")
    assert rnnlens_imports(bad) == {"report"}
    assert ORDER.index(layer_of("report")) > ORDER.index(layer_of("render.plots"))
