"""The `rnnlens` command: a thin layer over the Python API.

Every user error is a one-line `error: ...` on stderr and exit status 2; Ctrl-C exits 130
after saving what a command was working on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from rnnlens.errors import RnnlensError

EXAMPLES = {
    "train": """examples:
  rnnlens train --data input.txt --model lstm --layers 2 --size 256 --time-budget 10m --out runs/shakespeare
  rnnlens train --data linux/ --glob '**/*.c' --params 3.3M --model gru --max-epochs 20 --out runs/gru
  rnnlens train --resume runs/shakespeare --max-epochs 50
  rnnlens train --data big.txt --nproc 4 --batch-size 64 --max-epochs 5 --out runs/ddp   # 4 ranks (DDP)""",
    "sample": """examples:
  rnnlens sample runs/shakespeare --prime 'ROMEO:' --length 500 --temperature 0.8 --seed 1
  rnnlens sample runs/shakespeare --top-p 0.9 --num-samples 3
  rnnlens sample runs/shakespeare --prime-file start.txt --unknown drop --argmax""",
    "eval": """examples:
  rnnlens eval runs/shakespeare                       # the test split of the training corpus
  rnnlens eval runs/shakespeare --split val --json
  rnnlens eval runs/shakespeare --data other.txt --split-fractions 0,0,1 --save-losses losses.npy""",
    "trace": """examples:
  rnnlens trace runs/shakespeare --text act1.txt --out act1.trace.safetensors
  rnnlens trace runs/linux --text big.c --names layer1.cell,probs --float16 --out big.trace.safetensors""",
    "data": """examples:
  rnnlens data list
  rnnlens data get tinyshakespeare
  rnnlens data get linux --source linux-4.1.tar.xz""",
    "viz": """examples:
  rnnlens viz runs/shakespeare --text act1.txt --unit 1:42                  # tanh(c), as in the paper
  rnnlens viz runs/shakespeare --text act1.txt --unit 0:7 --what gate.forget --out forget.html
  rnnlens viz runs/linux --text sched.c --unit 1:42 --strip --start 2000 --length 300
  rnnlens viz runs/linux --text sched.c --unit 1:42 --length 1500 --out unit42.png""",
    "cells": """examples:
  rnnlens cells runs/shakespeare --text input.txt               # every built-in feature, cells and hidden
  rnnlens cells runs/py --text argparse.py --features bracket_depth,in_string,indent --top 5
  rnnlens cells runs/py --text argparse.py --feature 'todo=(?i)todo' --feature 'url=https?://\\S+' --json
  rnnlens cells runs/py --text argparse.py --kinds all --out gallery.html""",
    "demo": """examples:
  rnnlens demo                      # a few minutes on the built-in corpus
  rnnlens demo --time-budget 30s --out runs/quick""",
    "saturation": """examples:
  rnnlens saturation runs/shakespeare --text input.txt --max-chars 100000 --out figures/
  rnnlens saturation runs/gru --text input.txt --low 0.05 --high 0.95 --json > saturation.json

writes saturation.png (a panel per layer: each gate unit at its fraction of time left- and
right-saturated) and saturation.csv (layer, gate, unit, left, right) into --out.""",
    "timescales": """examples:
  rnnlens timescales runs/shakespeare --text input.txt --max-chars 100000 --out figures/
  rnnlens timescales runs/gru --text input.txt --json

per unit: the mean forget (LSTM) or update (GRU) gate f and the half-life ln(0.5)/ln(f) in
characters; writes timescales.png (a histogram per layer) and timescales.csv into --out.""",
    "gradients": """examples:
  rnnlens gradients runs/rnn runs/lstm runs/gru --text input.txt --max-lag 100 --out gradients.png
  rnnlens gradients runs/rnn --text input.txt --weight-scale 1 2 4 --max-lag 50 --json

the norm of d loss_t / d x_{t-k} and d loss_t / d h_{t-k} against the lag k, averaged over
--positions random positions t of the text: vanishing and exploding gradients, measured.""",
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

    p = command("trace", "Record every activation of a model over a text into a safetensors file.")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--out", required=True, help="trace file to write (.safetensors)")
    p.add_argument("--names", help="comma-separated activations to keep, e.g. layer1.cell,probs (default: all)")
    p.add_argument("--float16", action="store_true", help="store activations at half size")
    add_text_arguments(p)

    p = command("data", "List the named corpora or fetch one.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.add_parser("list", help="list the named corpora")
    g = data_sub.add_parser("get", help="download or build a named corpus into the cache")
    g.add_argument("name")
    g.add_argument("--source", help="a local file (or, for linux, a kernel tarball or folder) instead of downloading")
    g.add_argument("--url", help="download from this URL instead of the default")

    p = command("viz", "Colour a text by one unit's activation: a self-contained HTML page or a PNG.")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--unit", required=True, help="LAYER:INDEX, both from 0, e.g. 1:42")
    p.add_argument("--what", help="cell (shown as tanh(c)), hidden, or a gate: gate.input, gate.forget, gate.output, "
                   "gate.candidate (LSTM); gate.reset, gate.update, gate.candidate (GRU) (default: cell for an "
                   "LSTM, else hidden)")
    p.add_argument("--strip", action="store_true", help="the prediction strip: under each character the model's "
                   "most likely next characters (HTML only)")
    p.add_argument("--top", type=int, default=5, help="with --strip: how many next characters (default 5)")
    p.add_argument("--start", type=int, default=0, help="first character of the file to show (default 0); "
                   "the model still reads the file from its beginning")
    p.add_argument("--length", type=int, help="characters to show (default 10000 for HTML, 2000 for PNG, "
                   "400 with --strip)")
    p.add_argument("--out", help="page.html or picture.png (default RUN-LAYER-INDEX-WHAT.html here)")
    p.add_argument("--width", type=int, default=100, help="PNG: columns before a line wraps (default 100)")
    add_text_arguments(p, max_chars=False)
    p = command("cells", "Find units that track features of the text: quotes, brackets, line position, ...")
    add_cells_arguments(p)

    p = command("demo", "Train a small LSTM on the built-in corpus for a few minutes, sample and evaluate it.")
    p.add_argument("--data", default="pystdlib", help="corpus (default pystdlib, built in, no network)")
    p.add_argument("--time-budget", default="3m", help="training time (default 3m)")
    p.add_argument("--out", help="run folder (default runs/demo-DATE-TIME)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")

    p = command("saturation", "Gate saturation, the paper's figure: the fraction of characters each gate unit "
                "spends below --low (left-saturated) and above --high (right-saturated).")
    p.add_argument("run", help="run folder or .safetensors checkpoint of an LSTM or GRU")
    add_text_arguments(p)
    p.add_argument("--low", type=float, default=0.1, help="left-saturated below this (default 0.1)")
    p.add_argument("--high", type=float, default=0.9, help="right-saturated above this (default 0.9)")
    p.add_argument("--out", default=".", help="folder for saturation.png and saturation.csv (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object (summary and every unit's fractions)")

    p = command("timescales", "Memory time constants: each unit's mean forget (LSTM) or update (GRU) gate "
                "and its half-life ln(0.5)/ln(f) in characters.")
    p.add_argument("run", help="run folder or .safetensors checkpoint of an LSTM or GRU")
    add_text_arguments(p)
    p.add_argument("--out", default=".", help="folder for timescales.png and timescales.csv (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object (summary and every unit's values)")

    p = command("gradients", "Gradient flow through time: ||d loss_t / d x_{t-k}|| and ||d loss_t / d h_{t-k}|| "
                "against the lag k, for one or more models side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or .safetensors checkpoints (any cell type)")
    add_text_arguments(p)
    p.add_argument("--max-lag", type=int, default=100, help="largest lag k in characters (default 100)")
    p.add_argument("--positions", type=int, default=64, help="positions t averaged over (default 64)")
    p.add_argument("--seed", type=int, default=0, help="which positions are drawn (default 0)")
    p.add_argument("--weight-scale", type=float, nargs="+", default=[1.0], metavar="X",
                   help="multiply the recurrent weights W_hh by X (one curve per value; default 1)")
    p.add_argument("--out", default="gradients.png", help="the figure to write (default gradients.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object (per model: mean and quantiles per lag)")
    return parser


def add_text_arguments(p, max_chars: bool = True, max_chars_default: int | None = None) -> None:
    """The text a model reads (--text), and what to do with characters the model never saw."""
    p.add_argument("--text", required=True, metavar="FILE", help="UTF-8 text file to read")
    if max_chars:
        p.add_argument("--max-chars", type=int, metavar="N", default=max_chars_default,
                       help="read only the first N characters of it"
                       + (f" (default {max_chars_default:,})" if max_chars_default else " (default: all)"))
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--unknown", choices=["error", "drop", "replace"], default="error",
                   help="characters the model never saw: error (default), drop or replace them")
    p.add_argument("--replacement", help="with --unknown replace: the character to use (default: a space)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")


