"""Time the comparisons of `rnnlens compare` / `rnnlens errors` on a long text (default 300K characters).

What is timed, in one process, each step once (they are deterministic and seconds long):
  predict     the model's next-character distribution at every position (the reference: every
              analysis below needs it, so its cost is the yardstick the others are compared with)
  classes     loss by character class
  longrange   the '{}' and '()' closing studies and newline by column
  taxonomy    the error taxonomy's rules and peeling (word index, memory, rare words, word model,
              punctuation, boost), given the oracle's best probabilities
  words       counting the words of the training text (the rare-word rule's input)
  ngram fit   fitting the oracle's 9-gram on the training text       (only with rnnlens.ngram)
  oracle      the 9 standalone orders' probabilities of the true char  (only with rnnlens.ngram)

The model is a run given with --run, else a randomly initialised 1x128 LSTM over the text's
characters (the work does not depend on the weights). The text is --text (default: generated
words), cut to --chars characters; the training text is --train (default: the text itself).

    python benchmarks/bench_errors.py --text test.txt --train train.txt --run runs/lstm128
    python benchmarks/bench_errors.py --quick
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import machine_line, sgemm_probe  # noqa: E402


def generated_text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = ["the", "king", "shall", "not", "be", "{", "}", "(", ")", "love", "thou", "art", "and", "my", "lord"]
    out, size = [], 0
    while size < n:
        line = " ".join(rng.choice(words, size=rng.integers(3, 12))) + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text")
    ap.add_argument("--train", help="training text for the rare-word counts and the 9-gram (default: --text)")
    ap.add_argument("--run", help="a trained model (default: a random 1x128 LSTM)")
    ap.add_argument("--chars", type=int, default=300_000)
    ap.add_argument("--quick", action="store_true", help="30K characters")
    args = ap.parse_args()
    chars = 30_000 if args.quick else args.chars

    import torch

    import rnnlens
    from rnnlens.analysis.classes import loss_by_class
    from rnnlens.analysis.longrange import closing_study, newline_study
    from rnnlens.analysis.taxonomy import ngram_oracle, taxonomy, word_counts
    from rnnlens.api import LanguageModel
    from rnnlens.corpus import Vocab
    from rnnlens.model import CharRNN, ModelConfig
    from rnnlens.predictions import predict

    text = Path(args.text).read_text(encoding="utf-8")[:chars] if args.text else generated_text(chars)
    train = Path(args.train).read_text(encoding="utf-8") if args.train else text
    if args.run:
        lm = rnnlens.load(args.run)
    else:
        torch.manual_seed(0)
        vocab = Vocab(sorted(set(text) | set(train)))
        lm = LanguageModel(CharRNN(ModelConfig(vocab_size=len(vocab), cell="lstm", layers=1, size=128)).eval(), vocab)
    print(machine_line())
    print(f"{len(text):,} characters; model {lm.config.cell} {lm.config.layers}x{lm.config.size}; "
          f"training text {len(train):,} characters")
    sgemm_probe("before")

    times: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t
        print(f"{name:10s} {times[name]:8.2f} s", flush=True)
        return out

    preds = timed("predict", lambda: predict(lm, text, name="lstm"))
    timed("classes", lambda: loss_by_class(preds))
    timed("longrange", lambda: [closing_study(preds, pair="{}"), closing_study(preds, pair="()"),
                                newline_study(preds)])
    counts = timed("words", lambda: word_counts(train))
    oracle = None
    try:
        from rnnlens.ngram import fit_ngram
    except ImportError:
        print("rnnlens.ngram is not installed: the 9-gram fit and the oracle are not timed")
    else:
        vocab = Vocab(sorted(set(train) | set(text)))
        ngram = timed("ngram fit", lambda: fit_ngram(vocab.encode(train), vocab, 9))
        oracle = timed("oracle", lambda: ngram_oracle(ngram, text))
    if oracle is None:
        oracle = np.zeros(len(text) - 1)  # the rules do the same work whatever the oracle says
    tax = timed("taxonomy", lambda: taxonomy(preds, oracle=oracle, train_counts=counts))
    sgemm_probe("after")
    print(tax.table())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n| step | seconds | x predict |\n|---|---:|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} | {seconds / times['predict']:.2f} |")
    print(f"\npeak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
