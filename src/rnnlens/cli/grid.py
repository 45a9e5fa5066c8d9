"""`rnnlens grid`: the paper's experiment grid, one process per cell, resumable."""

from __future__ import annotations

from pathlib import Path

from rnnlens.cli.common import command, say
from rnnlens.errors import RnnlensError

GRID_EXAMPLES = """examples:
  rnnlens grid --data warandpeace --match-params --time-budget 30m --out grids/wp --dry-run
  rnnlens grid --data warandpeace --types lstm,gru,rnn --layers 1,2,3 --sizes 64,128,256,512 \\
      --match-params --max-epochs 50 --optimizer rmsprop --lr 2e-3 --batch-size 100 --out grids/wp --workers 2
  rnnlens grid --data input.txt --types lstm,rnn --layers 1 --sizes 32,64 --max-steps 500 --out grids/small

re-running the same command skips finished cells, resumes interrupted ones and retries failed ones;
writes GRID/table.md, table.csv, table.html, results.csv, map.png, map.json and grid.json."""


def add_parsers(sub) -> None:
    """`rnnlens grid`: its own options, then every option of `rnnlens train` except those each cell sets."""
    import argparse

    from rnnlens.cli.train import add_train_arguments
    from rnnlens.grid import CELL_OPTIONS, DEFAULT_LAYERS, DEFAULT_MAP_CHARS, DEFAULT_SIZES, DEFAULT_TYPES
    p = command(sub, "grid", "The paper's experiment grid: train every cell type x depth x size, one process per "
                "cell and resumable, then tabulate the test losses beside an n-gram and map the models by their "
                "predictions.", run_grid, GRID_EXAMPLES)
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
    for group in train._action_groups:  # the train parser's own groups, minus what a grid sets per cell (and the
        # grid's own --threads, per worker)
        actions = [a for a in group._group_actions if a.option_strings and a.dest not in CELL_OPTIONS
                   and a.dest not in ("help", "threads")]
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


def run_grid(args) -> int:
    from rnnlens.corpus import parse_split
    from rnnlens.grid import cell_state_text, format_plan, plan_grid, run_grid
    from rnnlens.render.grid_table import table_markdown
    from rnnlens.trainer import parse_duration
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
    print()
    print(table_markdown(result.table), end="")
    print("wrote " + ", ".join(str(p) for p in result.files.values()) + f" and {Path(args.out) / 'grid.json'}")
    if result.failed:
        say(f"{len(result.failed)} cell(s) failed: {', '.join(result.failed)}; see {Path(args.out) / 'logs'} and "
            "grid.json; run the same command again to retry them")
    if result.interrupted:
        say(f"{len(result.interrupted)} cell(s) stopped before their end: {', '.join(result.interrupted)}; "
            "run the same command again to resume them")
    return 1 if result.failed or result.interrupted else 0
