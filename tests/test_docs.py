"""Every command line and Python snippet in README.md and docs/*.md runs here, scaled down.

The convention, for whoever writes docs
---------------------------------------
* A fenced block with the info string ``bash`` (or ``sh``/``shell``/``console``) holds command
  lines; one with ``python`` holds Python. Both RUN in this test: the blocks of one document run
  in order, in one temporary folder, so later blocks use the runs and files earlier ones made.
  Python blocks of one document share one namespace. Command lines run in this process through
  ``rnnlens.cli.main(shlex.split(line))`` (``rnnlens ...``, ``python -m rnnlens ...``; ``python -c
  CODE`` is exec'd) and must exit 0; ``> FILE`` redirects stdout to FILE; ``#`` starts a comment
  and a trailing backslash continues the line.
* A block that cannot run here (it downloads, blocks, needs several machines, is a benchmark that
  takes minutes, or is a synopsis with placeholders) is marked IN THE DOC by an HTML comment on the
  line right before its fence, with the reason::

      <!-- not run: downloads a corpus -->

  The reason is required. Everything after ``not run:`` up to ``-->`` is the reason.
* Any other fence (``json``, ``text``, none) is output or an example, and is not run; but such a
  block, or an indented code block, that holds a line that looks like a command (``rnnlens X``,
  ``python``, ``torchrun``, ``pip``, ``make``, ``curl``) or ``import rnnlens`` fails this test:
  put it in a ``bash``/``python`` block, runnable or marked.

Scaling down: every document gets COMMON substitutions (regular expressions: any size becomes 16,
any time budget or epoch count a few steps, named corpora a local text, ...) and, in DOCS, its own
table of exact (old, new) replacements, each of which must still match its document (a stale
entry fails). DOCS also names the prebuilt runs (ZOO) a document uses but does not make itself;
each is trained once per session, tiny, and copied into the document's folder. The texts a
document reads (input.txt, act1.txt, test.txt, ...) are written there from one generator whose
characters every prebuilt run knows.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_text

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]

RUN_LANGS = {"bash", "sh", "shell", "console", "python"}
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->\s*$")
LOOKS_LIKE_CODE = re.compile(r"^\s*(\$ )?(rnnlens [a-z]|python3? |torchrun |pip |make |curl |import rnnlens)")


@dataclass
class Block:
    doc: str
    line: int       # 1-based line of the opening fence (or of the indented block)
    lang: str
    body: str
    not_run: str | None   # the reason, when marked


def extract(doc: str, text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a markdown text, and the problems found (unmarked code outside runnable fences)."""
    blocks, problems = [], []
    lines = text.split("\n")
    i = 0
    prev_blank = True
    while i < len(lines):
        m = re.match(r"^(\s*)```(.*)$", lines[i])
        if m:
            indent, info = len(m.group(1)), m.group(2).strip()
            lang = info.split()[0] if info else ""
            marker = NOT_RUN.match(lines[i - 1].strip()) if i else None
            if i and lines[i - 1].strip().startswith("<!--") and "not run" in lines[i - 1] and not marker:
                problems.append(f"{doc}:{i}: a malformed marker; write <!-- not run: REASON -->")
            if marker and not marker.group(1):
                problems.append(f"{doc}:{i}: <!-- not run: --> needs a reason")
            j = i + 1
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            body = "\n".join(ln[indent:] for ln in lines[i + 1:j])
            blocks.append(Block(doc, i + 1, lang, body, marker.group(1) if marker else None))
            if lang not in RUN_LANGS and not marker:
                for k, ln in enumerate(lines[i + 1:j]):
                    if LOOKS_LIKE_CODE.match(ln):
                        problems.append(f"{doc}:{i + 2 + k}: code in a ```{lang} block: {ln.strip()!r}; "
                                        "use ```bash or ```python, or mark the block <!-- not run: REASON -->")
            i, prev_blank = j + 1, False
            continue
        if prev_blank and lines[i].startswith("    ") and LOOKS_LIKE_CODE.match(lines[i]):
            problems.append(f"{doc}:{i + 1}: code in an indented block: {lines[i].strip()!r}; "
                            "use a ```bash or ```python fence")
        if not lines[i].startswith("    "):
            prev_blank = not lines[i].strip()
        i += 1
    return blocks, problems


# ----------------------------------------------------------------------------- scaling down

