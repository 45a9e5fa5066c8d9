"""`rnnlens report`, `serve` and `export-lstmvis`: a page, a web explorer and an LSTMVis project."""

from __future__ import annotations

from pathlib import Path

from rnnlens.cli.common import add_text_arguments, command, parse_names, progress_shown, say, text_of
from rnnlens.errors import RnnlensError

REPORT_EXAMPLES = """examples:
  rnnlens report runs/shakespeare                                  # the first 20,000 characters of its test split
  rnnlens report runs/shakespeare --text act1.txt --out act1-report.html
  rnnlens report runs/linux --max-chars 100000 --seed 3

writes one self-contained HTML page (no network needed; send it, open it anywhere): the model card,
training curves, samples at temperatures 0.5 / 0.8 / 1.0, the test loss, the interpretable units with
their prediction strips, gate saturation, memory time constants and gradient flow, each explained."""
SERVE_EXAMPLES = """examples:
  rnnlens serve runs/shakespeare --text act1.txt            # then open http://127.0.0.1:8000/
  rnnlens serve runs/lstm runs/gru --text input.txt --port 8001   # two models side by side

a local web page: any unit's activation over text you type, units ranked by the features they
track, LSTMVis-style select and match, the prediction strip and sampling; the JSON API behind it
is described in docs/explorer.md (and at /openapi.json)."""
EXPORT_EXAMPLES = """examples:
  rnnlens export-lstmvis runs/shakespeare --text act1.txt --out lstmvis/shakespeare
  rnnlens export-lstmvis runs/linux --text sched.c --names layer1.cell,layer1.gate.forget --out lstmvis/linux

writes states.h5, train.h5, words.dict and lstm.yml: a project folder for LSTMVis's server
(python server.py -dir lstmvis/)."""


def add_parsers(sub) -> None:
    from rnnlens.report import DEFAULT_MAX_CHARS
    p = command(sub, "report", "One self-contained HTML page that explains a model: what it is, how it trained, "
                "what it writes, and what its units and gates do.", run_report, REPORT_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    add_text_arguments(p, max_chars_default=DEFAULT_MAX_CHARS,
                       text_default="the test split of the corpus the model was trained on")
    p.add_argument("--data", help="where the model's training text is now, if its run cannot find it")
    p.add_argument("--out", default="report.html", help="the page to write (default report.html)")
    p.add_argument("--seed", type=int, default=0, help="samples and gradient positions (default 0)")
    p.add_argument("--ngram-order", type=int, default=20, help="order of the n-gram baseline fitted on the model's "
                   "train split (default 20; 0: no n-gram sections)")
    p.add_argument("--ngram", metavar="NGRAM", help="a fitted n-gram folder (`rnnlens ngram`) to compare with instead")
    p.add_argument("--ablate-chars", type=int, default=2000, metavar="N", help="units table: the loss change when each "
                   "unit is ablated, over the first N characters of the text (default 2,000; 0: no such column)")

    p = command(sub, "serve", "A local web explorer: activations over any text, units ranked by feature, "
                "select and match, predictions and samples, one or two models side by side.", run_serve,
                SERVE_EXAMPLES)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder or .safetensors checkpoint (a second one is "
                   "shown side by side)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text the page starts with (default: a sample of the model)")
    p.add_argument("--split", choices=["train", "val", "test"], help="open this split of the corpus the (first) "
                   "model was trained on instead of --text (cut to --max-text-bytes)")
    p.add_argument("--labels", metavar="FILE", help="per-character labels shown as a track under the text: a UTF-8 "
                   "file with one character per character of the text (a space: no label)")
    p.add_argument("--no-cache", action="store_true", help="trace the text again instead of using or filling the "
                   "explorer cache (under the rnnlens cache folder)")
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 lets anyone who can reach it use it)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-text-bytes", type=int, default=1_000_000, metavar="N",
                   help="largest text a request may carry, in UTF-8 bytes (default 1,000,000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")

    p = command(sub, "export-lstmvis", "Write a model's states over a text as an LSTMVis project "
                "(states HDF5, word-id HDF5, dict and lstm.yml).", run_export_lstmvis, EXPORT_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    add_text_arguments(p)
    p.add_argument("--out", required=True, help="project folder to write")
    p.add_argument("--names", help="comma-separated activations, e.g. layer1.cell,layer1.gate.forget "
                   "(default: every layer's cell and hidden for an LSTM, hidden otherwise)")
    p.add_argument("--project", help="project name shown by LSTMVis (default: rnnlens RUN)")


def run_report(args) -> int:
    from rnnlens.report import build_report
    from rnnlens.runs import read_text
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise RnnlensError(f"the report is an HTML page: --out {out} must end in .html")
    text = source = None
    if args.text:
        full = read_text(args.text, encoding_errors=args.encoding_errors)
        text = full[:args.max_chars] if args.max_chars else full
        source = f"{args.text}, characters 0\u2013{len(text):,} of {len(full):,}"
    report = build_report(args.run, text, text_source=source, device=args.device, progress=progress_shown(args),
                          max_chars=args.max_chars, seed=args.seed, unknown=args.unknown, data=args.data,
                          replacement=args.replacement, ngram_order=args.ngram_order, ngram=args.ngram,
                          ablate_chars=args.ablate_chars)
    print(report.save(out))
    return 0


def run_serve(args) -> int:
    from rnnlens.checks import require
    require("fastapi", "serve", "rnnlens serve")  # before the server module imports it
    require("uvicorn", "serve", "rnnlens serve")
    from rnnlens.corpus import read_text_file
    from rnnlens.explorer import open_explorer
    from rnnlens.explorer.server import check_port, is_local, serve
    check_port(args.host, args.port)  # before the slow part, and once more just before serving
    text, text_name = (read_text_file(args.text, encoding_errors=args.encoding_errors) if args.text else None), \
        args.text
    if args.split:
        if args.text:
            raise RnnlensError("give --text or --split, not both")
        import rnnlens
        from rnnlens.runs import training_corpus
        corpus = training_corpus(rnnlens.load(args.runs[0]))
        text, text_name = corpus.text(args.split), f"the {args.split} split of {corpus.name}"
    labels = read_text_file(args.labels, encoding_errors=args.encoding_errors) if args.labels else None
    explorer = open_explorer(args.runs, text=text, text_name=text_name, device=args.device,
                             max_text_bytes=args.max_text_bytes, log=say, cache=not args.no_cache, labels=labels)
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"rnnlens explorer on http://{url_host}:{args.port}/ ({', '.join(explorer.models)}); "
          "API at /openapi.json; Ctrl-C stops it", flush=True)
    if not is_local(args.host):
        say(f"warning: --host {args.host} lets anyone who can reach this machine use the explorer")
    try:
        serve(explorer, args.host, args.port)
    finally:
        explorer.close()
    return 0


def run_export_lstmvis(args) -> int:
    from rnnlens.lstmvis import check_names, export_lstmvis
    from rnnlens.workflows.inspect import load_rnn
    names = parse_names(args.names)
    lm = load_rnn(args.run, args.device, "the LSTMVis export")
    if names is not None:
        check_names(names, lm.config.cell, lm.config.layers)  # before reading the text
    text = text_of(args)
    files = export_lstmvis(lm, text, args.out, names=names, unknown=args.unknown, replacement=args.replacement,
                           project=args.project, source=str(args.text))
    print(f"wrote an LSTMVis project of {files['chars']:,} characters to {args.out}: states.h5 "
          f"({', '.join(files['datasets'])}), train.h5, words.dict, lstm.yml")
    return 0
