"""`rnnlens trace`, `viz`, `cells`, `saturation`, `timescales` and `gradients`: look inside one model."""

from __future__ import annotations

from pathlib import Path

from rnnlens.cli.common import (
    add_text_arguments,
    command,
    finish,
    parse_names,
    print_json,
    progress_shown,
    say,
    text_of,
    unknown_options,
)

TRACE_EXAMPLES = """examples:
  rnnlens trace runs/shakespeare --text act1.txt --out act1.trace.safetensors
  rnnlens trace runs/linux --text big.c --names layer1.cell,probs --float16 --out big.trace.safetensors"""
VIZ_EXAMPLES = """examples:
  rnnlens viz runs/shakespeare --text act1.txt --unit 1:42                  # tanh(c), as in the paper
  rnnlens viz runs/shakespeare --text act1.txt --unit 0:7 --what gate.forget --out forget.html
  rnnlens viz runs/linux --text sched.c --unit 1:42 --strip --start 2000 --length 300
  rnnlens viz runs/linux --text sched.c --unit 1:42 --length 1500 --out unit42.png"""
CELLS_EXAMPLES = """examples:
  rnnlens cells runs/shakespeare --text input.txt               # every built-in feature, cells and hidden
  rnnlens cells runs/py --text argparse.py --features bracket_depth,in_string,indent --top 5
  rnnlens cells runs/py --text argparse.py --feature 'todo=(?i)todo' --feature 'url=https?://\\S+' --json
  rnnlens cells runs/py --text argparse.py --kinds all --out gallery.html"""
SATURATION_EXAMPLES = """examples:
  rnnlens saturation runs/shakespeare --text input.txt --max-chars 100000 --out figures/
  rnnlens saturation runs/gru --text input.txt --low 0.05 --high 0.95 --json > saturation.json

writes saturation.png (a panel per layer: each gate unit at its fraction of time left- and
right-saturated) and saturation.csv (layer, gate, unit, left, right) into --out."""
TIMESCALES_EXAMPLES = """examples:
  rnnlens timescales runs/shakespeare --text input.txt --max-chars 100000 --out figures/
  rnnlens timescales runs/gru --text input.txt --json

per unit: the mean forget (LSTM) or update (GRU) gate f and the half-life ln(0.5)/ln(f) in
characters; writes timescales.png (a histogram per layer) and timescales.csv into --out."""
GRADIENTS_EXAMPLES = """examples:
  rnnlens gradients runs/rnn runs/lstm runs/gru --text input.txt --max-lag 100 --out gradients.png
  rnnlens gradients runs/rnn --text input.txt --weight-scale 1 2 4 --max-lag 50 --json

the norm of d loss_t / d x_{t-k} and d loss_t / d h_{t-k} against the lag k, averaged over
--positions random positions t of the text: vanishing and exploding gradients, measured."""