#: Applied to every document (regular expressions, in order); they need not match.
COMMON = [
    (r"--time-budget \S+", "--max-steps 3"),
    (r"--max-epochs \d+", "--max-steps 3"),
    (r"--max-steps \d{2,}", "--max-steps 3"),
    (r"--size \d+", "--size 48"),
    (r"--batch-size \d+", "--batch-size 4"),
    (r"--seq-len \d+", "--seq-len 16"),
    (r"--max-chars \d+", "--max-chars 2000"),
    (r"--data (tinyshakespeare|warandpeace|pystdlib)\b(?![./])", "--data corpus.txt"),
    (r"\b(time_budget=\d+)", "max_steps=3"),
    (r"\bmax_steps=\d+", "max_steps=3"),
    (r"\bsize=(128|256|512)\b", "size=48"),
    (r"\[:20000\]", "[:2000]"),
    (r"rnnlens report (\S+)", r"rnnlens report \1 --ngram-order 3"),
    (r"((?:build|write)_report\((\"[^\"]+\"|'[^']+'))", r"\1, ngram_order=3"),
    # every train command gets tiny windows first; the document's own flags (after) win
    (r"--params \S+", "--params 3K"),
    (r"rnnlens train (?!--resume)(?!.*--params)", "rnnlens train --size 48 --batch-size 4 --seq-len 16 --eval-every 2 "),
]

#: Runs a document uses without making them: name -> rnnlens.train keyword arguments (or an n-gram order).
ZOO = {
    "runs/shakespeare": dict(layers=2, size=48),
    "runs/linux": dict(layers=2, size=48),
    "runs/demo": dict(layers=1, size=16),
    "runs/py": dict(layers=1, size=16),
    "runs/lstm": dict(layers=1, size=16),
    "runs/gru": dict(model="gru", layers=1, size=16),
    "runs/rnn": dict(model="rnn", layers=1, size=16),
    "runs/small": dict(layers=1, size=8),
    "runs/big": dict(layers=1, size=24),
    "ngrams/20": 20,
    "ngrams/9": 9,
}

#: Per document: "subs" (exact old -> new, each must match), "zoo" (ZOO names copied in).
DOCS: dict[str, dict] = {
    "README.md": dict(),
    "docs/architecture.md": dict(),
    "docs/baselines-nnn.md": dict(),
    "docs/baselines.md": dict(),
    "docs/benchmarks.md": dict(),
    "docs/cells.md": dict(zoo=["runs/py"]),
    "docs/compare.md": dict(zoo=["runs/lstm", "runs/small", "runs/big", "ngrams/20", "ngrams/9"]),
    "docs/corpora.md": dict(),
    "docs/distributed.md": dict(),
    "docs/dynamics.md": dict(zoo=["runs/lstm", "runs/gru", "runs/rnn", "runs/demo"]),
    "docs/explorer.md": dict(zoo=["runs/shakespeare", "runs/linux", "runs/lstm", "runs/gru"]),
    "docs/grid.md": dict(),
    "docs/interventions.md": dict(zoo=["runs/py"]),
    "docs/paper.md": dict(),
    "docs/report.md": dict(zoo=["runs/shakespeare", "runs/linux", "runs/demo"],
                           subs=[("'runs/demo60'", "'runs/demo'")]),
    "docs/resemblance.md": dict(subs=[("rnnlens kl lstm128 ", "rnnlens kl runs/lstm ")]),
    "docs/trace.md": dict(zoo=["runs/shakespeare", "runs/linux"]),
    "docs/training.md": dict(),
    "docs/visualize.md": dict(zoo=["runs/shakespeare", "runs/linux", "runs/demo"]),
}


