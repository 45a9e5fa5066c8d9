"""`rnnlens ablate`: change units of a model and see what happens (rnnlens.workflows.ablate)."""

from __future__ import annotations

from rnnlens.cli.common import add_text_arguments, command, print_json, say, text_of

ABLATE_EXAMPLES = """examples:
  rnnlens ablate runs/shakespeare --unit 1:42 --text act1.txt --out ablate-1-42/
  rnnlens ablate runs/linux --unit 1:42 --unit layer0.gate.forget:7 --to mean --text sched.c --out out/
  rnnlens ablate runs/shakespeare --unit 1:3,4,5 --to 0.5 --text act1.txt --out out/ --json

a unit is LAYER:UNIT (the cell of an LSTM, the hidden state of a GRU or RNN) or NAME:UNIT[,UNIT...]
with a trace name (layer1.gate.forget:7). Writes into --out: ablate.html (each character coloured by
the change in its loss), delta.npy, classes.csv/.md/.png (loss by class, as trained and ablated),
features.csv (the features of the text whose loss rises or falls most), samples.md (the units clamped
low, left alone and clamped high, at the same seed) and ablate.json. See docs/interventions.md."""


def add_parsers(sub) -> None:
    p = command(sub, "ablate", "Ablate units inside the recurrence and show what changes: loss per character, "
                "by class and by feature of the text, and samples with the units clamped low, free and high.",
                run_ablate, ABLATE_EXAMPLES)
    p.add_argument("run", help="run folder or .safetensors checkpoint (RNN, LSTM or GRU)")
    p.add_argument("--unit", action="append", required=True, metavar="LAYER:UNIT",
                   help="units to ablate together: 1:42, 1:3,4, layer0.gate.forget:7; repeatable")
    p.add_argument("--to", default="zero", help="zero (default), mean (the unit's mean over the text) or a number")
    p.add_argument("--out", required=True, help="folder for the page, tables and samples")
    add_text_arguments(p)
    p.add_argument("--prime", help="the samples' prime (default: a newline)")
    p.add_argument("--sample-length", type=int, default=200, help="characters per sample (default 200; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="the samples' seed (default 0)")
    p.add_argument("--temperature", type=float, default=0.8, help="the samples' temperature (default 0.8)")
    p.add_argument("--low", type=float, help="clamp value of the 'low' sample (default: each unit's minimum "
                   "over the text)")
    p.add_argument("--high", type=float, help="clamp value of the 'high' sample (default: each unit's maximum)")
    p.add_argument("--html-start", type=int, default=0, help="first character shown on the page (default 0)")
    p.add_argument("--html-length", type=int, default=20_000, help="characters shown on the page (default 20,000)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")


def run_ablate(args) -> int:
    from rnnlens.workflows.ablate import ablate
    result = ablate(args.run, text_of(args, min_chars=2), units=args.unit, to=args.to, text_name=args.text,
                    sample_length=args.sample_length, prime=args.prime, seed=args.seed,
                    temperature=args.temperature, low=args.low, high=args.high, html_start=args.html_start,
                    html_length=args.html_length, device=args.device, unknown=args.unknown)
    files = result.write(args.out)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.summary())
        say(f"wrote {', '.join(sorted(files))} into {args.out}")
    return 0