def add_parsers(sub) -> None:
    p = command(sub, "trace", "Record every activation of a model over a text into a safetensors file.", run_trace,
                TRACE_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--out", required=True, help="trace file to write (.safetensors)")
    p.add_argument("--names", help="comma-separated activations to keep, e.g. layer1.cell,probs (default: all)")
    p.add_argument("--float16", action="store_true", help="store activations at half size")
    add_text_arguments(p)

    p = command(sub, "viz", "Colour a text by one unit's activation: a self-contained HTML page or a PNG.", run_viz,
                VIZ_EXAMPLES)
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

    from rnnlens.analysis.features import FEATURES
    p = command(sub, "cells", "Find units that track features of the text: quotes, brackets, line position, ...",
                run_cells, CELLS_EXAMPLES)
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
    p.add_argument("--paper-figure", metavar="DIR", help="also draw the paper's Figure 2 on this text into DIR: a "
                   "PNG of the best visible line-length, quote, bracket/if and comment/string cell, and their table")

    p = command(sub, "saturation", "Gate saturation, the paper's figure: the fraction of characters each gate unit "
                "spends below --low (left-saturated) and above --high (right-saturated).", run_saturation,
                SATURATION_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint of an LSTM or GRU")
    add_text_arguments(p)
    p.add_argument("--low", type=float, default=0.1, help="left-saturated below this (default 0.1)")
    p.add_argument("--high", type=float, default=0.9, help="right-saturated above this (default 0.9)")
    p.add_argument("--out", default=".", help="folder for saturation.png and saturation.csv (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object (summary and every unit's fractions)")

    p = command(sub, "timescales", "Memory time constants: each unit's mean forget (LSTM) or update (GRU) gate "
                "and its half-life ln(0.5)/ln(f) in characters.", run_timescales, TIMESCALES_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint of an LSTM or GRU")
    add_text_arguments(p)
    p.add_argument("--out", default=".", help="folder for timescales.png and timescales.csv (default: here)")
    p.add_argument("--json", action="store_true", help="print one JSON object (summary and every unit's values)")

    p = command(sub, "gradients", "Gradient flow through time: ||d loss_t / d x_{t-k}|| and ||d loss_t / d h_{t-k}|| "
                "against the lag k, for one or more models side by side.", run_gradients, GRADIENTS_EXAMPLES)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or .safetensors checkpoints (any cell type)")
    add_text_arguments(p)
    p.add_argument("--max-lag", type=int, default=100, help="largest lag k in characters (default 100)")
    p.add_argument("--positions", type=int, default=64, help="positions t averaged over (default 64)")
    p.add_argument("--seed", type=int, default=0, help="which positions are drawn (default 0)")
    p.add_argument("--weight-scale", type=float, nargs="+", default=[1.0], metavar="X",
                   help="multiply the recurrent weights W_hh by X (one curve per value; default 1)")
    p.add_argument("--out", default="gradients.png", help="the figure to write (default gradients.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object (per model: mean and quantiles per lag)")


def run_trace(args) -> int:
    from rnnlens.workflows.inspect import load_rnn
    lm = load_rnn(args.run, args.device, "tracing activations")
    trace = lm.trace(text_of(args), names=parse_names(args.names), float16=args.float16, out=args.out,
                     progress=progress_shown(args), **unknown_options(args))
    print(f"traced {len(trace):,} characters ({len(trace.names())} arrays, largest recompute error "
          f"{trace.max_recompute_error:.1e}) into {args.out}")
    return 0


def run_viz(args) -> int:
    from rnnlens.corpus import read_text_file
    from rnnlens.workflows.viz import unit_picture
    picture = unit_picture(args.run, read_text_file(args.text, encoding_errors=args.encoding_errors), args.unit,
                           what=args.what, start=args.start, length=args.length, strip=args.strip, top=args.top,
                           width=args.width, out=args.out, text_name=args.text, device=args.device,
                           **unknown_options(args))
    if picture.partial:
        say(f"{args.text}: showing {picture.shown}; --start and --length show others")
    print(picture.out)
    return 0


def run_cells(args) -> int:
    from rnnlens.workflows.inspect import find_cells
    features = (parse_names(args.features) or []) if args.features else None
    if args.feature:
        from rnnlens.analysis.features import FEATURES
        features = (features if features is not None else list(FEATURES)) + list(args.feature)
    result = find_cells(args.run, text_of(args), features=features, kinds=parse_names(args.kinds), top=args.top,
                        raw_cells=args.raw_cells, gallery=bool(args.out), paper_figure=bool(args.paper_figure),
                        text_name=args.text, device=args.device,
                        progress=progress_shown(args), **unknown_options(args))
    if args.out:
        result.write(args.out)
    if args.paper_figure:
        result.write_paper_figure(args.paper_figure)
    if args.json:
        print_json({**result.to_dict(), **({"gallery": str(args.out)} if args.out else {})})
        return 0
    print(result.summary())
    if args.out:
        print(f"gallery: {args.out}")
    if args.paper_figure:
        print(f"the paper's cells: {Path(args.paper_figure) / 'paper_cells.md'} and their PNGs")
    return 0


def run_saturation(args) -> int:
    from rnnlens.workflows.inspect import saturation
    return finish(args, saturation(args.run, text_of(args), low=args.low, high=args.high, text_name=args.text,
                                   device=args.device, progress=progress_shown(args), **unknown_options(args)),
                  {"figure": "saturation.png", "csv": "saturation.csv"})


def run_timescales(args) -> int:
    from rnnlens.workflows.inspect import timescales
    return finish(args, timescales(args.run, text_of(args), text_name=args.text, device=args.device,
                                   progress=progress_shown(args), **unknown_options(args)),
                  {"figure": "timescales.png", "csv": "timescales.csv"})


def run_gradients(args) -> int:
    from rnnlens.workflows.inspect import gradients
    result = gradients(args.runs, text_of(args), max_lag=args.max_lag, positions=args.positions, seed=args.seed,
                       weight_scales=args.weight_scale, text_name=args.text, device=args.device,
                       **unknown_options(args))
    figure = result.write(args.out)["figure"]
    if args.json:
        print_json({**result.to_dict(), "figure": str(figure)})
        return 0
    print(result.summary())
    print(f"wrote {figure}")
    return 0
