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
from rnnlens.corpus import Vocab, load_corpus
from rnnlens.errors import RnnlensError
from rnnlens.evaluate import EvalResult, evaluate
from rnnlens.model import CharRNN, ModelConfig, count_parameters, parse_count, size_for_params
from rnnlens.sample import SamplingOptions, generate
from rnnlens.trace import DEFAULT_CHUNK, Trace, trace_ids
from rnnlens.train import TrainConfig, Trainer, resolve_device


class LanguageModel:
    """A trained model with its vocabulary: sample from it, score text with it."""

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
               seed: int | None = None, unknown: str = "error", replacement: str | None = None) -> Iterator[str]:
        """Yield sampled characters one by one after `prime` (which is not repeated)."""
        opts = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, argmax=argmax)
        if prime is None or prime == "":
            prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[0]
        ids = self.encode(prime, unknown=unknown, replacement=replacement)
        chars = self.vocab.chars
        for i in generate(self.model, ids, length, opts, seed=seed):
            yield chars[i]

    def sample(self, length: int = 500, prime: str | None = None, **kwargs) -> str:
        """The continuation of `prime`: `length` sampled characters (see `stream` for the options)."""
        return "".join(self.stream(length, prime, **kwargs))

    def evaluate(self, text: str | None = None, *, data: str | None = None, split: str = "test",
                 batch_size: int = 50, seq_len: int = 100, keep_losses: bool = False,
                 unknown: str = "error", glob: str | None = None,
                 split_fractions=None, encoding_errors: str = "strict") -> EvalResult:
        """Cross-entropy over a string (`text`), or over a split of a corpus (`data`, `split`).

        With neither, the split of the corpus the model was trained on.
        """
        if text is not None:
            ids = self.vocab.encode(text, unknown=unknown)
        else:
            if data is None:
                data = self.meta.get("train", {}).get("data")
                if data is None:
                    raise RnnlensError("this checkpoint does not say which corpus it was trained on; pass --data")
                glob = glob or self.meta["train"].get("glob")
                split_fractions = split_fractions or self.meta["train"].get("split")
            corpus = load_corpus(data, glob=glob, split=split_fractions, encoding_errors=encoding_errors)
            part = corpus.split(split)
            ids = self._translate(corpus.vocab, part, unknown)
        return evaluate(self.model, ids, batch_size=batch_size, seq_len=seq_len, keep_losses=keep_losses)

    def _translate(self, vocab: Vocab, ids: np.ndarray, unknown: str) -> np.ndarray:
        """Ids in a corpus's vocabulary -> ids in the model's (they differ when evaluating on other text)."""
        if vocab.chars == self.vocab.chars:
            return ids
        mapping = np.full(len(vocab), -1, dtype=np.int64)
        index = {c: i for i, c in enumerate(self.vocab.chars)}
        for j, c in enumerate(vocab.chars):
            mapping[j] = index.get(c, -1)
        out = mapping[np.asarray(ids, dtype=np.int64)]
        if (out < 0).any():
            missing = sorted({vocab.chars[j] for j in np.unique(np.asarray(ids)[out < 0])})
            if unknown == "drop":
                return out[out >= 0]
            shown = ", ".join(repr(c) for c in missing[:20])
            raise RnnlensError(f"the text has {len(missing)} characters the model never saw ({shown}); "
                               "evaluate on text from the model's corpus, or use --unknown drop")
        return out

    def trace(self, text: str, *, names=None, float16: bool = False, out: str | Path | None = None,
              unknown: str = "error", replacement: str | None = None, chunk: int = DEFAULT_CHUNK,
              progress: bool = False) -> Trace:
        """Every activation of the model over `text` (see rnnlens.trace for the names).

        names: keep only these arrays (default all); float16: store them at half size;
        out: write them to this safetensors file and read them back memory-mapped (for long texts).
        Characters outside the vocabulary follow `unknown` (error, drop, replace) as in sampling.
        """
        ids = self.vocab.encode(text, unknown=unknown, replacement=replacement)
        return trace_ids(self.model, ids, self.vocab.chars, names=names, float16=float16, out=out, chunk=chunk,
                         progress=progress, source=str(self.path) if self.path else None)

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
          params: int | str | None = None, force: bool = False, progress: bool = True, **kwargs) -> LanguageModel:
    """Train a model into `out` and return its best checkpoint.

    Keyword arguments are ModelConfig's fields (layers, size, dropout, input, embedding_size, init,
    init_range, forget_bias) and TrainConfig's (batch_size, seq_len, lr, max_steps, time_budget, ...).
    `params` (e.g. "3.3M") sizes the width to a parameter budget instead of `size`.
    """
    model_fields = set(ModelConfig.__dataclass_fields__) - {"vocab_size", "cell"}
    model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in model_fields}
    unknown = set(kwargs) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise RnnlensError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    cfg = TrainConfig(data=str(data), **kwargs)
    corpus = load_corpus(cfg.data, glob=cfg.glob, split=cfg.split, encoding_errors=cfg.encoding_errors,
                         progress=progress)
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), cell=model, **model_kwargs)
    if params is not None:
        if "size" in model_kwargs:
            raise RnnlensError("give either --size or --params, not both")
        model_cfg.size = size_for_params(model_cfg, parse_count(params) if isinstance(params, str) else params)
    trainer = Trainer.start(out, model_cfg, cfg, force=force, progress=progress, corpus=corpus)
    trainer.run()
    return load(out)


def resume(run: str | Path, *, progress: bool = True, **overrides) -> LanguageModel:
    """Continue a run from its last checkpoint (stopping rules and device may change)."""
    trainer = Trainer.resume(run, overrides={k: v for k, v in overrides.items() if v is not None}, progress=progress)
    trainer.run()
    return load(run)
