"""The report: one self-contained HTML page that explains a trained model (`rnnlens report RUN`).

    import rnnlens.report
    rnnlens.report.write_report("runs/demo", out="report.html")          # the run's test split
    report = rnnlens.report.build_report("runs/demo", text=open("act1.txt").read())
    report                                                               # shows inline in Jupyter
    report.save("report.html")

This module gathers: it picks the text, loads the model, traces the text ONCE (every array the
sections read, in RAM or, when large, in a temporary file) and computes the plain data the
sections share (model card, training history, samples, the interpretable-unit scores, ...),
each at most once, cached on the ReportContext. rnnlens.render.report draws: it holds the list
of section builders, each `(ctx) -> Section | None`, and puts the page together.

The text: `text` when given; otherwise the first `max_chars` characters of the test split of the
corpus the model was trained on (the validation split when the test split is empty).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from rnnlens.api import LanguageModel
from rnnlens.errors import RnnlensError
from rnnlens.runs import fits_in_memory, history, model_label, read_json, read_metrics, run_folder, training_corpus
from rnnlens.workflows.inspect import load_rnn

DEFAULT_MAX_CHARS = 20_000
TEMPERATURES = (0.5, 0.8, 1.0)


@dataclass
class ReportOptions:
    """What the report computes; every field has a default that suits a laptop CPU."""

    max_chars: int | None = DEFAULT_MAX_CHARS  # with the default text: how much of the test split
    temperatures: tuple[float, ...] = TEMPERATURES
    sample_length: int = 300      # characters per sample
    seed: int = 0                 # samples and the gradient positions
    units_per_feature: int = 1    # gallery: best units shown per feature
    strip_chars: int = 80         # prediction strip: characters of each unit's excerpt
    min_strength: float = 0.3     # gallery: weaker units (|r| or 2|AUC - 0.5| below this) are listed, not shown
    max_lag: int = 100            # gradient flow: lags 0..max_lag
    positions: int = 32           # gradient flow: positions averaged over
    unknown: str = "error"        # characters the model never saw: error, drop or replace
    replacement: str | None = None
    ngram_order: int = 20         # the n-gram baseline fitted on the model's train split (0: no n-gram sections)
    ngram: str | None = None      # a fitted n-gram folder to use instead of fitting one
    data: str | None = None       # where the model's training text is now, when its run cannot find it
    ablate_chars: int = 2_000     # units table: the loss change when each unit is ablated, over this many
                                  # characters of the text (0: no such column); rnnlens.analysis.causal

    def check(self) -> None:
        from rnnlens.checks import check_range
        if self.max_chars is not None:
            check_range("--max-chars", self.max_chars, 1, None, integer=True)
        for t in self.temperatures:
            check_range("temperature", t, 0, None, low_open=True)
        check_range("sample_length", self.sample_length, 1, None, integer=True)
        check_range("units_per_feature", self.units_per_feature, 1, None, integer=True)
        check_range("strip_chars", self.strip_chars, 1, None, integer=True)
        check_range("min_strength", self.min_strength, 0, 1)
        check_range("max_lag", self.max_lag, 1, None, integer=True)
        check_range("positions", self.positions, 1, None, integer=True)
        check_range("--ngram-order", self.ngram_order, 0, 20, integer=True)
        check_range("--ablate-chars", self.ablate_chars, 0, None, integer=True)


class ReportContext:
    """Everything a section builder may read: the model, the text, its one trace, the run folder,
    the options, and plain data computed once on first use."""

    def __init__(self, lm, text: str, *, text_source: str, options: ReportOptions | None = None):
        self.lm = lm
        self.options = options or ReportOptions()
        self.text = text
        self.text_source = text_source  # in words: which text this is
        self.checkpoint = Path(lm.path) if lm.path else None
        self.run_dir = run_folder(self.checkpoint)
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -------------------------------------------------------------- lifetime
    def close(self) -> None:
        self.__dict__.pop("trace", None)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ReportContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- shared data
    @property
    def config(self):
        return self.lm.config

    @property
    def gated(self) -> bool:
        return self.config.cell in ("lstm", "gru")

    @property
    def run_name(self) -> str:
        return model_label(self.checkpoint)

    def trace_names(self) -> list[str]:
        """The arrays every section together reads: the units scored for features, the gates, probs, loss."""
        from rnnlens.analysis.cells import kinds_for
        from rnnlens.analysis.saturation import saturation_names
        from rnnlens.analysis.timescales import timescale_names
        from rnnlens.names import layer_names
        cfg = self.config
        names = layer_names(cfg.layers, kinds_for(cfg.cell))
        if self.gated:
            names += saturation_names(cfg.cell, cfg.layers) + timescale_names(cfg.cell, cfg.layers)
        return list(dict.fromkeys(names + ["probs", "loss"]))

    @cached_property
    def trace(self):
        """One trace of the text with every array the sections read (float32)."""
        names = self.trace_names()
        cfg = self.config
        per_char = sum(len(self.lm.vocab) if n == "probs" else 1 if n == "loss" else cfg.size for n in names) * 4
        options = {"names": names, "unknown": self.options.unknown, "replacement": self.options.replacement}
        if fits_in_memory(len(self.text) * per_char):
            return self.lm.trace(self.text, **options)
        self._tmp = tempfile.TemporaryDirectory(prefix="rnnlens-report-")
        return self.lm.trace(self.text, out=Path(self._tmp.name) / "trace.safetensors", **options)

    @cached_property
    def predictions(self):
        """The model's next-character distributions over the traced text (rnnlens.predictions), from the
        trace: for the comparisons with baselines (n-grams, error taxonomy, character classes)."""
        from rnnlens.predictions import Predictions
        trace = self.trace
        probs = np.asarray(trace["probs"][:-1], dtype=np.float32)  # the last row predicts past the end
        return Predictions(trace.text, list(trace.chars), probs, name=self.run_name)

    @cached_property
    def metrics(self) -> list[dict]:
        """The rows of the run's metrics.jsonl ([] when there is none)."""
        path = self.metrics_path
        return read_metrics(path) if path else []

    @property
    def metrics_path(self) -> Path | None:
        path = self.run_dir / "metrics.jsonl" if self.run_dir else None
        return path if path and path.exists() else None

    @cached_property
    def run_info(self) -> dict:
        return read_json(self.run_dir / "run.json") if self.run_dir else {}

    @cached_property
    def eval_info(self) -> dict:
        """eval.json of the run folder (`rnnlens demo` writes one: the loss over the whole test split)."""
        return read_json(self.run_dir / "eval.json") if self.run_dir else {}

    @cached_property
    def model_card(self) -> dict:
        return model_card(self)

    @cached_property
    def text_loss(self) -> dict:
        return text_loss(self.trace)

    @cached_property
    def samples(self) -> list[tuple[float, str, str]]:
        return samples(self.lm, self.text, self.options.temperatures, self.options.sample_length, self.options.seed)

    @cached_property
    def ngram(self):
        """The n-gram baseline (rnnlens.ngram.NGramModel) for the comparison sections: `options.ngram` when
        given, else one of order `options.ngram_order` fitted in memory on the train split of the model's
        corpus (seconds; not saved: a 20-gram of 3M characters is 0.5 GB on disk). Raises RnnlensError (the
        sections then say why they are missing) when there is no corpus to fit it on."""
        from rnnlens.ngram import NGramModel, train_ngram
        if self.options.ngram:
            return NGramModel.load(self.options.ngram)
        order = self.options.ngram_order
        if not order:
            raise RnnlensError("no n-gram baseline: the report was made with --ngram-order 0")
        try:
            return train_ngram(corpus=self.corpus, order=order)
        except RnnlensError as e:
            raise RnnlensError(f"cannot fit the {order}-gram baseline: {e}; pass --ngram NGRAM_FOLDER") from None

    @cached_property
    def ngram_predictions(self) -> dict:
        """{order: Predictions} of the n-gram baseline's standalone models on the traced text, for the orders
        the sections show (1, 2, 3, 5, 9 and the model's own order)."""
        text = self.predictions.text  # as the network read it (after --unknown)
        orders = sorted({k for k in (1, 2, 3, 5, 9) if k <= self.ngram.order} | {self.ngram.order})
        return {k: self.ngram.predict(text, order=k, unknown="replace") for k in orders}

    @cached_property
    def corpus(self):
        """The corpus the model was trained on (rnnlens.runs.training_corpus); RnnlensError when it cannot be
        found (the sections that need it then say why they are missing)."""
        return training_corpus(self.lm, data=self.options.data)

    @cached_property
    def train_text(self) -> str | None:
        """The train split of the model's corpus (for the rare-word rule of the error taxonomy), or None."""
        try:
            return self.corpus.text("train")
        except RnnlensError:
            return None

    @cached_property
    def cells(self):
        """Every unit scored against every built-in feature of the text (rnnlens.analysis.cells)."""
        from rnnlens.analysis.cells import discover
        return discover(self.trace, excerpts=self.options.units_per_feature)

    @cached_property
    def best_units(self) -> list:
        """The best unit of each feature present in the text (UnitScore), in the order of the features."""
        scores = self.cells
        return [best[0] for f in scores.features if (best := scores.best(f.name, 1))]

    @cached_property
    def causal_effects(self):
        """rnnlens.analysis.causal.CausalEffects of ablating each of `best_units` over the first
        `options.ablate_chars` characters of the text; None when ablate_chars is 0."""
        from rnnlens.analysis.causal import causal_effects
        if not self.options.ablate_chars:
            return None
        return causal_effects(self.lm, self.trace.text, self.best_units, max_chars=self.options.ablate_chars)

    # ------------------------------------------------------- the sections' analyses (plain data)
    @cached_property
    def gallery(self) -> list:
        """(unit score, gallery entry) of the best units of each feature present in the text, strongest first."""
        from rnnlens.analysis.cells import gallery_entries
        scores = self.cells
        k = self.options.units_per_feature
        best = [u for f in scores.features for u in scores.best(f.name, k) if u.excerpt is not None]
        entries = gallery_entries(scores, top=k)
        assert len(best) == len(entries)  # same order: features, then their best units with an excerpt
        return sorted(zip(best, entries), key=lambda pair: (not pair[0].visible, -pair[0].strength))

    @cached_property
    def saturation(self):
        """rnnlens.analysis.saturation.Saturation of the trace (gated cells only)."""
        from rnnlens.analysis.saturation import gate_saturation
        return gate_saturation(self.trace)

    @cached_property
    def timescales(self):
        """rnnlens.analysis.timescales.Timescales of the trace (gated cells only)."""
        from rnnlens.analysis.timescales import memory_timescales
        return memory_timescales(self.trace)

    @property
    def gradient_max_lag(self) -> int:
        """The longest lag the gradient flow follows: options.max_lag, at most the text's length - 2."""
        return min(self.options.max_lag, len(self.trace.text) - 2)

    @cached_property
    def gradient_flow(self):
        """rnnlens.analysis.gradients.GradientFlow over the traced text, or None when the text is too short
        (under 7 characters) to follow gradients back 5 characters."""
        from rnnlens.analysis.gradients import gradient_flow
        if self.gradient_max_lag < 5:
            return None
        return gradient_flow(self.lm, self.trace.text, max_lag=self.gradient_max_lag, positions=self.options.positions,
                             seed=self.options.seed, label=self.run_name)

    @cached_property
    def gradient_decay(self) -> float | None:
        """The gradient flow's mean factor per character of the signal to the input (None when unknown)."""
        return self.gradient_flow.decay_per_lag("input") if self.gradient_flow is not None else None

    @cached_property
    def ngram_note(self) -> str | None:
        """Why the n-gram comparisons are missing, or None when the baseline is there."""
        try:
            self.ngram_predictions  # noqa: B018
        except RnnlensError as e:
            return str(e)
        return None

    @cached_property
    def best_ngram_predictions(self):
        """The n-gram baseline's Predictions of lowest loss on the text (needs ngram_note None)."""
        return min(self.ngram_predictions.values(), key=lambda p: p.loss)

    @cached_property
    def loss_by_class(self):
        """rnnlens.analysis.classes.ClassLosses of the model, and the best n-gram beside it when there is one."""
        from rnnlens.analysis.classes import loss_by_class
        preds = [self.predictions]
        if self.ngram_note is None:
            preds.append(self.best_ngram_predictions)
        return loss_by_class(*preds)

    @cached_property
    def error_overlap(self):
        """rnnlens.analysis.overlap.ErrorOverlap of the model and the best n-gram (None without an n-gram)."""
        from rnnlens.analysis.overlap import error_overlap
        return error_overlap(self.predictions, self.best_ngram_predictions) if self.ngram_note is None else None

    @cached_property
    def error_taxonomy(self) -> tuple:
        """(rnnlens.analysis.taxonomy.Taxonomy, why there is no n-gram oracle or None)."""
        from rnnlens.analysis.taxonomy import ngram_oracle, taxonomy
        note = self.ngram_note
        oracle = None
        if note is None and self.ngram.order >= 9:
            oracle = ngram_oracle(self.ngram, self.predictions.text)
        elif note is None:
            note = f"the n-gram baseline has order {self.ngram.order}; the oracle needs 9"
        return taxonomy(self.predictions, oracle=oracle, train_text=self.train_text), note

    @cached_property
    def long_range(self) -> tuple[list, dict[str, int]]:
        """(the long-range studies: '{}' and '()' where the text has matched pairs, then newlines;
        {pair: matched pairs in the text}), the model beside the n-gram of the highest order when there is one."""
        from rnnlens.analysis.longrange import closing_distances, closing_study, newline_study
        preds = [self.predictions]
        if self.ngram_note is None:
            preds.append(self.ngram_predictions[self.ngram.order])
        text = self.predictions.text
        found = {pair: len(closing_distances(text, pair)[0]) for pair in ("{}", "()")}
        studies = [closing_study(*preds, pair=pair) for pair in ("{}", "()") if found[pair]]
        studies.append(newline_study(*preds))
        return studies, found


