"""`rnnlens train`, `demo`, `sample`, `eval` and `data`: make a model, use it, get a corpus."""

from __future__ import annotations

import argparse
import math
import sys

from rnnlens.cli.common import add_device_argument, add_unknown_arguments, command, print_json, say
from rnnlens.errors import RnnlensError

TRAIN_EXAMPLES = """examples:
  rnnlens train --data input.txt --model lstm --layers 2 --size 256 --time-budget 10m --out runs/shakespeare
  rnnlens train --data linux/ --glob '**/*.c' --params 3.3M --model gru --max-epochs 20 --out runs/gru
  rnnlens train --resume runs/shakespeare --max-epochs 50
  rnnlens train --data input.txt --model ffn --context 20 --size 512 --time-budget 5m --out runs/nnn20
  rnnlens train --data input.txt --size 128 --time-budget 3m --snapshot-every 100 --out runs/lstm
  rnnlens train --data big.txt --nproc 4 --batch-size 64 --max-epochs 5 --out runs/ddp   # 4 ranks (DDP)"""
DEMO_EXAMPLES = """examples:
  rnnlens demo                      # a few minutes on the built-in corpus
  rnnlens demo --time-budget 30s --out runs/quick"""
SAMPLE_EXAMPLES = """examples:
  rnnlens sample runs/shakespeare --prime 'ROMEO:' --length 500 --temperature 0.8 --seed 1
  rnnlens sample runs/shakespeare --top-p 0.9 --num-samples 3
  rnnlens sample runs/shakespeare --prime-file start.txt --unknown drop --argmax
  rnnlens sample runs/shakespeare --steer 1:42=0.9 --steer layer0.gate.forget:7=1 --seed 1
  rnnlens sample runs/shakespeare --num-samples 16 --batch --length 200"""
EVAL_EXAMPLES = """examples:
  rnnlens eval runs/shakespeare                       # the test split of the training corpus
  rnnlens eval runs/shakespeare --split val --json
  rnnlens eval runs/shakespeare --data other.txt --split-fractions 0,0,1 --save-losses losses.npy"""
DATA_EXAMPLES = """examples:
  rnnlens data list
  rnnlens data get tinyshakespeare
  rnnlens data get linux --source linux-4.1.tar.xz"""


