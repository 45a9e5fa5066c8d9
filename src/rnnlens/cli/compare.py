"""`rnnlens ngram`, `compare`, `errors` and `kl`: baselines, and models side by side."""

from __future__ import annotations

import math

from rnnlens.cli.common import add_device_argument, command, finish, print_json, progress_shown, say, text_of
from rnnlens.errors import RnnlensError

NGRAM_EXAMPLES = """examples:
  rnnlens ngram --data tinyshakespeare.txt --order 20 --out ngrams/shake20
  rnnlens ngram --data linux/ --glob '**/*.c' --order 9 --out ngrams/linux9
  rnnlens ngram --data input.txt --order 3 --smoothing addk --k 0.1 --out ngrams/addk3
  rnnlens eval ngrams/shake20 --split val

interpolated modified Kneser-Ney (Chen & Goodman) by default; docs/baselines.md has the exact rules."""
COMPARE_EXAMPLES = """examples:
  rnnlens compare runs/lstm ngrams/20 --text test.txt --out compare/              # LSTM against a 20-gram
  rnnlens compare runs/big runs/small --text sched.c --pair '{}' --pair '()' --bins log --out compare/

writes into --out: classes.csv/.md/.png (loss by class of the true next character), longrange.csv/
.json/.png (probability of each --pair's closer by distance to its opener, and of newline by
column) and compare.html (the text coloured by loss_B - loss_A: blue where RUN_A is better)."""
ERRORS_EXAMPLES = """examples:
  rnnlens errors runs/lstm --text test.txt --out errors/             # oracle: a 9-gram fitted on the train split
  rnnlens errors runs/small runs/big --text test.txt --ngram ngrams/9 --out errors/
  rnnlens errors runs/lstm --text test.txt --no-oracle --threshold 0.3 --json

an error is a character whose true probability is < --threshold; errors are peeled in the paper's
order: n-gram oracle, dynamic memory, rare words, word model, punctuation, boost (the rest).
writes errors.csv, errors.json and errors.png into --out; with RUN2 (a larger model), which of
RUN's errors it fixes, per category."""
KL_EXAMPLES = """examples:
  rnnlens kl runs/lstm --text heldout.txt --baseline nnn2=runs/nnn2 --baseline nnn5=runs/nnn5 --out figures/
  rnnlens kl runs/lstm --text heldout.txt --ngram-orders 1,2,3,5,9,20 --out figures/ --json

needs a run trained with --snapshot-every N. For every snapshot: the mean over the text's positions of
KL(p||q) + KL(q||p) between its next-character distributions and each baseline's, in nats (probabilities
floored at --floor, then renormalised). --ngram-orders fits n-gram models on --data (default: the run's
training corpus). Writes kl.png, kl.csv and kl.json into --out."""