def corpus_text(n_lines: int = 160, seed: int = 0) -> str:
    """A few thousand characters that hold every printable ASCII character: prose, a play, code."""
    prose = make_text(n_lines, seed)
    play = "ROMEO:\nBut soft, what light through yonder window breaks?\nFirst Citizen:\nWe are 'accounted' poor.\n"
    code = ('def f(x):\n    """Return x."""\n    # TODO: see https://example.org\n    return self.x[0] + 1\n'
            "int main(void) {\n\tif (a > b) { return (c[1] * 2) % 3; }\n}\n")
    chars = "".join(c for c in string.printable if c not in "\x0b\x0c\r")
    return "\n".join([prose[: len(prose) // 2], play, code, chars, prose[len(prose) // 2:], code, play])


TEXTS = ["input.txt", "act1.txt", "test.txt", "heldout.txt", "train.txt", "other.txt", "argparse.py", "f.py",
         "sched.c", "big.c", "big.txt", "in.txt", "corpus.txt", "tinyshakespeare.txt", "test100k.txt"]


def write_texts(folder: Path) -> None:
    for k, name in enumerate(TEXTS):
        (folder / name).write_text(corpus_text(seed=k))
    (folder / "linux" / "kernel").mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(["kernel/sched.c", "kernel/fork.c", "kernel/sched.h", "init.c"]):
        (folder / "linux" / name).write_text(corpus_text(60, seed=100 + k))


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Prebuilt tiny runs, trained on first use, once per session."""
    root = tmp_path_factory.mktemp("zoo")
    write_texts(root)
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            import rnnlens
            spec = ZOO[name]
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("RNNLENS_CACHE", str(root / "cache"))
                if isinstance(spec, int):
                    from rnnlens.ngram import train_ngram
                    train_ngram(str(root / "corpus.txt"), order=spec, out=str(root / name))
                else:
                    rnnlens.train(data=str(root / "corpus.txt"), out=root / name, max_steps=3, batch_size=4,
                                  seq_len=16, progress=False, **spec)
            built[name] = root / name
        return built[name]
    return get


# ----------------------------------------------------------------------------- running

def scale(doc: str, body: str, used: set) -> str:
    for old, new in DOCS[doc].get("subs", []):
        if old in body:
            used.add(old)
            body = body.replace(old, new)
    for pattern, new in COMMON:
        body = re.sub(pattern, new, body)
    return body


def command_lines(body: str) -> list[str]:
    out, cur = [], ""
    for ln in body.split("\n"):
        if ln.rstrip().endswith("\\"):
            cur += ln.rstrip()[:-1] + " "
            continue
        cur += ln
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    return out


def run_command(line: str, where: str) -> None:
    from rnnlens.cli import main
    argv = shlex.split(line, comments=True)
    if not argv:
        return
    target = None
    if ">" in argv:
        k = argv.index(">")
        argv, target = argv[:k], argv[k + 1]
    if argv[0] == "rnnlens":
        argv = argv[1:]
    elif argv[0] in ("python", "python3") and argv[1:3] == ["-m", "rnnlens"]:
        argv = argv[3:]
    elif argv[0] in ("python", "python3") and argv[1] == "-c":
        exec(compile(argv[2], where, "exec"), {"__name__": "__main__"})
        return
    else:
        pytest.fail(f"{where}: {argv[0]!r} cannot run in this test; mark the block <!-- not run: REASON -->")
    if argv[:1] == ["serve"]:
        pytest.fail(f"{where}: `rnnlens serve` serves until Ctrl-C; mark the block <!-- not run: REASON -->")
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    if os.environ.get("DOCS_TIMES"):
        print(f"{time.perf_counter() - t0:6.1f} s  {where}  {line[:100]}", file=sys.__stderr__)
    if target:
        Path(target).write_text(out.getvalue())
    else:
        sys.stdout.write(out.getvalue())
    assert code == 0, f"{where}: `{line}` exited {code}: {err.getvalue().strip()[-2000:]}"


def blocks_of(doc: str) -> tuple[list[Block], list[str]]:
    return extract(doc, (ROOT / doc).read_text())


def test_every_doc_is_listed():
    assert sorted(DOCS) == sorted(DOC_FILES), "add the new document to DOCS"


@pytest.mark.parametrize("doc", DOC_FILES)
def test_blocks_are_runnable_or_marked(doc):
    _, problems = blocks_of(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", [d for d in DOC_FILES
                                 if any(b.lang in RUN_LANGS and not b.not_run for b in blocks_of(d)[0])])
def test_doc_runs(doc, zoo, tmp_path, monkeypatch):
    blocks = [b for b in blocks_of(doc)[0] if b.lang in RUN_LANGS and not b.not_run]
    work = tmp_path / "doc"
    work.mkdir()
    write_texts(work)
    for name in DOCS[doc].get("zoo", []):
        shutil.copytree(zoo(name), work / name)
    monkeypatch.chdir(work)
    used: set = set()
    namespace = {"__name__": "__main__"}
    for b in blocks:
        body = scale(doc, b.body, used)
        where = f"{doc}:{b.line}"
        if b.lang == "python":
            t0 = time.perf_counter()
            exec(compile(body, where, "exec"), namespace)
            if os.environ.get("DOCS_TIMES"):
                print(f"{time.perf_counter() - t0:6.1f} s  {where}  python", file=sys.__stderr__)
        else:
            for line in command_lines(body):
                run_command(line, where)
    stale = [old for old, _ in DOCS[doc].get("subs", []) if old not in used]
    assert not stale, f"substitutions for {doc} that no longer match: {stale}"
