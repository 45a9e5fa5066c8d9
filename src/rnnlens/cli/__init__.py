"""The `rnnlens` command: it parses arguments and calls one library function per command.

Each module here is one family of commands with `add_parsers(sub)`, which registers its commands and
their `run(args)` functions; no analysis, file layout or workflow logic lives in the CLI. Every user
error is one line, `error: ...`, on stderr with exit status 2; Ctrl-C exits 130 after saving what a
command was working on.
"""

from __future__ import annotations

import sys

from rnnlens.cli import ablate, apps, compare, grid, inspect, train
from rnnlens.cli.common import Parser
from rnnlens.errors import RnnlensError

FAMILIES = (train, inspect, ablate, compare, apps, grid)


def build_parser() -> Parser:
    from rnnlens._version import __version__
    parser = Parser(prog="rnnlens", description="Train character-level RNN, LSTM and GRU language models, "
                    "sample from them, and see inside them.")
    parser.add_argument("--version", action="version", version=f"rnnlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for family in FAMILIES:
        family.add_parsers(sub)
    return parser


def main(argv=None) -> int:
    from rnnlens import reproducibility
    reproducibility.apply_env()  # a no-op when `import rnnlens` already did it (the usual case)
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # a mistyped flag: the subcommand's own one-line error, which names its --help
        (parser._subparsers._group_actions[0].choices.get(args.command) or parser).error(
            f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv  # `train --nproc` starts the same command again in each rank
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
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