def add_comparison_text_arguments(p) -> None:
    """The text every compared model scores: all of them must know all of its characters."""
    p.add_argument("--text", required=True, metavar="FILE", help="UTF-8 text file every model scores")
    p.add_argument("--max-chars", type=int, metavar="N", help="read only the first N characters of it (default: all)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    add_device_argument(p)


def add_parsers(sub) -> None:
    from rnnlens.cli.common import add_text_arguments
    p = command(sub, "ngram", "Fit a character n-gram model (Kneser-Ney or add-k) on a corpus's train split; "
                "print its val and test loss.", run_ngram, NGRAM_EXAMPLES)
    p.add_argument("--data", required=True, help="text file, folder, or named corpus (as for `rnnlens train`)")
    p.add_argument("--glob", help="with a folder: which files, e.g. '**/*.c' (shuffled with a fixed seed)")
    p.add_argument("--split", help="train,val,test fractions cut by position (default: the corpus's own, "
                   "0.9,0.05,0.05 for files)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--order", type=int, default=20, help="n, from 1 to 20 (default 20)")
    p.add_argument("--smoothing", default="kn", choices=["kn", "addk"],
                   help="kn: interpolated modified Kneser-Ney (default); addk: (count + k) / (total + k V)")
    p.add_argument("--k", type=float, default=1.0, help="with --smoothing addk: the k (default 1)")
    p.add_argument("--discounts", default="tuned", choices=["tuned", "closed"],
                   help="kn: tuned on the val split per order and context bucket (default), or the "
                   "closed-form estimate from counts of counts (docs/baselines.md)")
    p.add_argument("--out", required=True, help="folder to write the model into")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command(sub, "compare", "Where one model beats another: loss by character class, closing characters by "
                "distance to their openers, and a page of the text coloured by the loss difference.", run_compare,
                COMPARE_EXAMPLES)
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders, checkpoints or n-gram folders; "
                   "the page compares the first two")
    add_comparison_text_arguments(p)
    p.add_argument("--pair", action="append", metavar="OC",
                   help="opening and closing character to study, e.g. '()'; repeatable (default '{}'); "
                        "newline by column is always studied")
    p.add_argument("--bins", help="distance bin edges, e.g. 0,10,20,50,100, or 'log' (1,2,4,...,512) "
                   "(default 0,10,...,100; the last bin is open)")
    p.add_argument("--scale", type=float, default=2.0, help="page colours: full at this loss difference in nats "
                   "(default 2)")
    p.add_argument("--html-start", type=int, default=0, help="first character shown on the page (default 0)")
    p.add_argument("--html-length", type=int, default=20_000, help="characters shown on the page (default 20,000)")
    p.add_argument("--out", default=".", help="folder for the tables, figures and compare.html (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the class table")

    p = command(sub, "errors", "The paper's error taxonomy: a model's errors (p(true char) < --threshold) peeled "
                "into n-gram oracle, dynamic memory, rare words, word model, punctuation and boost.", run_errors,
                ERRORS_EXAMPLES)
    p.add_argument("runs", nargs="+", metavar="RUN", help="the model (run folder, checkpoint or n-gram folder); "
                   "a second, larger model to see which errors scaling removes")
    add_comparison_text_arguments(p)
    p.add_argument("--data", help="the training corpus (for rare words and the oracle's 9-gram; default: the "
                   "corpus RUN was trained on)")
    p.add_argument("--glob", help="with a folder for --data: which files")
    p.add_argument("--split-fractions", help="how --data is cut, e.g. 0.9,0.05,0.05 (default: the one RUN used)")
    oracle = p.add_mutually_exclusive_group()
    oracle.add_argument("--ngram", metavar="NGRAM", help="a fitted n-gram folder (order >= 9) for the oracle "
                        "(default: fit a 9-gram on the training split)")
    oracle.add_argument("--no-oracle", action="store_true", help="skip the n-gram oracle (its category stays empty)")
    p.add_argument("--threshold", type=float, default=0.5, help="an error is p(true char) < this (default 0.5)")
    p.add_argument("--memory", type=int, default=1000, help="dynamic memory window in characters (default 1000)")
    p.add_argument("--rare", type=int, default=5, help="a word seen at most this often in training is rare "
                   "(default 5)")
    p.add_argument("--out", default=".", help="folder for errors.csv, errors.json and errors.png (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command(sub, "kl", "Training dynamics: the symmetric KL divergence between a run's snapshots and baseline "
                "models (n-gram, n-NN) on a held-out text, over training.", run_kl, KL_EXAMPLES)
    p.add_argument("run", help="run folder trained with --snapshot-every")
    add_text_arguments(p, max_chars_default=20_000)
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH",
                   help="a baseline model (run folder or checkpoint; an n-gram folder too) under a name; repeatable")
    p.add_argument("--ngram-orders", metavar="N,N,...", help="also compare with n-gram models of these orders, "
                   "e.g. 1,2,3,5,9,20, fitted on --data")
    p.add_argument("--data", help="with --ngram-orders: the corpus to fit them on (default: the run's corpus)")
    p.add_argument("--floor", type=float, default=1e-6, help="probabilities are raised to at least this before "
                   "the KL (default 1e-6)")
    p.add_argument("--out", default=".", help="folder for kl.png, kl.csv and kl.json (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_ngram(args) -> int:
    from rnnlens.ngram import check_order, check_smoothing, train_ngram
    check_order(args.order)
    check_smoothing(args.smoothing, args.k)
    model = train_ngram(args.data, args.order, args.out, smoothing=args.smoothing, k=args.k, glob=args.glob,
                        split=args.split, encoding_errors=args.encoding_errors, discounts=args.discounts,
                        progress=progress_shown(args))
    fit, corpus = model.meta["train"], model.meta["corpus"]
    scores = {}
    for split in ("val", "test"):
        try:
            scores[split] = model.evaluate(split=split)
        except RnnlensError:  # an empty split (e.g. --split 0.9,0.1 has no test part)
            scores[split] = None
    if args.json:
        print_json({"out": str(args.out), "order": model.order, "smoothing": model.smoothing, "k": model.k,
                    "train_chars": fit["train_chars"], "train_seconds": fit["seconds"], "ngrams": model.entries,
                    **{s: r.to_dict() if r else None for s, r in scores.items()}})
        return 0
    how = "interpolated modified Kneser-Ney" if model.smoothing == "kn" else f"add-{model.k:g}"
    print(f"{model.order}-gram, {how}, on {corpus['name']}: {fit['train_chars']:,} train characters, "
          f"vocabulary {len(model.vocab)}, {model.entries:,} n-grams, fitted in {fit['seconds']:.1f} s")
    for split, r in scores.items():
        if r is None:
            print(f"{split}: (empty split)")
        else:
            print(f"{split}: {r.loss:.4f} nats/char, {r.loss / math.log(2):.4f} bits/char over {r.chars:,} characters")
    print(f"saved to {args.out}")
    return 0


def run_compare(args) -> int:
    from rnnlens.workflows.compare import compare
    return finish(args, compare(args.runs, text_of(args), text_name=args.text, pairs=args.pair, bins=args.bins,
                                 scale=args.scale, html_start=args.html_start, html_length=args.html_length,
                                 device=args.device))


def run_errors(args) -> int:
    from rnnlens.workflows.taxonomy import error_taxonomy
    if len(args.runs) > 2:
        raise RnnlensError("errors takes one model, or two (small then large): rnnlens errors RUN [RUN2] --text FILE")
    return finish(args, error_taxonomy(args.runs[0], text_of(args), larger=args.runs[1] if len(args.runs) > 1
                                        else None, data=args.data, glob=args.glob,
                                        split_fractions=args.split_fractions, ngram=args.ngram,
                                        oracle=not args.no_oracle, threshold=args.threshold, memory=args.memory,
                                        rare=args.rare, text_name=args.text, device=args.device, log=say),
                   json_files={"figure": "errors.png", "csv": "errors.csv", "json": "errors.json"})


def parse_baselines(specs: list[str]) -> dict[str, str]:
    """--baseline NAME=PATH, repeated -> {name: path}."""
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise RnnlensError(f"--baseline takes NAME=PATH, e.g. --baseline nnn5=runs/nnn5; got {spec!r}")
        if name in out:
            raise RnnlensError(f"--baseline name {name!r} is given twice; give each baseline its own name")
        out[name] = path
    return out


def parse_orders(text: str) -> list[int]:
    try:
        orders = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        orders = []
    if not orders or min(orders) < 1:
        raise RnnlensError(f"--ngram-orders takes integers >= 1 separated by commas, e.g. 1,2,3,5,9,20; got {text!r}")
    return sorted(set(orders))


def run_kl(args) -> int:
    import sys

    from rnnlens.workflows.kl import kl
    baselines = parse_baselines(args.baseline)
    orders = parse_orders(args.ngram_orders) if args.ngram_orders else []
    verbose = progress_shown(args)

    def progress(i, total, step):
        if verbose:
            print(f"\rsnapshot {i}/{total} (step {step})", end="" if i < total else "\n", file=sys.stderr, flush=True)

    result = kl(args.run, text_of(args), baselines=baselines, ngram_orders=orders, data=args.data, floor=args.floor,
                unknown=args.unknown, replacement=args.replacement, text_name=args.text, device=args.device,
                progress=progress)
    files = result.write(args.out)
    if args.json:
        print_json({**result.to_dict(), "figure": str(files["kl.png"]), "csv": str(files["kl.csv"])})
        return 0
    print(result.summary())
    print(f"wrote {files['kl.png']}, {files['kl.csv']} and {files['kl.json']}")
    return 0