# ---------------------------------------------------------------------------------------------
# Plain data


def model_card(ctx: ReportContext) -> dict:
    """What the model is and how it was trained, from the checkpoint, run.json and metrics.jsonl."""
    from rnnlens.model import count_parameters
    cfg, meta, run = ctx.config, ctx.lm.meta, ctx.run_info
    corpus = meta.get("corpus") or run.get("corpus") or {}
    train = meta.get("train") or run.get("train") or {}
    rows = history(ctx.metrics)[0]  # without what a rollback discarded
    steps = max((r["step"] for r in rows if "step" in r), default=meta.get("step"))
    seconds = max((r["elapsed_s"] for r in rows if "elapsed_s" in r), default=None)
    vals = [(r["val_loss"], r["step"]) for r in rows if isinstance(r.get("val_loss"), (int, float))]
    best_val, best_step = min(vals) if vals else (meta.get("val_loss"), meta.get("step"))
    came = next((r for r in rows if "dropout" in r), None)  # where the dropout came on or rose, and to what
    return {
        "cell": cfg.cell, "layers": cfg.layers, "size": cfg.size, "parameters": count_parameters(cfg),
        "vocab": len(ctx.lm.vocab), "dropout": cfg.dropout if came is None else came["dropout"], "input": cfg.input,
        # --dropout-on-plateau: the dropout was off until this step (None: it never came on); else --wide-gap-dropout:
        # the model's dropout until this step, then "dropout" (None: it never changed)
        "dropout_on_plateau": bool(train.get("dropout_on_plateau")),
        "dropout_from": None if came is None else came["step"], "model_dropout": cfg.dropout,
        "corpus": corpus.get("name") or train.get("data"), "corpus_chars": corpus.get("chars"),
        "split": train.get("split"), "optimizer": train.get("optimizer"), "lr": train.get("lr"),
        "batch_size": train.get("batch_size"), "seq_len": train.get("seq_len"),
        "steps": steps, "epochs": max((r["epoch"] for r in rows if "epoch" in r), default=meta.get("epoch")),
        "train_seconds": seconds, "best_val_loss": best_val, "best_step": best_step,
        "checkpoint": str(ctx.checkpoint) if ctx.checkpoint else None,
    }


