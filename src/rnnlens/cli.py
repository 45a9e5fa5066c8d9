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
  rnnlens train --data input.txt --model ffn --context 20 --size 512 --time-budget 5m --out runs/nnn20
  rnnlens train --data input.txt --size 128 --time-budget 3m --snapshot-every 100 --out runs/lstm
  rnnlens train --data big.txt --nproc 4 --batch-size 64 --max-epochs 5 --out runs/ddp   # 4 ranks (DDP)""",
    "sample": """examples:
  rnnlens sample runs/shakespeare --prime 'ROMEO:' --length 500 --temperature 0.8 --seed 1
  rnnlens sample runs/shakespeare --top-p 0.9 --num-samples 3
  rnnlens sample runs/shakespeare --prime-file start.txt --unknown drop --argmax""",
    "eval": """examples:
  rnnlens eval runs/shakespeare                       # the test split of the training corpus
  rnnlens eval runs/shakespeare --split val --json
  rnnlens eval runs/shakespeare --data other.txt --split-fractions 0,0,1 --save-losses losses.npy""",
    "ngram": """examples:
  rnnlens ngram --data tinyshakespeare.txt --order 20 --out ngrams/shake20
  rnnlens ngram --data linux/ --glob '**/*.c' --order 9 --out ngrams/linux9
  rnnlens ngram --data input.txt --order 3 --smoothing addk --k 0.1 --out ngrams/addk3
  rnnlens eval ngrams/shake20 --split val

interpolated modified Kneser-Ney (Chen & Goodman) by default; docs/baselines.md has the exact rules.""",
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
    "report": """examples:
  rnnlens report runs/shakespeare                                  # the first 20,000 characters of its test split
  rnnlens report runs/shakespeare --text act1.txt --out act1-report.html
  rnnlens report runs/linux --max-chars 100000 --seed 3

writes one self-contained HTML page (no network needed; send it, open it anywhere): the model card,
training curves, samples at temperatures 0.5 / 0.8 / 1.0, the test loss, the interpretable units with
their prediction strips, gate saturation, memory time constants and gradient flow, each explained.""",
    "grid": """examples:
  rnnlens grid --data warandpeace --match-params --time-budget 30m --out grids/wp --dry-run
  rnnlens grid --data warandpeace --types lstm,gru,rnn --layers 1,2,3 --sizes 64,128,256,512 \\
      --match-params --max-epochs 50 --optimizer rmsprop --lr 2e-3 --batch-size 100 --out grids/wp --workers 2
  rnnlens grid --data input.txt --types lstm,rnn --layers 1 --sizes 32,64 --max-steps 500 --out grids/small

re-running the same command skips finished cells, resumes interrupted ones and retries failed ones;
writes GRID/table.md, table.csv, table.html, results.csv, map.png, map.json and grid.json.""",
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
    "compare": """examples:
  rnnlens compare runs/lstm ngrams/20 --text test.txt --out compare/              # LSTM against a 20-gram
  rnnlens compare runs/big runs/small --text sched.c --pair '{}' --pair '()' --bins log --out compare/

writes into --out: classes.csv/.md/.png (loss by class of the true next character), longrange.csv/
.json/.png (probability of each --pair's closer by distance to its opener, and of newline by
column) and compare.html (the text coloured by loss_B - loss_A: blue where RUN_A is better).""",
    "errors": """examples:
  rnnlens errors runs/lstm --text test.txt --out errors/             # oracle: a 9-gram fitted on the train split
  rnnlens errors runs/small runs/big --text test.txt --ngram ngrams/9 --out errors/
  rnnlens errors runs/lstm --text test.txt --no-oracle --threshold 0.3 --json

an error is a character whose true probability is < --threshold; errors are peeled in the paper's
order: n-gram oracle, dynamic memory, rare words, word model, punctuation, boost (the rest).
writes errors.csv, errors.json and errors.png into --out; with RUN2 (a larger model), which of
RUN's errors it fixes, per category.""",
    "serve": """examples:
  rnnlens serve runs/shakespeare --text act1.txt            # then open http://127.0.0.1:8000/
  rnnlens serve runs/lstm runs/gru --text input.txt --port 8001   # two models side by side

a local web page: any unit's activation over text you type, units ranked by the features they
track, LSTMVis-style select and match, the prediction strip and sampling; the JSON API behind it
is described in docs/explorer.md (and at /openapi.json).""",
    "export-lstmvis": """examples:
  rnnlens export-lstmvis runs/shakespeare --text act1.txt --out lstmvis/shakespeare
  rnnlens export-lstmvis runs/linux --text sched.c --names layer1.cell,layer1.gate.forget --out lstmvis/linux

writes states.h5, train.h5, words.dict and lstm.yml: a project folder for LSTMVis's server
(python server.py -dir lstmvis/).""",
    "gradients": """examples:
  rnnlens gradients runs/rnn runs/lstm runs/gru --text input.txt --max-lag 100 --out gradients.png
  rnnlens gradients runs/rnn --text input.txt --weight-scale 1 2 4 --max-lag 50 --json

the norm of d loss_t / d x_{t-k} and d loss_t / d h_{t-k} against the lag k, averaged over
--positions random positions t of the text: vanishing and exploding gradients, measured.""",
    "kl": """examples:
  rnnlens kl runs/lstm --text heldout.txt --baseline nnn2=runs/nnn2 --baseline nnn5=runs/nnn5 --out figures/
  rnnlens kl runs/lstm --text heldout.txt --ngram-orders 1,2,3,5,9,20 --out figures/ --json

needs a run trained with --snapshot-every N. For every snapshot: the mean over the text's positions of
KL(p||q) + KL(q||p) between its next-character distributions and each baseline's, in nats (probabilities
floored at --floor, then renormalised). --ngram-orders fits n-gram models on --data (default: the run's
training corpus). Writes kl.png, kl.csv and kl.json into --out.""",
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
    p.add_argument("run", help="run folder or .safetensors checkpoint, or an n-gram folder (`rnnlens ngram`)")
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

    p = command("ngram", "Fit a character n-gram model (Kneser-Ney or add-k) on a corpus's train split; "
                "print its val and test loss.")
    p.add_argument("--data", required=True, help="text file, folder, or named corpus (as for `rnnlens train`)")
    p.add_argument("--glob", help="with a folder: which files, e.g. '**/*.c' (shuffled with a fixed seed)")
    p.add_argument("--split", help="train,val,test fractions cut by position (default: the corpus's own, "
                   "0.9,0.05,0.05 for files)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--order", type=int, default=20, help="n, from 1 to 20 (default 20)")
    p.add_argument("--smoothing", default="kn", choices=["kn", "addk"],
                   help="kn: interpolated modified Kneser-Ney (default); addk: (count + k) / (total + k V)")
    p.add_argument("--k", type=float, default=1.0, help="with --smoothing addk: the k (default 1)")
    p.add_argument("--out", required=True, help="folder to write the model into")
    p.add_argument("--json", action="store_true", help="print one JSON object")

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

    p = command("report", "One self-contained HTML page that explains a model: what it is, how it trained, what "
                "it writes, and what its units and gates do.")
    from rnnlens.report import DEFAULT_MAX_CHARS
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    add_text_arguments(p, max_chars_default=DEFAULT_MAX_CHARS,
                       text_default="the test split of the corpus the model was trained on")
    p.add_argument("--out", default="report.html", help="the page to write (default report.html)")
    p.add_argument("--seed", type=int, default=0, help="samples and gradient positions (default 0)")
    p.add_argument("--ngram-order", type=int, default=20, help="order of the n-gram baseline fitted on the model's "
                   "train split (default 20; 0: no n-gram sections)")
    p.add_argument("--ngram", metavar="NGRAM", help="a fitted n-gram folder (`rnnlens ngram`) to compare with instead")

    p = command("grid", "The paper's experiment grid: train every cell type x depth x size, one process per cell "
                "and resumable, then tabulate the test losses beside an n-gram and map the models by their predictions.")
    add_grid_arguments(p)

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

    p = command("kl", "Training dynamics: the symmetric KL divergence between a run's snapshots and baseline "
                "models (n-gram, n-NN) on a held-out text, over training.")
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

    p = command("compare", "Where one model beats another: loss by character class, closing characters by "
                "distance to their openers, and a page of the text coloured by the loss difference.")
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

    p = command("errors", "The paper's error taxonomy: a model's errors (p(true char) < --threshold) peeled into "
                "n-gram oracle, dynamic memory, rare words, word model, punctuation and boost.")
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

    p = command("serve", "A local web explorer: activations over any text, units ranked by feature, "
                "select and match, predictions and samples, one or two models side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder or .safetensors checkpoint (a second one is "
                   "shown side by side)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text the page starts with (default: a sample of the model)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 lets anyone who can reach it use it)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-text-bytes", type=int, default=1_000_000, metavar="N",
                   help="largest text a request may carry, in UTF-8 bytes (default 1,000,000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")

    p = command("export-lstmvis", "Write a model's states over a text as an LSTMVis project "
                "(states HDF5, word-id HDF5, dict and lstm.yml).")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    add_text_arguments(p)
    p.add_argument("--out", required=True, help="project folder to write")
    p.add_argument("--names", help="comma-separated activations, e.g. layer1.cell,layer1.gate.forget "
                   "(default: every layer's cell and hidden for an LSTM, hidden otherwise)")
    p.add_argument("--project", help="project name shown by LSTMVis (default: rnnlens RUN)")
    return parser


