"""`rnnlens demo`: the main job. Train a small LSTM on the built-in corpus, sample, evaluate.

Everything lands in one run folder: checkpoints, metrics.jsonl, loss.png, samples.txt,
eval.json and report.html (rnnlens.report: the page that explains the model). The settings are the ones that won the quality-per-CPU-minute benchmark
(docs/benchmarks.md) for a budget of a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rnnlens.corpus import load_corpus
from rnnlens.model import ModelConfig, count_parameters
from rnnlens.train import TrainConfig, Trainer

# the winner at a 150 s budget (docs/benchmarks.md): a small model that sees many updates
DEMO_MODEL = {"cell": "lstm", "layers": 1, "size": 256, "dropout": 0.0}
DEMO_TRAIN = {"batch_size": 16, "seq_len": 100, "optimizer": "adam", "lr": 6e-3, "lr_schedule": "cosine",
              "eval_every": 1000}
TEMPERATURES = (0.5, 1.0)


def run_demo(data: str = "pystdlib", time_budget: float = 180.0, out: str | Path | None = None, seed: int = 0,
             device: str = "auto", progress: bool = True, sample_length: int = 400) -> Path:
    import rnnlens

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = Path(out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    say(f"rnnlens demo: preparing the corpus {data!r}")
    cfg = TrainConfig(data=data, time_budget=time_budget, seed=seed, device=device, **DEMO_TRAIN)
    corpus = load_corpus(data, progress=progress)
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **DEMO_MODEL)
    say(f"training a {model_cfg.layers}x{model_cfg.size} LSTM ({count_parameters(model_cfg):,} parameters) "
        f"on {corpus.name} ({len(corpus):,} characters, vocabulary {len(corpus.vocab)}) for {time_budget:g} s")
    trainer = Trainer.start(out, model_cfg, cfg, progress=progress, corpus=corpus)
    state = trainer.run()
    if state.stop_reason and state.stop_reason.startswith("interrupted"):
        say(f"interrupted; continue with: rnnlens train --resume {out}")
        return out

    lm = rnnlens.load(out, device=device if device != "auto" else "cpu")
    prime = _prime(corpus)
    samples = []
    for t in TEMPERATURES:
        text = lm.sample(sample_length, prime=prime, temperature=t, seed=seed)
        samples.append((t, text))
        print(f"\n--- sample at temperature {t} (prime {prime!r}) ---\n{prime}{text}\n")
    (out / "samples.txt").write_text(
        "".join(f"--- temperature {t}, prime {prime!r}, seed {seed} ---\n{prime}{text}\n\n" for t, text in samples))

    result = lm.evaluate(data=data, split="test", batch_size=cfg.batch_size, seq_len=cfg.seq_len)
    info = {"split": "test", **result.to_dict(), "best_val_loss": state.best_val,
            "train_steps": state.step, "train_seconds": round(state.elapsed, 1)}
    (out / "eval.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"test: {result.loss:.4f} nats/char ({result.bpc:.3f} bits/char) over {result.chars:,} characters")

    # the report reads eval.json, so it comes last; it takes seconds, not minutes (docs/report.md)
    from rnnlens.report import write_report
    say("writing the report: what the model is, what it writes, and what its units and gates do")
    report = write_report(lm, out=out / "report.html", seed=seed, progress=progress)
    print(f"run folder: {out}  (checkpoints, metrics.jsonl, loss.png, samples.txt, eval.json, report.html)")
    print(f"report: {report}  (open it in a browser)")
    return out


def _prime(corpus) -> str:
    """A short prime from the test split: the first line that starts a definition or a sentence."""
    text = corpus.text("test", 0, 100_000) if len(corpus.split("test")) else ""
    for marker in ("\ndef ", "\nclass ", "\n"):
        at = text.find(marker)
        if at >= 0:
            end = text.find("\n", at + 1)
            line = text[at + 1:end + 1] if 0 < end - at < 100 else text[at + 1:at + 40]
            if line.strip():
                return line
    return text[:40]