def add_parsers(sub) -> None:
    p = command(sub, "train", "Train a model on a text file, a folder of files, or a named corpus.", run_train,
                TRAIN_EXAMPLES)
    add_train_arguments(p)

    p = command(sub, "demo", "Train a small LSTM on the built-in corpus for a few minutes, sample and evaluate it.",
                run_demo, DEMO_EXAMPLES)
    p.add_argument("--data", default="pystdlib", help="corpus (default pystdlib, built in, no network)")
    p.add_argument("--time-budget", default="3m", help="training time (default 3m)")
    p.add_argument("--out", help="run folder (default runs/demo-DATE-TIME)")
    p.add_argument("--seed", type=int, default=0)
    add_device_argument(p, "auto")

    p = command(sub, "sample", "Generate text from a trained model, streaming to stdout.", run_sample, SAMPLE_EXAMPLES)
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
    p.add_argument("--batch", action="store_true", help="draw the --num-samples samples together, one batched step "
                   "per character (faster per character; printed when all are done)")
    p.add_argument("--steer", action="append", metavar="LAYER:UNIT=VALUE",
                   help="clamp a unit while sampling, prime included: 1:42=0.9 (the cell of an LSTM, else the hidden "
                   "state), layer0.gate.forget:7=1, 1:3,4=-1; repeatable (docs/interventions.md)")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights of the sampling step: auto = float16 at batch 1 on a CPU (2x faster, samples can "
                   "differ from float32 at near ties), float32 elsewhere")
    add_unknown_arguments(p, "prime characters")
    add_device_argument(p)

    p = command(sub, "eval", "Cross-entropy of a model over a whole split, in nats and bits per character.", run_eval,
                EVAL_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint, or an n-gram folder (`rnnlens ngram`)")
    p.add_argument("--data", help="corpus to score (default: the one the model was trained on)")
    p.add_argument("--glob", help="with a folder for --data: which files (e.g. '**/*.c')")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    p.add_argument("--split-fractions", help="how the corpus is cut, e.g. 0.9,0.05,0.05, or 0,0,1 to score all of "
                   "--data as the test split (default: the corpus's own)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--batch-size", type=int, default=50, help="parallel streams (default 50; RNNs only)")
    p.add_argument("--seq-len", type=int, default=100, help="window length (default 100; RNNs only)")
    p.add_argument("--save-losses", help="write the per-character losses (nats, float32) to this .npy file")
    p.add_argument("--unknown", choices=["error", "drop"], default="error",
                   help="characters the model never saw: error (default) or drop them")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_device_argument(p)

    p = command(sub, "data", "List the named corpora or fetch one.", run_data, DATA_EXAMPLES)
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    data_sub.add_parser("list", help="list the named corpora")
    g = data_sub.add_parser("get", help="download or build a named corpus into the cache")
    g.add_argument("name")
    g.add_argument("--source", help="a local file (or, for linux, a kernel tarball or folder) instead of downloading")
    g.add_argument("--url", help="download from this URL instead of the default")


def add_train_arguments(p) -> None:
    from rnnlens.trainer import TrainConfig
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", help=f"text file, folder, or named corpus (default {d.data}; see `rnnlens data list`); "
                   "with --resume: where the run's text is now, if it moved")
    g.add_argument("--glob", help="with a folder: which files, e.g. '**/*.c' (shuffled with a fixed seed)")
    g.add_argument("--split", help="train,val,test fractions cut by position (default 0.9,0.05,0.05)")
    g.add_argument("--encoding-errors", choices=["strict", "replace", "ignore"],
                   help="invalid UTF-8: stop with an error (default), or replace / ignore the bad bytes")
    g.add_argument("--preset", choices=["char-rnn", "paper"],
                   help="a named set of settings under the flags given: char-rnn's defaults exactly, or the paper's "
                   "training (RMSProp, truncated BPTT, 50 epochs, early stopping; docs/training.md)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["lstm", "gru", "rnn", "ffn"],
                   help="cell type (default lstm); ffn: the n-NN baseline, a feed-forward net on the last "
                   "--context characters")
    g.add_argument("--context", type=int, help="--model ffn: characters it sees, n (default 20)")
    g.add_argument("--layers", type=int, help="stacked layers (default 1)")
    g.add_argument("--size", type=int, help="units per layer (default 512; with no other shape flag, 384 for a "
                   "--time-budget run planned under 3,500 updates, 768 from 9,000; docs/training.md)")
    g.add_argument("--params", help="size the width to this parameter count instead of --size, e.g. 3.3M")
    g.add_argument("--dropout", type=float, help="dropout between layers and before the output, in [0, 1) (default: 0 for a run "
                   "planned to read its text under 2.5 times, 0.2 from 2.5 passes (on at the first validation that "
                   "does not improve; 0.4 at a wide gap: --wide-gap-dropout), from 7 on 0.4, down to 0.2 for a text "
                   "of more bits per parameter of the default 1x512 under lzma (under 12 passes raised to 0.4 at a "
                   "wide gap); an RNN half as much, 0.1 from 7 passes, the bits from 12; docs/training.md)")
    g.add_argument("--dropout-on-plateau", action=argparse.BooleanOptionalAction, default=None,
                   help="train without dropout until a validation does not improve, then with --dropout (default: on "
                   "for the 0.2 of a run planned to read its text 2.5-7 times, when it has a validation split)")
    g.add_argument("--wide-gap-dropout", type=float,
                   help="the dropout a wide gap between the validation and the training loss takes: with "
                   "--dropout-on-plateau it comes on instead of --dropout at a plateau 1.4x the training loss or "
                   "more; without, --dropout rises to it at the first validation 1.3x or more (default: 0.4 for a "
                   "run planned to read its text 2.5-7 times, and 7-12 times where its dropout is under 0.4, when it "
                   "has a validation split; an RNN's 0.2, at a plateau only)")
    g.add_argument("--input", choices=["embedding", "onehot"], help="input encoding (default embedding)")
    g.add_argument("--embedding-size", type=int, help="embedding width (default 64)")
    g.add_argument("--init", choices=["uniform", "torch"], help="uniform +-init-range like char-rnn (default), or torch's")
    g.add_argument("--init-range", type=float, help="default 0.08")
    g.add_argument("--forget-bias", type=float, help="LSTM forget-gate bias at init (default 1)")
    g = p.add_argument_group("optimization")
    g.add_argument("--batch-size", type=int, help="parallel streams B (default: 16 for a run planned under 1,200 "
                   "updates, 32 from 1,200 on; docs/training.md)")
    g.add_argument("--seq-len", type=int, help=f"unrolled steps T per window (default {d.seq_len})")
    g.add_argument("--optimizer", choices=["rmsprop", "adam", "adamw", "sgd"], help=f"default {d.optimizer}")
    g.add_argument("--lr", type=float, help=f"learning rate (default {d.lr:g}; without --optimizer, a GRU or an RNN "
                   "in a run planned to read 1.1M characters or more takes 0.002; docs/training.md)")
    g.add_argument("--rmsprop-alpha", type=float, help="RMSProp decay (default 0.95)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-schedule", choices=["step", "cosine", "wsd", "constant"],
                   help=f"cosine: to --min-lr-ratio over the run; wsd: constant, then linear to --min-lr-ratio over the "
                   f"run's last --decay-fraction; step: x--lr-decay per epoch after --lr-decay-after "
                   f"(default {d.lr_schedule})")
    g.add_argument("--lr-decay", type=float, help="default 0.97")
    g.add_argument("--lr-decay-after", type=int, help="epochs (default 10)")
    g.add_argument("--min-lr-ratio", type=float, help="cosine and wsd floor as a fraction of --lr (default 0.1)")
    g.add_argument("--decay-fraction", type=float, help=f"wsd: the share of the planned run over which the rate "
                   f"decays (default {d.decay_fraction:g})")
    g.add_argument("--average-fraction", type=float, help=f"end with the mean of the weights over this last share of "
                   f"the planned run when it validates better than the last update's; 0 = never (default "
                   f"{d.average_fraction:g})")
    g.add_argument("--grad-clip", type=float, help="clip threshold, 0 = off (default 5)")
    g.add_argument("--clip-mode", choices=["norm", "value"], help="clip the global norm (default) or each value like "
                   "char-rnn")
    g = p.add_argument_group("stopping and bookkeeping (on --resume, a new stopping rule replaces the old one)")
    g.add_argument("--max-epochs", type=float)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--time-budget", help="wall-clock training time, e.g. 90s, 10m, 2h")
    g.add_argument("--patience", type=int, help="stop after this many validations without improvement")
    g.add_argument("--eval-every", type=int, help=f"steps between validations on the whole val split (default "
                   f"{d.eval_every})")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: --eval-every)")
    g.add_argument("--snapshot-every", type=int, metavar="N", help="also keep the weights every N steps in "
                   "RUN/snapshots/ (for `rnnlens kl`; default: none)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: torch's, one per core; a --time-budget run takes fewer while other "
                        "processes keep cores busy, since a thread on a busy core stalls every update)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="bit-reproducible training: the same seed gives the same weights and --resume is exact, at "
                        "the same thread count (default on; see docs/training.md)")
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