def add_text_arguments(p, max_chars: bool = True, max_chars_default: int | None = None,
                       text_default: str | None = None) -> None:
    """The text a model reads (--text), and what to do with characters the model never saw.
    With `text_default` (words saying what is read without --text), --text is optional."""
    p.add_argument("--text", required=text_default is None, metavar="FILE",
                   help="UTF-8 text file to read" + (f" (default: {text_default})" if text_default else ""))
    if max_chars:
        p.add_argument("--max-chars", type=int, metavar="N", default=max_chars_default,
                       help="read only the first N characters of it"
                       + (f" (default {max_chars_default:,})" if max_chars_default else " (default: all)"))
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--unknown", choices=["error", "drop", "replace"], default="error",
                   help="characters the model never saw: error (default), drop or replace them")
    p.add_argument("--replacement", help="with --unknown replace: the character to use (default: a space)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")


def add_comparison_text_arguments(p) -> None:
    """The text every compared model scores: all of them must know all of its characters."""
    p.add_argument("--text", required=True, metavar="FILE", help="UTF-8 text file every model scores")
    p.add_argument("--max-chars", type=int, metavar="N", help="read only the first N characters of it (default: all)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
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
    g.add_argument("--model", choices=["lstm", "gru", "rnn", "ffn"],
                   help="cell type (default lstm); ffn: the n-NN baseline, a feed-forward net on the last "
                   "--context characters")
    g.add_argument("--context", type=int, help="--model ffn: characters it sees, n (default 20)")
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
    g.add_argument("--snapshot-every", type=int, metavar="N", help="also keep the weights every N steps in "
                   "RUN/snapshots/ (for `rnnlens kl`; default: none)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
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


def add_grid_arguments(p) -> None:
    """`rnnlens grid`: its own options, then every option of `rnnlens train` except those each cell sets."""
    from rnnlens.grid import CELL_OPTIONS, DEFAULT_LAYERS, DEFAULT_MAP_CHARS, DEFAULT_SIZES, DEFAULT_TYPES
    g = p.add_argument_group("grid")
    g.add_argument("--types", default=",".join(DEFAULT_TYPES), help="cell types (default lstm,gru,rnn)")
    g.add_argument("--layers", default=",".join(map(str, DEFAULT_LAYERS)), help="depths (default 1,2,3)")
    g.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                   help="widths of the LSTM of each column (default 64,128,256,512)")
    g.add_argument("--match-params", action="store_true",
                   help="give GRU and RNN cells the width whose parameter count is closest to the LSTM's of "
                   "their column and depth (the paper's rule); without it every type gets the column's width")
    g.add_argument("--out", help="the grid folder (required unless --dry-run)")
    g.add_argument("--workers", type=int, help="cells trained at once, each in its own process (default 1; "
                   "one per GPU when several are visible)")
    g.add_argument("--threads", type=int, help="CPU threads per worker (default: the cores divided by --workers)")
    g.add_argument("--dry-run", action="store_true", help="print the cells with their widths and parameter counts; "
                   "train nothing")
    g.add_argument("--ngram-order", type=int, default=20, help="order of the n-gram baseline (default 20)")
    g.add_argument("--no-ngram", action="store_true", help="no n-gram baseline")
    g.add_argument("--map-chars", type=int, default=DEFAULT_MAP_CHARS,
                   help=f"the map scores every model on the first N test characters (default {DEFAULT_MAP_CHARS:,})")
    g.add_argument("--map-method", choices=["pca", "tsne"], default="pca",
                   help="2-D projection of the map: pca (default) or tsne (needs scikit-learn)")
    train = argparse.ArgumentParser(add_help=False)
    add_train_arguments(train)
    dests = []
    for group in train._action_groups:  # the train parser's own groups, minus what a grid sets per cell
        actions = [a for a in group._group_actions if a.option_strings and a.dest not in CELL_OPTIONS
                   and a.dest != "help"]
        if not actions:
            continue
        target = p.add_argument_group(f"{group.title} (every cell)" if group.title != "data" else "data")
        for a in actions:
            if a.dest == "time_budget":
                target.add_argument("--time-budget", "--time", dest="time_budget", help=a.help)
            else:
                target._add_action(a)
            dests.append(a.dest)
    p.set_defaults(grid_train_options=dests)


MODEL_ARGS = ("model", "layers", "size", "dropout", "input", "embedding_size", "init", "init_range", "forget_bias",
              "context")


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
        if "context" in model_kwargs and model_kwargs["cell"] != "ffn":
            raise RnnlensError("--context is the n of the n-NN baseline; use it with --model ffn")
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
            shape = (f"{model_cfg.size}-unit n-NN (ffn, context {model_cfg.context})" if model_cfg.cell == "ffn"
                     else f"{model_cfg.layers}x{model_cfg.size} {model_cfg.cell.upper()}")
            print(f"training a {shape} ({count_parameters(model_cfg):,} parameters) on {corpus.name} "
                  f"({len(corpus):,} characters, vocabulary {len(corpus.vocab)}) into {out}{ranks_note(trainer)}",
                  file=sys.stderr)
    state = trainer.run()
    if trainer.dist.is_main:
        report_training(trainer, state)
    return 130 if state.stop_reason and state.stop_reason.startswith("interrupted") else 0


def cmd_grid(args) -> int:
    from rnnlens.corpus import parse_split
    from rnnlens.grid import cell_state_text, format_plan, plan_grid, run_grid
    from rnnlens.train import parse_duration
    options = {k: getattr(args, k) for k in args.grid_train_options if getattr(args, k) is not None}
    data, glob = options.pop("data", "pystdlib"), options.pop("glob", None)
    encoding_errors = options.pop("encoding_errors", "strict")
    split = parse_split(options.pop("split")) if "split" in options else None
    if "time_budget" in options:
        options["time_budget"] = parse_duration(options["time_budget"])
    grid = {"types": args.types, "layers": args.layers, "sizes": args.sizes, "match_params": args.match_params,
            "glob": glob, "split": split, "encoding_errors": encoding_errors}
    if args.dry_run:
        cells, corpus = plan_grid(data, **grid, **options)
        states = {c.name: cell_state_text(Path(args.out) / "cells" / c.name) for c in cells} if args.out else None
        print(f"{corpus.name}: {len(corpus):,} characters, vocabulary {len(corpus.vocab)}; "
              + ("GRU and RNN widths matched to the LSTM's parameter count" if args.match_params
                 else "every type at the column's width (no --match-params)"))
        print(format_plan(cells, states))
        return 0
    if not args.out:
        raise RnnlensError("give the grid folder with --out (or use --dry-run to only list the cells)")
    result = run_grid(data, args.out, ngram_order=None if args.no_ngram else args.ngram_order,
                      workers=args.workers, threads=args.threads, map_chars=args.map_chars,
                      map_method=args.map_method, **grid, **options)
    if result.interrupted and result.table is None:
        print(f"stopped; {len(result.interrupted)} cell(s) saved mid-training; run the same command again to resume")
        return 130
    from rnnlens.render.grid import table_markdown
    print()
    print(table_markdown(result.table), end="")
    print("wrote " + ", ".join(str(p) for p in result.files.values()) + f" and {Path(args.out) / 'grid.json'}")
    if result.failed:
        print(f"{len(result.failed)} cell(s) failed: {', '.join(result.failed)}; see {Path(args.out) / 'logs'} and "
              "grid.json; run the same command again to retry them", file=sys.stderr)
    if result.interrupted:
        print(f"{len(result.interrupted)} cell(s) stopped before their end: {', '.join(result.interrupted)}; "
              "run the same command again to resume them", file=sys.stderr)
    return 1 if result.failed or result.interrupted else 0


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


def cmd_ngram(args) -> int:
    import math

    from rnnlens.ngram import check_order, check_smoothing, train_ngram
    check_order(args.order)
    check_smoothing(args.smoothing, args.k)
    model = train_ngram(args.data, args.order, args.out, smoothing=args.smoothing, k=args.k, glob=args.glob,
                        split=args.split, encoding_errors=args.encoding_errors, progress=sys.stderr.isatty())
    train = model.meta["train"]
    how = "interpolated modified Kneser-Ney" if model.smoothing == "kn" else f"add-{model.k:g}"
    scores = {}
    for split in ("val", "test"):
        try:
            scores[split] = model.evaluate(split=split)
        except RnnlensError:  # an empty split (e.g. --split 0.9,0.1 has no test part)
            scores[split] = None
    if args.json:
        print(json.dumps({"out": str(args.out), "order": model.order, "smoothing": model.smoothing, "k": model.k,
                          "train_chars": train["train_chars"], "train_seconds": train["seconds"],
                          "ngrams": model.entries,
                          **{s: r.to_dict() if r else None for s, r in scores.items()}}))
        return 0
    print(f"{model.order}-gram, {how}, on {train['corpus']}: {train['train_chars']:,} train characters, "
          f"vocabulary {len(model.vocab)}, {model.entries:,} n-grams, fitted in {train['seconds']:.1f} s")
    for split, r in scores.items():
        if r is None:
            print(f"{split}: (empty split)")
        else:
            print(f"{split}: {r.loss:.4f} nats/char, {r.loss / math.log(2):.4f} bits/char over {r.chars:,} characters")
    print(f"saved to {args.out}")
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


def cmd_report(args) -> int:
    from rnnlens.corpus import read_text_file
    from rnnlens.model import check_range
    from rnnlens.report import build_report
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise RnnlensError(f"the report is an HTML page: --out {out} must end in .html")
    check_range("--max-chars", args.max_chars, 1, None, integer=True)
    text = source = None
    if args.text:
        full = read_text_file(args.text, encoding_errors=args.encoding_errors)
        if not full:
            raise RnnlensError(f"{args.text} is empty; give a text for the model to read")
        text = full[:args.max_chars]
        source = f"{args.text}, characters 0\u2013{len(text):,} of {len(full):,}"
    report = build_report(args.run, text, text_source=source, device=args.device, progress=sys.stderr.isatty(),
                          max_chars=args.max_chars, seed=args.seed, unknown=args.unknown,
                          replacement=args.replacement, ngram_order=args.ngram_order, ngram=args.ngram)
    print(report.save(out))
    return 0


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
    from rnnlens.checkpoint import make_folder
    return make_folder(path)


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


def cmd_kl(args) -> int:
    import rnnlens
    from rnnlens.analysis.gradients import model_label
    from rnnlens.analysis.resemblance import list_snapshots, resemblance_over_training
    from rnnlens.checkpoint import read_checkpoint, write_json_atomic
    from rnnlens.model import check_range
    from rnnlens.render.plots import plot_resemblance

    check_range("--floor", args.floor, 0.0, 1.0, low_open=True, high_open=True)
    baselines: dict = parse_baselines(args.baseline)
    orders = parse_orders(args.ngram_orders) if args.ngram_orders else []
    if not baselines and not orders:
        raise RnnlensError("nothing to compare with: give --baseline NAME=PATH (repeatable) and/or --ngram-orders")
    if args.data and not orders:
        raise RnnlensError("--data is the corpus for --ngram-orders; give --ngram-orders too, or drop --data")
    snaps = list_snapshots(args.run)  # before any slow work
    latest = read_checkpoint(snaps[-1][1])
    text = read_text_argument(args)
    if args.unknown != "error":  # one text for every model: clean it against the run's vocabulary
        vocab = latest.vocab
        text = "".join(vocab.chars[i] for i in vocab.encode(text, unknown=args.unknown, replacement=args.replacement))
    if len(text) < 2:
        raise RnnlensError(f"{args.text} has {len(text)} usable character(s); comparing predictions needs at least 2")
    loaded = {name: rnnlens.load(path, device=args.device) for name, path in baselines.items()}
    if orders:
        from rnnlens.ngram import train_ngram
        train = latest.meta.get("train", {})
        data = args.data or train.get("data")
        if not data:
            raise RnnlensError("the run does not say which corpus it was trained on; give --data for --ngram-orders")
        ngram = train_ngram(data, max(orders), **({} if args.data else {"glob": train.get("glob"),
                                                                           "split": train.get("split")}))
        for k in orders:
            name = f"{k}-gram"
            if name in loaded:
                raise RnnlensError(f"--baseline name {name!r} clashes with --ngram-orders; rename that baseline")
            loaded[name] = ngram.predict(text, order=k)
    verbose = not args.json and sys.stderr.isatty()

    def progress(i, total, step):
        if verbose:
            print(f"\rsnapshot {i}/{total} (step {step})", end="" if i < total else "\n", file=sys.stderr, flush=True)

    res = resemblance_over_training(args.run, loaded, text, floor=args.floor, device=args.device, progress=progress)
    label = model_label(Path(args.run) / "best.safetensors")
    figure, table = write_analysis(args, res, "kl", plot_resemblance,
                                   f"{label}: symmetric KL to baselines over {res.chars:,} characters")
    summary = Path(args.out) / "kl.json"
    write_json_atomic(summary, {"run": str(args.run), "text": str(args.text), **res.to_dict()})
    if args.json:
        return 0
    names = res.baselines
    width = max(10, *(len(n) + 2 for n in names))
    print(f"{label}: symmetric KL, KL(p||q) + KL(q||p) in nats per character, over {res.chars:,} characters "
          f"of {args.text}")
    print(f"{'step':>8s} {'seconds':>8s} {'loss':>7s}" + "".join(f"{n:>{width}s}" for n in names) + "  closest")
    print(f"{'':8s} {'':8s} {'':7s}" + "".join(f"{'(' + format(res.baseline_loss[n], '.3f') + ')':>{width}s}"
                                               for n in names) + "  (baselines' own loss)")
    for row in res.to_rows():
        print(f"{row['step']:8d} {row['seconds']:8.1f} {row['loss_nats']:7.3f}"
              + "".join(f"{row['kl_' + n]:{width}.4f}" for n in names) + f"  {row['closest']}")
    print(f"wrote {figure}, {table} and {summary}")
    return 0


def score_runs(runs, text: str, device: str) -> list:
    """Each run's Predictions over `text`, named after its folder; every run must know every character."""
    import rnnlens
    from rnnlens.analysis.classes import unique_names
    from rnnlens.analysis.gradients import model_label
    from rnnlens.predictions import predict
    if len(text) < 2:
        raise RnnlensError("the text has fewer than 2 characters; give a longer --text")
    preds = []
    for run in runs:
        model = rnnlens.load(run, device=device)
        name = model_label(getattr(model, "path", None) or run) if hasattr(model, "vocab") else Path(run).name
        missing = sorted(set(text) - set(model.vocab.chars))
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise RnnlensError(f"{run} never saw {len(missing)} of the text's characters ({shown}); compare models "
                               "on a text they all know, e.g. the test split of their training corpus")
        preds.append(predict(model, text, name=name))
    for p, name in zip(preds, unique_names(preds)):
        p.name = name
    return preds


def cmd_compare(args) -> int:
    from rnnlens.analysis.classes import loss_by_class
    from rnnlens.analysis.longrange import (
        closing_study,
        newline_study,
        parse_bins,
        parse_pair,
    )
    from rnnlens.analysis.longrange import write_csv as write_longrange_csv
    from rnnlens.analysis.longrange import write_json as write_longrange_json
    from rnnlens.checkpoint import atomic_write
    from rnnlens.model import check_range
    from rnnlens.render.comparison import comparison_page, difference_scale
    from rnnlens.render.html import write_html
    from rnnlens.render.plots import plot_long_range, plot_loss_by_class

    if len(args.runs) < 2:
        raise RnnlensError("compare needs at least two models: rnnlens compare RUN_A RUN_B --text FILE")
    pairs = args.pair or ["{}"]
    for pair in pairs:
        parse_pair(pair)
    bins = parse_bins(args.bins)
    difference_scale(args.scale)
    check_range("--html-length", args.html_length, 1, None, integer=True)
    check_range("--html-start", args.html_start, 0, None, integer=True)
    text = read_text_argument(args)
    if args.html_start >= len(text):
        raise RnnlensError(f"--html-start {args.html_start} is past the text's end ({len(text):,} characters)")
    preds = score_runs(args.runs, text, args.device)
    folder = output_folder(args.out)

    classes = loss_by_class(*preds)
    classes.write_csv(folder / "classes.csv")
    atomic_write(folder / "classes.md", lambda tmp: tmp.write_text(classes.markdown(), encoding="utf-8"))
    plot_loss_by_class(classes, folder / "classes.png",
                       title=f"loss by class of the true next character, {classes.chars:,} characters of {args.text}")

    studies = [closing_study(*preds, pair=pair, bins=bins) for pair in pairs] + [newline_study(*preds, bins=bins)]
    write_longrange_csv(studies, folder / "longrange.csv")
    write_longrange_json(studies, folder / "longrange.json")
    plot_long_range(studies, folder / "longrange.png")

    end = min(len(text), args.html_start + args.html_length)
    page = folder / "compare.html"
    write_html(page, comparison_page(preds[0], preds[1], args.html_start, end, scale=args.scale,
                                     subtitle=f"{args.text}: characters {args.html_start:,}\u2013{end:,} of "
                                              f"{len(text):,}"))
    files = {name: str(folder / name) for name in ("classes.csv", "classes.md", "classes.png", "longrange.csv",
                                                     "longrange.json", "longrange.png", "compare.html")}
    if args.json:
        print(json.dumps({"runs": [str(r) for r in args.runs], "text": str(args.text), "classes": classes.to_dict(),
                          "longrange": [s.to_dict() for s in studies], "files": files}))
        return 0
    print(f"loss by class of the true next character over {classes.chars:,} characters of {args.text} "
          "(nats/char; share: the class's part of the model's total loss)")
    print(classes.markdown())
    for s in studies:
        what = "newline by column" if s.study == "newline" else f"'{s.char}' by distance to its '{s.study[0]}'"
        if not len(s.positions):
            print(f"{what}: no occurrences in this text")
            continue
        means = ", ".join(f"{m} {p.mean():.3f}" for m, p in zip(s.models, s.probs))
        print(f"{what}: {len(s.positions):,} occurrences; mean p: {means}")
    print(f"wrote {', '.join(files.values())}")
    return 0


def training_text(args, run) -> tuple[str, tuple] | None:
    """(the training split of --data (default: the corpus `run` was trained on), (data, glob, split));
    None when neither says which corpus."""
    from rnnlens.corpus import load_corpus, parse_split
    data, glob, split = args.data, args.glob, parse_split(args.split_fractions) if args.split_fractions else None
    from_meta = data is None
    if from_meta:
        train = (getattr(run, "meta", None) or {}).get("train") or {}
        data = train.get("data")
        glob = glob or train.get("glob")
        split = split or (tuple(train["split"]) if train.get("split") else None)
    if data is None:
        return None
    try:
        corpus = load_corpus(data, glob=glob, split=split, encoding_errors=args.encoding_errors)
    except RnnlensError as e:
        if not from_meta:
            raise
        raise RnnlensError(f"{args.runs[0]} was trained on {data}, which cannot be read from here ({e}); "
                           "give the training corpus with --data") from None
    return corpus.text("train"), (data, glob, split)


def cmd_errors(args) -> int:
    import rnnlens
    from rnnlens.analysis.errors import (
        check_settings,
        compare_taxonomies,
        ngram_oracle,
        taxonomy,
        word_counts,
    )
    from rnnlens.analysis.errors import write_csv as write_errors_csv
    from rnnlens.checkpoint import write_json_atomic
    from rnnlens.render.plots import plot_error_taxonomy

    if len(args.runs) > 2:
        raise RnnlensError("errors takes one model, or two (small then large): rnnlens errors RUN [RUN2] --text FILE")
    check_settings(args.threshold, args.memory, args.rare, (2, 5))
    ngram_module = None
    if not args.no_oracle:
        import rnnlens.ngram as ngram_module
    text = read_text_argument(args)
    first = rnnlens.load(args.runs[0], device=args.device)
    found = training_text(args, first)
    if found is None:
        raise RnnlensError(f"{args.runs[0]} does not say which corpus it was trained on; give the training corpus "
                           "with --data (for rare words and the oracle)")
    train_text, (data, glob, split) = found
    preds = score_runs(args.runs, text, args.device)

    oracle = None
    if ngram_module is not None:
        if args.ngram:
            ngram = rnnlens.load(args.ngram)
            if not hasattr(ngram, "order"):
                raise RnnlensError(f"--ngram {args.ngram} is not an n-gram folder; fit one with "
                                   f"`rnnlens ngram --data CORPUS --order 9 --out {args.ngram}`")
        else:
            print(f"fitting a 9-gram on the training split of {data} for the oracle", file=sys.stderr)
            ngram = ngram_module.train_ngram(str(data), 9, glob=glob, split=split)
        missing = sorted(set(text) - set(ngram.chars))
        if missing:
            raise RnnlensError(f"the oracle's n-gram never saw {len(missing)} of the text's characters "
                               f"({', '.join(repr(c) for c in missing[:10])}); use --ngram with one fitted on "
                               "the models' corpus")
        oracle = ngram_oracle(ngram, text)
    counts = word_counts(train_text)
    taxonomies = [taxonomy(p, oracle=oracle, train_counts=counts, threshold=args.threshold, memory=args.memory,
                           rare=args.rare) for p in preds]
    comparison = compare_taxonomies(*taxonomies) if len(taxonomies) == 2 else None

    folder = output_folder(args.out)
    table = write_errors_csv(taxonomies, folder / "errors.csv")
    result = {"runs": [str(r) for r in args.runs], "text": str(args.text), "train": str(data),
              "models": [t.to_dict() for t in taxonomies],
              "comparison": comparison.to_dict() if comparison else None}
    write_json_atomic(folder / "errors.json", result)
    figure = plot_error_taxonomy(taxonomies, folder / "errors.png", comparison=comparison)
    if args.json:
        print(json.dumps({**result, "figure": str(figure), "csv": str(table), "json": str(folder / "errors.json")}))
        return 0
    for t in taxonomies:
        print(t.table())
    if not taxonomies[0].settings["oracle"]:
        print("(--no-oracle: the n-gram oracle category is empty)")
    if comparison:
        print(comparison.table())
    print(f"wrote {table}, {folder / 'errors.json'} and {figure}")
    return 0


def cmd_serve(args) -> int:
    from rnnlens.corpus import read_text_file
    from rnnlens.explorer.engine import Explorer
    from rnnlens.explorer.server import check_port, is_local, serve
    from rnnlens.model import check_range

    if len(args.runs) > 2:
        raise RnnlensError(f"serve shows one or two models side by side; got {len(args.runs)}")
    check_range("--max-text-bytes", args.max_text_bytes, 1, None, integer=True)
    check_port(args.host, args.port)  # before the slow part, and once more just before serving
    explorer = Explorer.from_runs(args.runs, device=args.device, max_text_bytes=args.max_text_bytes)
    if args.text:
        text = read_text_file(args.text, encoding_errors=args.encoding_errors)
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw) > args.max_text_bytes:
            text = raw[:args.max_text_bytes].decode("utf-8", "ignore")
            print(f"{args.text}: the page starts with its first {len(text):,} characters (--max-text-bytes)",
                  file=sys.stderr)
        explorer.default_text, explorer.text_note = text, f"from {args.text}"
    else:
        lm = next(iter(explorer.models.values()))
        explorer.default_text = lm.sample(600, temperature=0.8, seed=0)
        explorer.text_note = "sampled from the model: paste your own text"
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"rnnlens explorer on http://{url_host}:{args.port}/ ({', '.join(explorer.models)}); "
          "API at /openapi.json; Ctrl-C stops it", flush=True)
    if not is_local(args.host):
        print(f"warning: --host {args.host} lets anyone who can reach this machine use the explorer",
              file=sys.stderr)
    try:
        serve(explorer, args.host, args.port)
    finally:
        explorer.close()
    return 0


