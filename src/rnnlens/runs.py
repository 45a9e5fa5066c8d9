"""What a run folder (or a checkpoint, or an n-gram folder) knows about itself, in one place.

* `training_corpus(model)`: the corpus it was trained on, found again from any folder (by content
  hash in the cache, a `data` path the user gives, or the path the run recorded);
* `model_label(path)`, `run_folder(checkpoint)`, `read_metrics(path)`, `history(rows)`: names and history;
* `read_text(path, max_chars)`: the text an analysis reads, checked;
* `trace_for_analysis(lm, text, names)`: a trace in RAM when small, else in a temporary file,
  by the one spill rule (`fits_in_memory`);
* `score_texts(runs, text)`: every model's Predictions over one text they all know.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rnnlens.checks import check_range
from rnnlens.corpus import Corpus, open_run_corpus, read_text_file
from rnnlens.errors import RnnlensError

# Arrays larger than this go to a temporary file and are read back memory-mapped (float32 either way,
# so that no value moves across a threshold by rounding).
IN_MEMORY_BYTES = 512 << 20


def fits_in_memory(nbytes: int) -> bool:
    return nbytes <= IN_MEMORY_BYTES


def model_label(path) -> str:
    """A short name for a checkpoint: its run folder's name, or the file's stem."""
    if path is None:
        return "model"
    path = Path(path)
    return path.parent.name if path.name in ("best.safetensors", "last.safetensors") else path.stem


def run_folder(checkpoint) -> Path | None:
    """The run folder a checkpoint lives in (None for a loose .safetensors file)."""
    if checkpoint is None:
        return None
    folder = Path(checkpoint).parent
    return folder if (folder / "run.json").exists() or (folder / "metrics.jsonl").exists() else None


def read_metrics(path) -> list[dict]:
    """The rows of a metrics.jsonl; a line cut short by a crash is skipped, the rest kept."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def history(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """A run's metrics rows split into (the history its weights come from, the rows a rollback discarded). A
    rollback (a "rolled_back_from" row at the step it went back to) or a resume after a crash goes back to an
    earlier step and logs from there again: the rows logged before at later steps were of weights the run no
    longer has. A resume's are dropped (it logs the same values again); a rollback's are returned apart."""
    def step_of(row):
        step = row.get("step")
        return step if isinstance(step, (int, float)) else -1

    kept, discarded, last_step = [], [], -1  # last_step: the highest step in kept
    for row in rows:
        step = step_of(row)
        if "rolled_back_from" in row:
            discarded += [r for r in kept if step_of(r) > step and "rolled_back_from" not in r]
            kept = [r for r in kept if step_of(r) <= step]
            last_step = step
        elif step < last_step:  # a resume's first row, one step past its checkpoint
            kept = [r for r in kept if step_of(r) < step]
            last_step = step
        kept.append(row)
        last_step = max(last_step, step)
    return kept, discarded


def read_json(path) -> dict:
    """A JSON object from a file, {} when it is missing or not an object."""
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def corpus_records(meta: dict) -> tuple[dict, dict]:
    """(how the model was trained: data, glob, split, encoding_errors; which corpus: content_hash, name,
    split_fractions) from a checkpoint's or an n-gram's metadata, old n-gram files included."""
    train = dict(meta.get("train") or {})
    corpus = dict(meta.get("corpus") or {})
    corpus.setdefault("content_hash", train.get("content_hash"))
    corpus.setdefault("name", train.get("corpus"))
    corpus.setdefault("split_fractions", train.get("split"))
    return train, corpus


def training_corpus(model, *, data=None, glob=None, encoding_errors=None, progress: bool = False) -> Corpus:
    """The corpus `model` (a LanguageModel, NGramModel or anything with .meta and .path) was trained on.
    `data`: where that text is now, when the run cannot find it (checked against its content hash)."""
    train, corpus = corpus_records(getattr(model, "meta", None) or {})
    where = str(getattr(model, "path", None) or "this model")
    return open_run_corpus(train, corpus, data=data, glob=glob, encoding_errors=encoding_errors, run=where,
                           progress=progress)


def read_text(path, *, max_chars: int | None = None, encoding_errors: str = "strict", min_chars: int = 1) -> str:
    """The text an analysis reads: a UTF-8 file, cut to its first `max_chars` characters."""
    text = read_text_file(path, encoding_errors=encoding_errors)
    if max_chars is not None:
        check_range("--max-chars", max_chars, 1, None, integer=True)
        text = text[:max_chars]
    if not text:
        raise RnnlensError(f"{path} is empty; give a file with some text")
    if len(text) < min_chars:
        raise RnnlensError(f"{path} has {len(text)} character(s); this needs at least {min_chars}")
    return text


@contextmanager
def trace_for_analysis(lm, text: str, names: list[str], *, unknown: str = "error", replacement: str | None = None,
                       progress: bool = False):
    """Trace only `names` of `lm` over `text`: in RAM when small, else through a temporary file that lives as
    long as the `with` block."""
    per_char = sum(len(lm.vocab) if n == "probs" else 1 if n == "loss" else lm.config.size for n in names)
    options = dict(names=names, unknown=unknown, replacement=replacement, progress=progress)
    if fits_in_memory(len(text) * per_char * 4):
        yield lm.trace(text, **options)
        return
    with tempfile.TemporaryDirectory(prefix="rnnlens-trace-") as folder:
        yield lm.trace(text, out=Path(folder) / "trace.safetensors", **options)


def load_model(run, device: str = "cpu"):
    """A LanguageModel, or an NGramModel for an n-gram folder (see rnnlens.predictions.CharModel)."""
    from rnnlens.api import load
    return load(run, device=device)


def score_texts(runs, text: str, device: str = "cpu") -> list:
    """Each model's Predictions over `text`, named after its folder (unique names); every model must know
    every character of the text."""
    from rnnlens.analysis.classes import unique_names
    from rnnlens.predictions import predict
    if len(text) < 2:
        raise RnnlensError("the text has fewer than 2 characters; give a longer --text")
    preds = []
    for run in runs:
        model = load_model(run, device)
        missing = sorted(set(text) - set(model.vocab.chars))
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise RnnlensError(f"{run} never saw {len(missing)} of the text's characters ({shown}); compare models "
                               "on a text they all know, e.g. the test split of their training corpus")
        preds.append(predict(model, text, name=model_label(getattr(model, "path", None) or run)))
    for p, name in zip(preds, unique_names(preds)):
        p.name = name
    return preds


def split_ids(model, *, data=None, split: str = "test", glob=None, split_fractions=None,
              encoding_errors: str = "strict", unknown: str = "error"):
    """The ids of one split of a corpus in `model`'s vocabulary: of `data` (any text, cut by
    `split_fractions`, e.g. (0, 0, 1) for all of it), or of the corpus the model was trained on."""
    from rnnlens.corpus import Corpus, load_corpus, parse_split
    if isinstance(split_fractions, str):
        split_fractions = parse_split(split_fractions, "--split-fractions", need_train=False)
    if data is not None:
        corpus = load_corpus(data, glob=glob, split=split_fractions, encoding_errors=encoding_errors)
    else:
        corpus = training_corpus(model)
        if split_fractions is not None:
            corpus = Corpus(corpus.directory, name=corpus.name, split=split_fractions)
    return corpus.vocab.translate(corpus.split(split), model.vocab, unknown)