def training_options(args, keys) -> dict:
    """The options among `keys` the user gave (argparse leaves the others None)."""
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def run_train(args) -> int:
    from rnnlens import plan
    options = training_options(args, plan.TRAIN_OPTIONS + plan.ARCHITECTURE_OPTIONS + ("preset",))
    if args.nproc is not None and args.nproc != 1:
        return plan.launch_ranks(args.nproc, args.argv, resume=args.resume, out=args.out,
                                 batch_size=args.batch_size)
    trainer, state = plan.train(resume=args.resume, out=args.out, force=args.force, progress=not args.quiet,
                                **options)
    if not trainer.dist.is_main:
        return 0
    say(plan.stop_message(trainer, state))
    interrupted = bool(state.stop_reason and state.stop_reason.startswith("interrupted"))
    if interrupted:
        say(f"saved; continue with: rnnlens train --resume {trainer.run_dir}")
    print(f"run folder: {trainer.run_dir}")
    return 130 if interrupted else 0


def run_demo(args) -> int:
    from rnnlens.demo import run_demo as demo
    from rnnlens.trainer import parse_duration
    demo(data=args.data, time_budget=parse_duration(args.time_budget), out=args.out, seed=args.seed,
         device=args.device)
    return 0


def run_sample(args) -> int:
    from rnnlens.corpus import read_text_file
    from rnnlens.workflows.inspect import load_rnn
    if args.num_samples < 1:
        raise RnnlensError(f"--num-samples must be an integer >= 1; got {args.num_samples}")
    if args.length < 1:
        raise RnnlensError(f"--length must be an integer >= 1; got {args.length}")
    from rnnlens.interventions import steer
    lm = load_rnn(args.run, args.device, "sampling")
    cfg = lm.config
    interventions = steer(args.steer, cfg.cell, cfg.layers, cfg.size) if args.steer else None
    prime = read_text_file(args.prime_file) if args.prime_file else args.prime
    out = sys.stdout
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, argmax=args.argmax,
                   unknown=args.unknown, replacement=args.replacement, interventions=interventions,
                   precision=args.precision)
    if args.batch:
        samples = lm.sample(args.length, prime, num_samples=args.num_samples, seed=args.seed, **options)
        out.write(("\n" + "-" * 40 + "\n").join((prime or "") + s for s in samples) + "\n")
        out.flush()
        return 0
    for n in range(args.num_samples):
        seed = None if args.seed is None else args.seed + n
        chars = lm.stream(args.length, prime, seed=seed, **options)
        first = next(chars)  # a bad prime or option fails here, before anything is printed
        out.write(("\n" + "-" * 40 + "\n" if n else "") + (prime or "") + first)
        for ch in chars:
            out.write(ch)
            if ch == "\n":
                out.flush()
        out.write("\n")
        out.flush()
    return 0


