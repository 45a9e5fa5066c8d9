"""What several command families share: the parser class, and the arguments for reading a text."""

from __future__ import annotations

import argparse
import json
import sys

from rnnlens.runs import read_text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: ...; see rnnlens CMD --help`, exit 2) and no abbreviated
    options (`--size` must never quietly mean `--sizes`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def command(sub, name: str, help_text: str, run, examples: str | None = None) -> Parser:
    """A subcommand whose `run(args)` is called with the parsed arguments (as args.handler)."""
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=run)
    return p


def add_device_argument(p, default: str = "cpu") -> None:
    p.add_argument("--device", default=default, help=f"cpu, cuda or auto (default {default})")


def add_unknown_arguments(p, what: str = "characters") -> None:
    p.add_argument("--unknown", choices=["error", "drop", "replace"], default="error",
                   help=f"{what} the model never saw: error (default), drop or replace them")
    p.add_argument("--replacement", help="with --unknown replace: the character to use (default: a space)")


def add_text_arguments(p, max_chars: bool = True, max_chars_default: int | None = None,
                       text_default: str | None = None, unknown: bool = True) -> None:
    """The text a model reads (--text). With `text_default` (words saying what is read without --text),
    --text is optional."""
    p.add_argument("--text", required=text_default is None, metavar="FILE",
                   help="UTF-8 text file to read" + (f" (default: {text_default})" if text_default else ""))
    if max_chars:
        p.add_argument("--max-chars", type=int, metavar="N", default=max_chars_default,
                       help="read only the first N characters of it"
                       + (f" (default {max_chars_default:,})" if max_chars_default else " (default: all)"))
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"])
    if unknown:
        add_unknown_arguments(p)
    add_device_argument(p)


def text_of(args, min_chars: int = 1) -> str:
    """The --text file, cut to --max-chars."""
    return read_text(args.text, max_chars=getattr(args, "max_chars", None), encoding_errors=args.encoding_errors,
                     min_chars=min_chars)


def unknown_options(args) -> dict:
    return {"unknown": args.unknown, "replacement": args.replacement}


def progress_shown(args) -> bool:
    return not getattr(args, "json", False) and sys.stderr.isatty()


def print_json(obj) -> None:
    print(json.dumps(obj))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_names(text: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None stays None."""
    return [n.strip() for n in text.split(",") if n.strip()] if text is not None else None


def finish(args, result, json_files: dict[str, str] | None = None) -> int:
    """Write a workflow's result into --out, then print its summary and the files, or with --json one object:
    the result's data plus `json_files` ({key: file name}) or else every file under "files"."""
    files = result.write(args.out)
    if args.json:
        named = ({key: str(files[name]) for key, name in json_files.items()} if json_files
                 else {"files": {k: str(v) for k, v in files.items()}})
        print_json({**result.to_dict(), **named})
    else:
        print(result.summary())
        print(f"wrote {', '.join(str(f) for f in files.values())}")
    return 0