def add_cells_arguments(p) -> None:
    from rnnlens.analysis.features import FEATURES
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    add_text_arguments(p, max_chars_default=1_000_000)
    p.add_argument("--features", help="comma-separated built-in features to score (default all): "
                   + ", ".join(FEATURES))
    p.add_argument("--feature", action="append", default=[], metavar="NAME=REGEX",
                   help="add your own on/off feature, on over every match of REGEX (Python syntax); repeatable")
    p.add_argument("--top", type=int, default=3, help="best units to show per feature (default 3)")
    p.add_argument("--kinds", help="activations to score, comma-separated: cell, hidden, a gate (input, forget, "
                   "output, candidate, reset, update) or all (default: cell,hidden for an LSTM, else hidden)")
    p.add_argument("--raw-cells", action="store_true", help="correlate LSTM cells as c itself, not tanh(c)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write a gallery page (HTML) of the best unit of each feature")


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
    g.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel on N processes of this machine (DistributedDataParallel through "
                        "torch.distributed.run: one GPU each, or gloo on CPUs; --batch-size stays the global "
                        "batch); for several machines use torchrun, see docs/distributed.md")
    g = p.add_argument_group("run folder")
    g.add_argument("--out", help="run folder to create (default runs/DATE-TIME)")
    g.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    g.add_argument("--force", action="store_true", help="overwrite the run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


MODEL_ARGS = ("model", "layers", "size", "dropout", "input", "embedding_size", "init", "init_range", "forget_bias")


def cmd_train(args) -> int:
    from rnnlens import distributed
    if args.nproc is not None:
        if args.nproc < 1:
            raise RnnlensError(f"--nproc must be a number of processes >= 1, got {args.nproc}")
        if distributed.launched_by_torchrun():
            raise RnnlensError("--nproc starts the processes itself, but this one was started by torchrun; "
                               "drop --nproc (torchrun's --nproc-per-node sets the count)")
        if args.nproc > 1:
            return launch_ranks(args)
    try:
        return train_here(args)
    except Exception as e:
        ctx = distributed.current()
        if ctx.active and distributed.is_comm_error(e):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            first = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", first)  # gloo's source location
            raise RnnlensError(f"rank {ctx.rank} of {ctx.world} lost contact with the other ranks ({first[:200]}); "
                               "a rank died or the network failed; the last checkpoint is intact: continue with "
                               "--resume") from None
        raise
    finally:
        distributed.shutdown()


def launch_ranks(args) -> int:
    """`rnnlens train --nproc N ...`: the same command as N ranks under torch.distributed.run."""
    from rnnlens import distributed
    argv, skip = [], False
    for a in args.argv:  # the command line as given, less --nproc (the ranks must not launch again)
        if skip:
            skip = False
            continue
        key = a.split("=", 1)[0]
        if len(key) >= 4 and "--nproc".startswith(key):  # argparse also takes an abbreviation
            skip = "=" not in a
        else:
            argv.append(a)
    if args.resume:
        run_dir = args.resume
    else:
        run_dir = args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
        if not args.out:  # one name for all ranks (each would read its own clock)
            argv += ["--out", run_dir]
    return distributed.launch(args.nproc, argv, run_dir)


def train_here(args) -> int:
    from rnnlens import distributed
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
        if trainer.dist.is_main:
            print(f"resuming {args.resume} at step {trainer.state.step} (epoch {trainer.state.epoch}, "
                  f"window {trainer.state.window}){ranks_note(trainer)}", file=sys.stderr)
    else:
        cfg = TrainConfig(**given)
        ctx = distributed.setup(cfg.device)
        if ctx.active and not args.out:
            raise RnnlensError("with several ranks give --out (each rank would name its own run folder otherwise)")
        with ctx.local_main_first():  # one rank per machine prepares the corpus, the others find it cached
            corpus = load_corpus(cfg.data, glob=cfg.glob, split=cfg.split, encoding_errors=cfg.encoding_errors,
                                 progress=progress and ctx.is_main)
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
        if trainer.dist.is_main:
            print(f"training a {model_cfg.layers}x{model_cfg.size} {model_cfg.cell.upper()} "
                  f"({count_parameters(model_cfg):,} parameters) on {corpus.name} "
                  f"({len(corpus):,} characters, vocabulary {len(corpus.vocab)}) into {out}{ranks_note(trainer)}",
                  file=sys.stderr)
    state = trainer.run()
    if trainer.dist.is_main:
        report_training(trainer, state)
    return 130 if state.stop_reason and state.stop_reason.startswith("interrupted") else 0


def ranks_note(trainer) -> str:
    d = trainer.dist
    if not d.active:
        return ""
    return (f" on {d.world} ranks ({d.backend}, {trainer.cfg.batch_size // d.world} of the "
            f"{trainer.cfg.batch_size} streams each)")


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


def cmd_trace(args) -> int:
    import rnnlens
    lm = rnnlens.load(args.run, device=args.device)
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    trace = lm.trace(read_text_argument(args), names=names, float16=args.float16, out=args.out,
                     unknown=args.unknown, replacement=args.replacement, progress=sys.stderr.isatty())
    print(f"traced {len(trace):,} characters ({len(trace.names())} arrays, largest recompute error "
          f"{trace.max_recompute_error:.1e}) into {args.out}")
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


def resolve_activation(what: str | None, cell: str) -> str:
    """--what as a trace activation name: 'forget' and 'gate.forget' both mean gate.forget."""
    from rnnlens.trace import LAYER_ACTIVATIONS
    valid = LAYER_ACTIVATIONS[cell]
    if what is None:
        return "cell" if cell == "lstm" else "hidden"
    for name in (what, f"gate.{what}"):
        if name in valid:
            return name
    raise RnnlensError(f"--what {what} is not an activation of this {cell.upper()}; choose from {', '.join(valid)}")


def cmd_viz(args) -> int:
    import rnnlens
    from rnnlens.corpus import read_text_file
    from rnnlens.render.colours import display_for, unit_label
    from rnnlens.render.html import unit_page, write_html
    from rnnlens.render.textfig import plot_unit_text
    from rnnlens.trace import parse_unit

    lm = rnnlens.load(args.run, device=args.device)
    cfg = lm.config
    layer, index = parse_unit(args.unit, cfg.layers, cfg.size)
    what = resolve_activation(args.what, cfg.cell)
    run_name = Path(args.run).name.removesuffix(".safetensors")
    default_out = f"{run_name}-{layer}-{index}-{what.removeprefix('gate.')}{'-strip' if args.strip else ''}.html"
    out = Path(args.out or default_out)
    png = out.suffix.lower() == ".png"
    if out.suffix.lower() not in (".html", ".htm", ".png"):
        raise RnnlensError(f"--out {out} must end in .html or .png")
    if png and args.strip:
        raise RnnlensError("the prediction strip is drawn as HTML only; use --out with .html, or drop --strip")
    if args.strip and not 1 <= args.top <= len(lm.vocab):
        raise RnnlensError(f"--top must be 1..{len(lm.vocab)} (the vocabulary size); got {args.top}")
    if args.width < 1:
        raise RnnlensError(f"--width must be >= 1 column; got {args.width}")
    length = args.length if args.length is not None else 400 if args.strip else 2000 if png else 10_000
    if length < 1:
        raise RnnlensError(f"--length must be >= 1; got {length}")
    text = read_text_file(args.text, encoding_errors=args.encoding_errors)
    if not 0 <= args.start < len(text):
        raise RnnlensError(f"--start {args.start} is outside {args.text}, which has {len(text):,} characters")
    end = min(len(text), args.start + length)

    # The model reads the file from its beginning, so that its state at --start is the real one,
    # and stops at the span's end; only the arrays the picture needs are kept.
    name = f"layer{layer}.{what}"
    trace = lm.trace(text[:end], names=[name, "probs"] if args.strip else [name], unknown=args.unknown,
                     replacement=args.replacement)
    # With --unknown drop the trace is shorter than the text: the span is its last characters.
    shown = len(lm.vocab.encode(text[args.start:end], unknown=args.unknown, replacement=args.replacement))
    if shown == 0:
        raise RnnlensError(f"characters {args.start}..{end} hold none the model knows; choose another --start")
    first = len(trace) - shown
    title = f"{run_name}: {unit_label(name, index, display_for(name))}"
    where = f"characters {args.start:,}\u2013{end:,} of {len(text):,}"
    if png:
        plot_unit_text(trace, name, index, first, len(trace), out, width=args.width, title=title)
    else:
        subtitle = f"{args.text}, {where} \u00b7 {cfg.cell.upper()} {cfg.layers}x{cfg.size} from {lm.path}"
        write_html(out, unit_page(trace, name, index, first, len(trace), title=title, subtitle=subtitle,
                                  strip=args.strip, top=args.top, note=where))
    if end - args.start < len(text):
        print(f"{args.text}: showing {where}; --start and --length show others", file=sys.stderr)
    print(out)
    return 0


def cmd_cells(args) -> int:
    from dataclasses import asdict

    import rnnlens
    from rnnlens.analysis.cells import EXACT_TOP, discover, gallery_entries, kinds_for
    from rnnlens.analysis.features import FEATURES, parse_feature_spec, resolve_features

    if args.top < 1:
        raise RnnlensError(f"--top must be an integer >= 1; got {args.top}")
    custom = [parse_feature_spec(spec) for spec in args.feature]
    names = [n.strip() for n in args.features.split(",") if n.strip()] if args.features else list(FEATURES)
    features = resolve_features(names + custom)  # checked before the slow part
    lm = rnnlens.load(args.run, device=args.device)
    cfg = lm.config
    text = read_text_argument(args)
    if len(text) < 2:
        raise RnnlensError(f"{args.text} has {len(text)} character; scoring units needs at least 2")
    kinds = kinds_for(cfg.cell, args.kinds.split(",") if args.kinds else None)
    trace_names = [f"layer{i}.{k}" for i in range(cfg.layers) for k in kinds]
    with analysis_trace(lm, text, trace_names, args) as trace:
        scores = discover(trace, features, kinds, cells="raw" if args.raw_cells else "tanh",
                          exact_top=max(EXACT_TOP, args.top), progress=not args.json and sys.stderr.isatty())
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


IN_MEMORY_TRACE_BYTES = 1 << 30  # larger traces go to a temporary file and are read memory-mapped


def read_text_argument(args) -> str:
    from rnnlens.corpus import read_text_file
    from rnnlens.model import check_range
    text = read_text_file(args.text, encoding_errors=args.encoding_errors)
    if getattr(args, "max_chars", None) is not None:
        check_range("--max-chars", args.max_chars, 1, None, integer=True)
        text = text[:args.max_chars]
    return text


@contextmanager
def analysis_trace(lm, text: str, names: list[str], args):
    """Trace only `names`; in RAM when small, else through a temporary file that lives as long as the trace
    (float32 either way, so that no value moves across a threshold by rounding)."""
    options = dict(names=names, unknown=args.unknown, replacement=args.replacement, progress=sys.stderr.isatty())
    if len(text) * lm.config.size * len(names) * 4 <= IN_MEMORY_TRACE_BYTES:
        yield lm.trace(text, **options)
        return
    with tempfile.TemporaryDirectory(prefix="rnnlens-trace-") as folder:
        yield lm.trace(text, out=Path(folder) / "trace.safetensors", **options)


def output_folder(path) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlensError(f"cannot create the output folder {folder}: {e.strerror or e}; choose another --out") \
            from None
    return folder


def write_analysis(args, result, stem: str, plot, title: str) -> tuple[Path, Path]:
    """An analysis's figure and CSV as <--out>/<stem>.png and .csv; with --json, one JSON object on stdout."""
    folder = output_folder(args.out)
    figure = plot(result, folder / f"{stem}.png", title=title)
    table = result.write_csv(folder / f"{stem}.csv")
    if args.json:
        print(json.dumps({"run": str(args.run), "text": str(args.text), **result.to_dict(), "figure": str(figure),
                          "csv": str(table)}))
    return figure, table


def cmd_saturation(args) -> int:
    import rnnlens
    from rnnlens.analysis.gradients import model_label
    from rnnlens.analysis.saturation import check_thresholds, gate_saturation, saturation_names
    from rnnlens.render.plots import plot_saturation
    check_thresholds(args.low, args.high)
    lm = rnnlens.load(args.run, device=args.device)
    names = saturation_names(lm.config.cell, lm.config.layers)  # an RNN stops here, before any reading
    text = read_text_argument(args)
    with analysis_trace(lm, text, names, args) as trace:
        sat = gate_saturation(trace, low=args.low, high=args.high)
    figure, table = write_analysis(args, sat, "saturation", plot_saturation,
                                   f"{model_label(lm.path)}: {sat.cell.upper()} {sat.layers}x{sat.size} gate "
                                   f"saturation over {sat.chars:,} characters")
    if args.json:
        return 0
    print(f"{model_label(lm.path)}: {sat.cell.upper()} {sat.layers}x{sat.size} over {sat.chars:,} characters; "
          f"left-saturated < {sat.low:g}, right-saturated > {sat.high:g}")
    for row in sat.summary():
        print(f"layer {row['layer']} {row['gate']:7s} mean left {row['mean_left']:.3f}  mean right "
              f"{row['mean_right']:.3f}  units mostly left {row['mostly_left']:>4d}/{row['units']}  "
              f"mostly right {row['mostly_right']:>4d}/{row['units']}")
    print("(mostly: saturated more than half of the time)")
    print(f"wrote {figure} and {table}")
    return 0


def cmd_timescales(args) -> int:
    import rnnlens
    from rnnlens.analysis.gradients import model_label
    from rnnlens.analysis.timescales import LONG, memory_timescales, timescale_names
    from rnnlens.render.plots import plot_half_lives
    lm = rnnlens.load(args.run, device=args.device)
    names = timescale_names(lm.config.cell, lm.config.layers)  # an RNN stops here, before any reading
    text = read_text_argument(args)
    with analysis_trace(lm, text, names, args) as trace:
        ts = memory_timescales(trace)
    figure, table = write_analysis(args, ts, "timescales", plot_half_lives,
                                   f"{model_label(lm.path)}: {ts.cell.upper()} {ts.layers}x{ts.size} memory "
                                   f"half-lives, ln(0.5)/ln({ts.gate}), over {ts.chars:,} characters")
    if args.json:
        return 0
    print(f"{model_label(lm.path)}: {ts.cell.upper()} {ts.layers}x{ts.size} over {ts.chars:,} characters; "
          f"half-life = ln(0.5)/ln({ts.gate} gate) in characters, from its mean (geometric mean in brackets)")

    def fmt(v):
        return "inf" if v is None else f"{v:.3g}"
    for row in ts.summary():
        a, g = row["half_life"], row["half_life_geometric"]
        over = "  ".join(f"> {n}: {a[f'over_{n}']:>3d} ({g[f'over_{n}']})" for n in LONG)
        print(f"layer {row['layer']}  mean {ts.gate} {row['mean_gate']:.3f}  half-life median {fmt(a['median'])} "
              f"({fmt(g['median'])})  quartiles {fmt(a['q25'])}-{fmt(a['q75'])} ({fmt(g['q25'])}-{fmt(g['q75'])})  "
              f"units {over}  infinite {a['infinite']}")
    print(f"wrote {figure} and {table}")
    return 0


def cmd_gradients(args) -> int:
    import rnnlens
    from rnnlens.analysis.gradients import gradient_flow
    from rnnlens.model import check_range
    from rnnlens.render.plots import gradient_flow_label, plot_gradient_flow
    for scale in args.weight_scale:
        check_range("--weight-scale", scale, 0, None, low_open=True)
    text = read_text_argument(args)
    flows, runs = [], []
    for run in args.runs:
        lm = rnnlens.load(run, device=args.device)
        for scale in args.weight_scale:
            flows.append(gradient_flow(lm, text, max_lag=args.max_lag, positions=args.positions, seed=args.seed,
                                       weight_scale=scale, unknown=args.unknown, replacement=args.replacement))
            runs.append(str(run))
    out = Path(args.out)
    if out.parent != Path("."):
        output_folder(out.parent)
    figure = plot_gradient_flow(flows, out)
    if args.json:
        print(json.dumps({"text": str(args.text), "figure": str(figure),
                          "models": [{"run": run, **flow.to_dict()} for run, flow in zip(runs, flows)]}))
        return 0
    lags = sorted({k for k in (0, 1, 10, 50, 100) if k <= args.max_lag} | {args.max_lag})
    print(f"mean gradient norm over {len(flows[0].positions)} positions; decay: its mean factor per character "
          f"from lag 1 to lag {args.max_lag}")
    width = max(32, *(len(gradient_flow_label(f)) + 1 for f in flows))
    for flow in flows:
        print(f"{gradient_flow_label(flow):{width}s}" + "".join(f"{'lag ' + str(k):>11s}" for k in lags))
        for series in ["input"] + [f"layer{i}.{w}" for i in range(flow.layers) for w in ("hidden", "cell")
                                   if f"layer{i}.{w}" in flow.norms]:
            m = flow.mean(series)
            decay = flow.decay_per_lag(series)
            print(f"  {series:{width - 2}s}" + "".join(f"{m[k]:11.3g}" for k in lags)
                  + (f"   decay {decay:.3f}/char" if decay is not None else ""))
    print(f"wrote {figure}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "trace": cmd_trace, "viz": cmd_viz, "cells": cmd_cells,
            "saturation": cmd_saturation, "timescales": cmd_timescales, "gradients": cmd_gradients,
            "data": cmd_data, "demo": cmd_demo}


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `train --nproc` starts the same command again in each rank
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