def run_eval(args) -> int:
    import numpy as np

    from rnnlens.runs import load_model
    model = load_model(args.run, args.device)
    rnn_only = {"batch_size": args.batch_size, "seq_len": args.seq_len} if model.kind == "rnn" else {}
    result = model.evaluate(data=args.data, split=args.split, keep_losses=bool(args.save_losses),
                            unknown=args.unknown, glob=args.glob, split_fractions=args.split_fractions,
                            encoding_errors=args.encoding_errors, **rnn_only)
    if args.save_losses:
        np.save(args.save_losses, result.losses)
    info = {"run": str(args.run), "split": args.split, **result.to_dict()}
    if args.save_losses:
        info["losses_file"] = str(args.save_losses)
    if args.json:
        print_json(info)
    else:
        print(f"{args.split}: {result.loss:.4f} nats/char, {result.loss / math.log(2):.4f} bits/char over "
              f"{result.chars:,} characters")
    return 0


def run_data(args) -> int:
    from rnnlens import datasets
    if args.data_command in (None, "list"):
        for c in datasets.list_corpora():
            size = f"{c.chars:,} chars" if c.chars else "size varies"
            split = ",".join(f"{f:g}" for f in c.split)
            print(f"{c.name:16s} {size:>18s}  split {split:14s} {c.description}")
        return 0
    print(datasets.fetch(args.name, source=args.source, url=args.url, progress=True))
    return 0
