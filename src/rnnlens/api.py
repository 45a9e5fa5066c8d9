"""The Python API; the CLI is a thin layer over these functions.

    import rnnlens
    run = rnnlens.train(data="input.txt", out="runs/demo", max_steps=500)
    lm = rnnlens.load("runs/demo")
    print(lm.sample(200, prime="The ", temperature=0.8, seed=1))
    print(lm.evaluate(data="input.txt", split="test").loss)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from rnnlens.checkpoint import BEST, find_checkpoint, read_checkpoint
from rnnlens.corpus import Vocab
from rnnlens.errors import RnnlensError
from rnnlens.evaluate import EvalResult, evaluate
from rnnlens.model import CharRNN, ModelConfig, count_parameters
from rnnlens.sample import SamplingOptions
from rnnlens.trace import DEFAULT_CHUNK, Trace, trace_ids
from rnnlens.trainer import resolve_device


class LanguageModel:
    """A trained RNN, LSTM, GRU or n-NN with its vocabulary: sample from it, score text with it, trace it.

    It shares predict, evaluate, vocab, meta and path with rnnlens.ngram.NGramModel (rnnlens.predictions.
    CharModel), so every comparison takes either; `kind` tells them apart."""

    kind = "rnn"

    def __init__(self, model: CharRNN, vocab: Vocab, meta: dict | None = None, path: Path | None = None):
        self.model = model
        self.vocab = vocab
        self.meta = meta or {}
        self.path = path

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        c = self.config
        return (f"LanguageModel({c.cell} {c.layers}x{c.size}, vocab {len(self.vocab)}, "
                f"{count_parameters(c):,} parameters, from {self.path})")

    def encode(self, text: str, unknown: str = "error", replacement: str | None = None) -> torch.Tensor:
        return torch.from_numpy(self.vocab.encode(text, unknown=unknown, replacement=replacement))

    def stream(self, length: int = 500, prime: str | None = None, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, argmax: bool = False,
               seed: int | None = None, unknown: str = "error", replacement: str | None = None,
               interventions=None, precision: str = "auto") -> Iterator[str]:
        """Yield sampled characters one by one after `prime` (which is not repeated).

        interventions: rnnlens.interventions (Clamp, Ablate, ...) applied inside every step, prime included;
        precision: the step's weights ('auto': float16 at batch 1 on a CPU; 'float32' for the exact cells)."""
        for row in self.stream_rows(length, prime, rows=1, temperature=temperature, top_k=top_k, top_p=top_p,
                                    argmax=argmax, seed=seed, unknown=unknown, replacement=replacement,
                                    interventions=interventions, precision=precision):
            yield row[0]

    def stream_rows(self, length: int = 500, prime: str | None = None, *, rows: int = 1, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, argmax: bool = False,
                    seed: int | None = None, unknown: str = "error", replacement: str | None = None,
                    interventions=None, precision: str = "auto") -> Iterator[list[str]]:
        """`rows` samples at once (one batched step per character): yields a list of `rows` characters."""
        from rnnlens.sample import generate_rows
        opts = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, argmax=argmax, precision=precision)
        if prime is None or prime == "":
            prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[0]
        ids = self.encode(prime, unknown=unknown, replacement=replacement)
        interventions = self._resolve(interventions, None)
        chars = self.vocab.chars
        for nxt in generate_rows(self.model, ids, length, opts, seed=seed, rows=rows, interventions=interventions):
            yield [chars[i] for i in nxt.tolist()]

    def sample(self, length: int = 500, prime: str | None = None, *, num_samples: int | None = None,
               **kwargs) -> str | list[str]:
        """The continuation of `prime`: `length` sampled characters (see `stream` for the options).
        With num_samples=N, a list of N samples drawn together in one batch."""
        if num_samples is None:
            return "".join(self.stream(length, prime, **kwargs))
        out = [[] for _ in range(num_samples)]
        for row in self.stream_rows(length, prime, rows=num_samples, **kwargs):
            for o, ch in zip(out, row):
                o.append(ch)
        return ["".join(o) for o in out]

    def _resolve(self, interventions, text: str | None):
        """Fill in the means of Ablate(to='mean') (over its mean_over text, else `text`)."""
        from rnnlens.interventions import needs_means, resolve_means
        if not interventions:
            return None
        interventions = list(interventions)
        if needs_means(interventions):
            def mean_of(name, over):
                return np.asarray(self.trace(over, names=[name])[name], dtype=np.float64).mean(axis=0)
            interventions = resolve_means(interventions, mean_of, text)
        return interventions

    def predict(self, text: str, *, unknown: str = "error", replacement: str | None = None, interventions=None):
        """The next-character distribution at every position of `text` (rnnlens.predictions.Predictions),
        of the model as edited by `interventions` when given."""
        from rnnlens.predictions import Predictions
        ids = self.vocab.encode(text, unknown=unknown, replacement=replacement)
        trace = trace_ids(self.model, ids, self.vocab.chars, names=["probs"],
                          interventions=self._resolve(interventions, "".join(self.vocab.chars[i] for i in ids)))
        probs = np.asarray(trace["probs"][:-1], dtype=np.float32)  # the last row predicts past the end
        return Predictions(trace.text, list(self.vocab.chars), probs)

    def evaluate(self, text: str | None = None, *, data: str | None = None, split: str = "test",
                 batch_size: int = 50, seq_len: int = 100, keep_losses: bool = False,
                 unknown: str = "error", glob: str | None = None,
                 split_fractions=None, encoding_errors: str = "strict", interventions=None) -> EvalResult:
        """Cross-entropy over a string (`text`), or over a split of a corpus (`data`, `split`).

        With neither, the split of the corpus the model was trained on (found from any folder).
        With `interventions` the text is scored as ONE stream from the zero state (batch_size and seq_len
        do not apply), with the edited layers stepped exactly (see rnnlens.trace.trace_ids).
        """
        from rnnlens.runs import split_ids
        if text is not None:
            ids = self.vocab.encode(text, unknown=unknown)
        else:
            ids = split_ids(self, data=data, split=split, glob=glob, split_fractions=split_fractions,
                            encoding_errors=encoding_errors, unknown=unknown)
        if interventions:
            if len(ids) < 2:
                raise RnnlensError("nothing to score: the text needs at least two characters")
            chars = self.vocab.chars
            trace = trace_ids(self.model, ids, chars, names=["loss"],
                              interventions=self._resolve(interventions, "".join(chars[i] for i in ids)))
            losses = np.asarray(trace["loss"][:-1], dtype=np.float32)
            return EvalResult(float(losses.astype(np.float64).mean()), len(losses),
                              losses if keep_losses else None)
        return evaluate(self.model, ids, batch_size=batch_size, seq_len=seq_len, keep_losses=keep_losses)

    def trace(self, text: str, *, names=None, float16: bool = False, out: str | Path | None = None,
              unknown: str = "error", replacement: str | None = None, chunk: int = DEFAULT_CHUNK,
              progress: bool = False, interventions=None) -> Trace:
        """Every activation of the model over `text` (see rnnlens.trace for the names).

        names: keep only these arrays (default all); float16: store them at half size;
        out: write them to this safetensors file and read them back memory-mapped (for long texts).
        Characters outside the vocabulary follow `unknown` (error, drop, replace) as in sampling.
        interventions: rnnlens.interventions applied inside the recurrence; the trace holds the edited model.
        """
        ids = self.vocab.encode(text, unknown=unknown, replacement=replacement)
        interventions = self._resolve(interventions, "".join(self.vocab.chars[i] for i in ids))
        return trace_ids(self.model, ids, self.vocab.chars, names=names, float16=float16, out=out, chunk=chunk,
                         progress=progress, source=str(self.path) if self.path else None,
                         interventions=interventions)

    def to(self, device) -> "LanguageModel":
        self.model.to(resolve_device(device) if isinstance(device, str) else device)
        return self


