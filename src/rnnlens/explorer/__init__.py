"""The explorer: a local web app over one or two models (`rnnlens serve`).

engine.py computes (plain data, no HTTP); server.py is the FastAPI app and the safety limits;
static/ holds the page (vanilla JS, no build step, nothing from the network).
"""

from __future__ import annotations


def open_explorer(runs, *, text: str | None = None, text_name: str | None = None, device: str = "cpu",
                  max_text_bytes: int = 1_000_000, log=None, cache: bool = True,
                  labels: str | None = None):
    """The Explorer over one or two RNN runs, starting on `text` (cut to max_text_bytes) or on a sample of
    the first model. The text is also opened as a Document per model (traced in the background into
    memory maps, cached by model and text hash unless cache=False) for the corpus view; `labels` are
    per-character labels for it (one character each). An n-gram folder is refused here, before anything is served: it has no units."""
    from rnnlens.checks import check_range, require
    from rnnlens.errors import RnnlensError
    require("fastapi", "serve", "the explorer")
    require("uvicorn", "serve", "the explorer")
    from rnnlens.explorer.engine import Explorer
    from rnnlens.workflows.inspect import load_rnn
    runs = [str(r) for r in runs]
    if len(runs) > 2:
        raise RnnlensError(f"serve shows one or two models side by side; got {len(runs)}")
    check_range("--max-text-bytes", max_text_bytes, 1, None, integer=True)
    for run in runs:
        load_rnn(run, device, "the explorer")
    explorer = Explorer.from_runs(runs, device=device, max_text_bytes=max_text_bytes)
    if text is not None:
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw) > max_text_bytes:
            text = raw[:max_text_bytes].decode("utf-8", "ignore")
            if log is not None:
                log(f"{text_name}: the page starts with its first {len(text):,} characters (--max-text-bytes)")
        explorer.default_text, explorer.text_note = text[:20_000], f"from {text_name}"
        explorer.open_document(text, cache=cache)
        if labels is not None:
            explorer.set_labels(labels)
    else:
        lm = next(iter(explorer.models.values()))
        explorer.default_text = lm.sample(600, temperature=0.8, seed=0)
        explorer.text_note = "sampled from the model: paste your own text"
    return explorer
