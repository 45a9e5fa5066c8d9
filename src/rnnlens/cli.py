"""The `rnnlens` command: a thin layer over the Python API.

Every user error is a one-line `error: ...` on stderr and exit status 2; Ctrl-C exits 130
after saving what a command was working on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rnnlens.errors import RnnlensError

EXAMPLES = {
    "train": """examples:
  rnnlens train --data input.txt --model lstm --layers 2 --size 256 --time-budget 10m --out runs/shakespeare
  rnnlens train --data linux/ --glob '**/*.c' --params 3.3M --model gru --max-epochs 20 --out runs/gru
  rnnlens train --resume runs/shakespeare --max-epochs 50""",
    "sample": """examples:
  rnnlens sample runs/shakespeare --prime 'ROMEO:' --length 500 --temperature 0.8 --seed 1
  rnnlens sample runs/shakespeare --top-p 0.9 --num-samples 3
  rnnlens sample runs/shakespeare --prime-file start.txt --unknown drop --argmax""",
    "eval": """examples:
  rnnlens eval runs/shakespeare                       # the test split of the training corpus
  rnnlens eval runs/shakespeare --split val --json
  rnnlens eval runs/shakespeare --data other.txt --split-fractions 0,0,1 --save-losses losses.npy""",
    "data": """examples:
  rnnlens data list
  rnnlens data get tinyshakespeare
  rnnlens data get linux --source linux-4.1.tar.xz""",
    "cells": """examples:
  rnnlens cells runs/shakespeare --text input.txt               # every built-in feature, cells and hidden
  rnnlens cells runs/py --text argparse.py --features bracket_depth,in_string,indent --top 5
  rnnlens cells runs/py --text argparse.py --feature 'todo=(?i)todo' --feature 'url=https?://\\S+' --json
  rnnlens cells runs/py --text argparse.py --kinds all --out gallery.html""",
    "demo": """examples:
  rnnlens demo                      # a few minutes on the built-in corpus
  rnnlens demo --time-budget 30s --out runs/quick""",
}


def build_parser() -> argparse.ArgumentParser:
    from rnnlens import __version__
    parser = argparse.ArgumentParser(
        prog="rnnlens", description="Train character-level RNN, LSTM and GRU language models, "
        "sample from them, and see inside them.")
    parser.add_argument("--version", action="version", version=f"rnnlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("train", "Train a model on a text file, a folder of files, or a named corpus.")
    add_train_arguments(p)

    p = command("sample", "Generate text from a trained model, streaming to stdout.")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    prime = p.add_mutually_exclusive_group()
    prime.add_argument("--prime", help="text to start from (default: a newline)")
    prime.add_argument("--prime-file", help="read the prime from this UTF-8 file")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature > 0 (default 1.0)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely characters")
    p.add_argument("--top-p", type=float, help="sample from the smallest set with this much probability")
    p.add_argument("--argmax", action="store_true", help="always take the most likely character")
    p.add_argument("--seed", type=int, help="make sampling reproducible")
    p.add_argument("--num-samples", type=int, default=1, help="how many samples (default 1)")
    add_unknown_arguments(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")

    p = command("eval", "Cross-entropy of a model over a whole split, in nats and bits per character.")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--data", help="corpus to score (default: the one the model was trained on)")
    p.add_argument("--glob", help="with a folder for --data: which files (e.g. '**/*.c')")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    p.add_argument("--split-fractions", help="how --data is cut, e.g. 0.9,0.05,0.05 (default: the corpus's own)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--batch-size", type=int, default=50, help="parallel streams (default 50)")
    p.add_argument("--seq-len", type=int, default=100, help="window length (default 100)")
    p.add_argument("--save-losses", help="write the per-character losses (nats, float32) to this .npy file")
    p.add_argument("--unknown", choices=["error", "drop"], default="error",
                   help="characters the model never saw: error (default) or drop them")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")

    p = command("data", "List the named corpora or fetch one.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.add_parser("list", help="list the named corpora")
    g = data_sub.add_parser("get", help="download or build a named corpus into the cache")
    g.add_argument("name")
    g.add_argument("--source", help="a local file (or, for linux, a kernel tarball or folder) instead of downloading")
    g.add_argument("--url", help="download from this URL instead of the default")

    p = command("cells", "Find units that track features of the text: quotes, brackets, line position, ...")
    add_cells_arguments(p)

    p = command("demo", "Train a small LSTM on the built-in corpus for a few minutes, sample and evaluate it.")
    p.add_argument("--data", default="pystdlib", help="corpus (default pystdlib, built in, no network)")
    p.add_argument("--time-budget", default="3m", help="training time (default 3m)")
    p.add_argument("--out", help="run folder (default runs/demo-DATE-TIME)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    return parser


def add_cells_arguments(p) -> None:
    from rnnlens.analysis.features import FEATURES
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--text", required=True, help="UTF-8 file to run the model over")
    p.add_argument("--features", help="comma-separated built-in features to score (default all): "
                   + ", ".join(FEATURES))
    p.add_argument("--feature", action="append", default=[], metavar="NAME=REGEX",
                   help="add your own on/off feature, on over every match of REGEX (Python syntax); repeatable")
    p.add_argument("--top", type=int, default=3, help="best units to show per feature (default 3)")
    p.add_argument("--kinds", help="activations to score, comma-separated: cell, hidden, a gate (input, forget, "
                   "output, candidate, reset, update) or all (default: cell,hidden for an LSTM, else hidden)")
    p.add_argument("--raw-cells", action="store_true", help="correlate LSTM cells as c itself, not tanh(c)")
    p.add_argument("--max-chars", type=int, default=1_000_000,
                   help="use at most this many characters from the start of the text (default 1,000,000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write a gallery page (HTML) of the best unit of each feature")
    p.add_argument("--unknown", choices=["error", "drop", "replace"], default="error",
                   help="characters the model never saw: error (default), drop or replace them")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")


def add_unknown_arguments(p) -> None:
    p.add_argument("--unknown", choices=["error", "drop", "replace"], default="error",
                   help="prime characters the model never saw: error (default), drop or replace them")
    p.add_argument("--replacement", help="with --unknown replace: the character to use (default: a space)")


def add_train_arguments(p) -> None:
    from rnnlens.train import TrainConfig
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", help=f"text file, folder, or named corpus (default {d.data}; see `rnnlens data list`)")
    g.add_argument("--glob", help="with a folder: which files, e.g. '**/*.c' (shuffled with a fixed seed)")
    g.add_argument("--split", help="train,val,test fractions cut by position (default 0.9,0.05,0.05)")
    g.add_argument("--encoding-errors", choices=["strict", "replace", "ignore"],
                   help="invalid UTF-8: stop with an error (default), or replace / ignore the bad bytes")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["lstm", "gru", "rnn"], help="cell type (default lstm)")
    g.add_argument("--layers", type=int, help="stacked layers (default 1)")
    g.add_argument("--size", type=int, help="units per layer (default 512)")
    g.add_argument("--params", help="size the width to this parameter count instead of --size, e.g. 3.3M")
    g.add_argument("--dropout", type=float, help="dropout between layers and before the output, in [0, 1) (default 0.2)")
    g.add_argument("--input", choices=["embedding", "onehot"], help="input encoding (default embedding)")
    g.add_argument("--embedding-size", type=int, help="embedding width (default 64)")
    g.add_argument("--init", choices=["uniform", "torch"], help="uniform +-init-range like char-rnn (default), or torch's")
    g.add_argument("--init-range", type=float, help="default 0.08")
    g.add_argument("--forget-bias", type=float, help="LSTM forget-gate bias at init (default 1)")
    g = p.add_argument_group("optimization")
    g.add_argument("--batch-size", type=int, help=f"parallel streams B (default {d.batch_size})")
    g.add_argument("--seq-len", type=int, help=f"unrolled steps T per window (default {d.seq_len})")
    g.add_argument("--optimizer", choices=["rmsprop", "adam", "adamw", "sgd"], help=f"default {d.optimizer}")
    g.add_argument("--lr", type=float, help=f"learning rate (default {d.lr:g})")
    g.add_argument("--rmsprop-alpha", type=float, help="RMSProp decay (default 0.95)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-schedule", choices=["step", "cosine", "constant"],
                   help=f"cosine: to --min-lr-ratio over the run; step: x--lr-decay per epoch after --lr-decay-after (default {d.lr_schedule})")
    g.add_argument("--lr-decay", type=float, help="default 0.97")
    g.add_argument("--lr-decay-after", type=int, help="epochs (default 10)")
    g.add_argument("--min-lr-ratio", type=float, help="cosine floor as a fraction of --lr (default 0.1)")
    g.add_argument("--grad-clip", type=float, help="clip threshold, 0 = off (default 5)")
    g.add_argument("--clip-mode", choices=["norm", "value"], help="clip the global norm (default) or each value like char-rnn")
    g = p.add_argument_group("stopping and bookkeeping")
    g.add_argument("--max-epochs", type=float)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--time-budget", help="wall-clock training time, e.g. 90s, 10m, 2h")
    g.add_argument("--patience", type=int, help="stop after this many validations without improvement")
    g.add_argument("--eval-every", type=int, help=f"steps between validations on the whole val split (default {d.eval_every})")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: --eval-every)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (GPU)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (GPU)")
    g.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard events")
    g = p.add_argument_group("run folder")
    g.add_argument("--out", help="run folder to create (default runs/DATE-TIME)")
    g.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    g.add_argument("--force", action="store_true", help="overwrite the run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


MODEL_ARGS = ("model", "layers", "size", "dropout", "input", "embedding_size", "init", "init_range", "forget_bias")


def cmd_train(args) -> int:
    from rnnlens.corpus import load_corpus, parse_split
    from rnnlens.model import ModelConfig, count_parameters, parse_count, size_for_params
    from rnnlens.train import TrainConfig, Trainer, parse_duration

    train_fields = {f for f in TrainConfig.__dataclass_fields__}
    given = {k: v for k, v in vars(args).items() if v is not None and k in train_fields}
    if "time_budget" in given:
        given["time_budget"] = parse_duration(given["time_budget"])
    if "split" in given:
        given["split"] = parse_split(given["split"])
    progress = not args.quiet
    if args.resume:
        model_given = [k for k in MODEL_ARGS + ("params", "out") if getattr(args, k, None) is not None]
        if model_given:
            raise RnnlensError(f"--resume continues a run as it was; drop --{model_given[0].replace('_', '-')}")
        trainer = Trainer.resume(args.resume, overrides={k: v for k, v in given.items()
                                                         if k not in ("data",)}, progress=progress)
        print(f"resuming {args.resume} at step {trainer.state.step} (epoch {trainer.state.epoch}, "
              f"window {trainer.state.window})", file=sys.stderr)
    else:
        cfg = TrainConfig(**given)
        corpus = load_corpus(cfg.data, glob=cfg.glob, split=cfg.split, encoding_errors=cfg.encoding_errors,
                             progress=progress)
        model_kwargs = {k: getattr(args, k) for k in MODEL_ARGS if getattr(args, k) is not None}
        model_kwargs["cell"] = model_kwargs.pop("model", "lstm")
        model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **model_kwargs)
        if args.params is not None:
            if args.size is not None:
                raise RnnlensError("give either --size or --params, not both")
            model_cfg.size = size_for_params(model_cfg, parse_count(args.params))
        if not any([cfg.max_steps, cfg.max_epochs, cfg.time_budget]):
            raise RnnlensError("give a stopping rule: --max-epochs, --max-steps or --time-budget")
        out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
        trainer = Trainer.start(out, model_cfg, cfg, force=args.force, progress=progress, corpus=corpus)
        print(f"training a {model_cfg.layers}x{model_cfg.size} {model_cfg.cell.upper()} "
              f"({count_parameters(model_cfg):,} parameters) on {corpus.name} "
              f"({len(corpus):,} characters, vocabulary {len(corpus.vocab)}) into {out}", file=sys.stderr)
    state = trainer.run()
    report_training(trainer, state)
    return 130 if state.stop_reason and state.stop_reason.startswith("interrupted") else 0


def report_training(trainer, state) -> None:
    import math
    msg = f"stopped: {state.stop_reason} at step {state.step} (epoch {state.epoch})"
    if state.best_val is not None:
        msg += f"; best val {state.best_val:.4f} nats/char ({state.best_val / math.log(2):.3f} bits/char) at step {state.best_step}"
    print(msg, file=sys.stderr)
    if state.stop_reason and state.stop_reason.startswith("interrupted"):
        print(f"saved; continue with: rnnlens train --resume {trainer.run_dir}", file=sys.stderr)
    print(f"run folder: {trainer.run_dir}")


def read_prime(args) -> str | None:
    if args.prime_file:
        from rnnlens.corpus import read_text_file
        return read_text_file(args.prime_file)
    return args.prime


def cmd_sample(args) -> int:
    import rnnlens
    lm = rnnlens.load(args.run, device=args.device)
    if args.num_samples < 1:
        raise RnnlensError(f"--num-samples must be an integer >= 1; got {args.num_samples}")
    prime = read_prime(args)
    out = sys.stdout
    for n in range(args.num_samples):
        if n:
            out.write("\n" + "-" * 40 + "\n")
        seed = None if args.seed is None else args.seed + n
        if prime:
            out.write(prime)
        for ch in lm.stream(args.length, prime, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            argmax=args.argmax, seed=seed, unknown=args.unknown, replacement=args.replacement):
            out.write(ch)
            if ch == "\n":
                out.flush()
        out.write("\n")
        out.flush()
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    import rnnlens
    from rnnlens.corpus import parse_split
    lm = rnnlens.load(args.run, device=args.device)
    fractions = parse_split(args.split_fractions) if args.split_fractions else None
    result = lm.evaluate(data=args.data, split=args.split, batch_size=args.batch_size, seq_len=args.seq_len,
                         keep_losses=bool(args.save_losses), unknown=args.unknown, glob=args.glob,
                         split_fractions=fractions, encoding_errors=args.encoding_errors)
    if args.save_losses:
        np.save(args.save_losses, result.losses)
    info = {"run": str(args.run), "split": args.split, **result.to_dict()}
    if args.save_losses:
        info["losses_file"] = str(args.save_losses)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{args.split}: {result.loss:.4f} nats/char, {result.bpc:.4f} bits/char over {result.chars:,} characters")
    return 0


def cmd_data(args) -> int:
    from rnnlens import datasets
    if args.data_command in (None, "list"):
        for c in datasets.list_corpora():
            size = f"{c.chars:,} chars" if c.chars else "size varies"
            split = ",".join(f"{f:g}" for f in c.split)
            print(f"{c.name:16s} {size:>18s}  split {split:14s} {c.description}")
        return 0
    path = datasets.fetch(args.name, source=args.source, url=args.url, progress=True)
    print(path)
    return 0


TRACE_IN_RAM_BYTES = 1 << 29  # a larger trace goes to a temporary float16 file and is read memory-mapped


def cmd_cells(args) -> int:
    import tempfile
    from dataclasses import asdict

    import rnnlens
    from rnnlens.analysis.cells import EXACT_TOP, discover, gallery_entries, kinds_for
    from rnnlens.analysis.features import FEATURES, parse_feature_spec, resolve_features
    from rnnlens.corpus import read_text_file

    if args.top < 1:
        raise RnnlensError(f"--top must be an integer >= 1; got {args.top}")
    if args.max_chars < 2:
        raise RnnlensError(f"--max-chars must be an integer >= 2; got {args.max_chars}")
    custom = [parse_feature_spec(spec) for spec in args.feature]
    names = [n.strip() for n in args.features.split(",") if n.strip()] if args.features else list(FEATURES)
    features = resolve_features(names + custom)  # checked before the slow part
    lm = rnnlens.load(args.run, device=args.device)
    cfg = lm.config
    text = read_text_file(args.text)
    total = len(text)
    text = text[:args.max_chars]
    kinds = kinds_for(cfg.cell, args.kinds.split(",") if args.kinds else None)
    trace_names = [f"layer{i}.{k}" for i in range(cfg.layers) for k in kinds]
    if total > len(text) and not args.json:
        print(f"using the first {len(text):,} of {total:,} characters (--max-chars)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rnnlens-cells-") as tmp:
        big = len(text) * len(trace_names) * cfg.size * 4 > TRACE_IN_RAM_BYTES
        trace = lm.trace(text, names=trace_names, unknown=args.unknown, float16=big,
                         out=Path(tmp) / "trace.safetensors" if big else None, progress=not args.json)
        scores = discover(trace, features, kinds, cells="raw" if args.raw_cells else "tanh",
                          exact_top=max(EXACT_TOP, args.top), progress=not args.json)
        if args.out:
            from rnnlens.render.html import GalleryItem, gallery_page, write_html
            items = [GalleryItem(**asdict(e)) for e in gallery_entries(scores)]
            write_html(args.out, gallery_page(trace, items, title=f"Interpretable cells: {args.run} on {args.text}"))
    if args.json:
        print(json.dumps({"run": str(args.run), "text": str(args.text), "model": {"cell": cfg.cell, "layers": cfg.layers,
                                                                                  "size": cfg.size},
                          **scores.to_dict(args.top), **({"gallery": str(args.out)} if args.out else {})}))
    else:
        print(cells_table(scores, args.top, f"{cfg.cell} {cfg.layers}x{cfg.size} over {args.text}"))
        if args.out:
            print(f"gallery: {args.out}")
    return 0


def cells_table(scores, top: int, what: str) -> str:
    """The readable report of `rnnlens cells`: per feature, its best units as L:I kind score."""
    kinds = sorted({a.split(".", 1)[1] for a in scores.activations})
    cell_values = "tanh(c)" if scores.cells == "tanh" else "c"
    lines = [(f"{what}: {scores.chars:,} characters, {len(scores.activations) * scores.size:,} units "
              f"({', '.join(kinds)}{'; cells as ' + cell_values if 'cell' in kinds else ''})"),
             f"{'feature':18s} {'metric':6s} best units (layer:unit kind score)"]
    for f in scores.features:
        best = scores.best(f.name, top)
        if not best:
            shown = "not present in the text"
        elif f.metric == "r":
            shown = "   ".join(f"{u.label} {u.score:+.2f}" for u in best)
        else:
            shown = "   ".join(f"{u.label} {u.score:.3f} {'on' if u.sign > 0 else 'off'}" for u in best)
        lines.append(f"{f.name:18s} {f.metric:6s} {shown}")
    lines.append("r: Pearson correlation; auc: ROC AUC, 'on' = the unit is high inside, 'off' = low inside")
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from rnnlens.demo import run_demo
    from rnnlens.train import parse_duration
    run_demo(data=args.data, time_budget=parse_duration(args.time_budget), out=args.out, seed=args.seed,
             device=args.device)
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "data": cmd_data, "demo": cmd_demo,
            "cells": cmd_cells}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except RnnlensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rnnlens sample ... | head` closed the pipe: not an error
        try:
            sys.stdout = open("/dev/null", "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