def text_loss(trace) -> dict:
    """Cross-entropy of the traced text: every character after the first, from its full left context."""
    losses = np.asarray(trace["loss"][:-1], dtype=np.float64)  # row t scores text[t+1]; the last has no next
    loss = float(losses.mean()) if len(losses) else float("nan")
    return {"loss": loss, "bpc": loss / math.log(2), "chars": len(losses),
            "uniform": math.log(trace.vocab_size), "median": float(np.median(losses)) if len(losses) else float("nan"),
            "errors": float((losses > math.log(2)).mean()) if len(losses) else float("nan")}  # p(true) < 0.5


def sample_prime(text: str) -> str:
    """A short prime from the text: its first whole non-empty line (up to 60 characters), with its newline.
    The text's first line is skipped when there are others: an excerpt may start mid-line."""
    lines = text.splitlines(keepends=True)[:50]
    for line in lines[1:] + lines[:1]:
        if line.strip():
            return line if len(line) <= 60 else line[:40]
    return text[:20]


def samples(lm, text: str, temperatures, length: int, seed: int) -> list[tuple[float, str, str]]:
    """(temperature, prime, continuation) for each temperature, seeded, from a prime out of the text."""
    prime = sample_prime(text)
    known = set(lm.vocab.chars)
    prime = "".join(c for c in prime if c in known) or None
    return [(t, prime or "", lm.sample(length, prime=prime, temperature=t, seed=seed)) for t in temperatures]