def load(run: str | Path, *, device: str = "cpu", which: str = BEST) -> LanguageModel:
    """Load a run folder (its best checkpoint, else its last) or one .safetensors file.

    An n-gram folder (written by `rnnlens ngram`) gives a rnnlens.ngram.NGramModel instead; it has the
    same evaluate and predict (device does not apply to it)."""
    from rnnlens.ngram import NGramModel, is_ngram
    if is_ngram(run):
        return NGramModel.load(run)
    path = find_checkpoint(run, prefer=which)
    ckpt = read_checkpoint(path)
    try:
        model = ckpt.build_model()
    except RuntimeError as e:
        raise RnnlensError(f"checkpoint {path} does not match its own config ({str(e).splitlines()[0]}); "
                           "it is damaged: restore it or retrain") from None
    model.eval()  # a loaded model is for inference: no dropout unless someone asks for train()
    lm = LanguageModel(model, ckpt.vocab, ckpt.meta, path)
    return lm.to(device)


def train(data: str = "pystdlib", out: str | Path = "runs/latest", *, model: str = "lstm",
          params: int | str | None = None, force: bool = False, progress: bool = True, **options) -> LanguageModel:
    """Train a model into `out` and return its best checkpoint.

    Keyword arguments are ModelConfig's fields (layers, size, dropout, input, embedding_size, init,
    init_range, forget_bias, context) and TrainConfig's (batch_size, seq_len, lr, max_steps, time_budget,
    ...), checked as `rnnlens train` checks its flags. `params` (e.g. "3.3M") sizes the width to a
    parameter budget instead of `size`.
    """
    from rnnlens import plan
    plan.train(out=out, data=data, model=model, params=params, force=force, progress=progress, **options)
    return load(out)


def resume(run: str | Path, *, progress: bool = True, **options) -> LanguageModel:
    """Continue a run from its last checkpoint. A new stopping rule (max_steps, max_epochs, time_budget)
    replaces the old one; `data` says where its text is now when the run cannot find it."""
    from rnnlens import plan
    plan.train(resume=run, progress=progress, **options)
    return load(run)