def cmd_export_lstmvis(args) -> int:
    import rnnlens
    from rnnlens.lstmvis import export_lstmvis
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names is not None else None
    lm = rnnlens.load(args.run, device=args.device)
    if names is not None:
        from rnnlens.lstmvis import check_names
        check_names(names, lm.config.cell, lm.config.layers)  # before reading the text
    text = read_text_argument(args)
    if not text:
        raise RnnlensError(f"{args.text} is empty; give a text to export the states over")
    files = export_lstmvis(lm, text, args.out, names=names, unknown=args.unknown, replacement=args.replacement,
                           project=args.project, source=str(args.text))
    datasets = ", ".join(files["datasets"])
    print(f"wrote an LSTMVis project of {files['chars']:,} characters to {args.out}: states.h5 ({datasets}), "
          "train.h5, words.dict, lstm.yml")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "ngram": cmd_ngram, "trace": cmd_trace, "viz": cmd_viz, "cells": cmd_cells,
            "saturation": cmd_saturation, "timescales": cmd_timescales, "gradients": cmd_gradients, "kl": cmd_kl,
            "compare": cmd_compare, "errors": cmd_errors, "report": cmd_report, "serve": cmd_serve,
            "export-lstmvis": cmd_export_lstmvis, "grid": cmd_grid, "data": cmd_data, "demo": cmd_demo}


def main(argv=None) -> int:
    from rnnlens import reproducibility
    reproducibility.apply_env()  # a no-op when `import rnnlens` already did it (the usual case)
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