# ---------------------------------------------------------------------------------------------
# Choosing the text and building the report


def default_text(lm, max_chars: int | None, data=None) -> tuple[str, str]:
    """(text, description): the first max_chars characters of the test split (else val) of the model's corpus."""
    try:
        corpus = training_corpus(lm, data=data)
    except RnnlensError as e:
        raise RnnlensError(f"{e} (or pass --text FILE)") from None
    for split in ("test", "val"):
        n = len(corpus.split(split))
        if n >= 2:
            end = n if max_chars is None else min(n, max_chars)
            return corpus.text(split, 0, end), f"the {split} split of {corpus.name}, characters 0\u2013{end:,} of {n:,}"
    raise RnnlensError(f"the corpus {corpus.name!r} has no test or validation text; pass --text FILE")


def open_context(run, text: str | None = None, *, text_source: str | None = None, device: str = "cpu",
                 options: ReportOptions | None = None) -> ReportContext:
    """Load the model of `run` (a run folder, a checkpoint, or a LanguageModel) and choose the text."""
    options = options or ReportOptions()
    options.check()
    lm = run if isinstance(run, LanguageModel) else load_rnn(run, device, "the report")
    if text is None:
        text, text_source = default_text(lm, options.max_chars, options.data)
    else:
        if options.max_chars is not None:
            text = text[:options.max_chars]
        text_source = text_source or f"a text of {len(text):,} characters"
    if len(text) < 2:
        raise RnnlensError(f"{text_source or 'the text'} has {len(text)} character(s); a report needs at least 2 "
                           "(the model predicts each character from the ones before it)")
    known = lm.vocab.encode(text, unknown=options.unknown, replacement=options.replacement)  # checks unknown chars
    if len(known) < 2:
        raise RnnlensError("after dropping the characters the model never saw, fewer than 2 are left; "
                           "use text like the model's corpus")
    return ReportContext(lm, text, text_source=text_source, options=options)


def build_report(run, text: str | None = None, *, text_source: str | None = None, device: str = "cpu",
                 sections=None, progress=None, **options):
    """The report of `run` over `text` (default: its test split) as a rnnlens.render.report.Report:
    `.html()` the page, `.save(path)`, and in Jupyter it shows inline. `options` are ReportOptions fields."""
    from rnnlens.render.report import render_report
    with open_context(run, text, text_source=text_source, device=device, options=ReportOptions(**options)) as ctx:
        return render_report(ctx, sections=sections, progress=progress)


def write_report(run, text: str | None = None, out: str | Path = "report.html", **kwargs) -> Path:
    """Write the report of `run` to one self-contained HTML file (see build_report for the arguments)."""
    return build_report(run, text, **kwargs).save(out)
