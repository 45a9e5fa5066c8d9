"""Features of a text computed from the text alone: one value per character, to hold units against.

Every feature is a function text -> array [T] for a text of T characters: float32 for numeric
features (bracket depth, position in line, ...), bool for on/off ones (inside a string, ...).

What row t means. A trace's row t is the state of the network after it has read character t, so
row t of a feature describes that same moment: the text up to and including character t (plus,
for the few features that look ahead, such as `chars_to_newline`, what comes after). It follows:

* a span (quotes, brackets, strings, comments, conditions) is on from its opening character
  (the opening quote is inside: after reading it the network is inside) up to but not including
  the character that closes it (after reading the closing quote it is outside again);
* a newline belongs to the line it starts: after reading '\\n' the position in the line is 0.

The exact rule of each built-in feature is in its function's docstring (and docs/cells.md).
Users add their own with `regex_feature` (spans of the matches are on), `callable_feature`
(a function returning one value per character), or a `--feature 'name=REGEX'` spec
(`parse_feature_spec`).

All built-ins are vectorised with numpy and Python's `re` engine (which scans in C); their time
on a 1M-character text is in docs/benchmarks.md ("Cell discovery").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rnnlens.errors import RnnlensError

NUMERIC, BINARY = "numeric", "binary"
KINDS = (NUMERIC, BINARY)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class Feature:
    """A named function of the text: `feature(text)` -> validated array [T] (float32 or bool)."""

    name: str
    kind: str | None  # 'numeric' (scored by Pearson r), 'binary' (ROC AUC), None: booleans binary, numbers numeric
    description: str
    function: Callable[[str], object]

    def __call__(self, text: str) -> np.ndarray:
        return _validate(self, self.function(text), len(text))


def _validate(feature: Feature, values, length: int) -> np.ndarray:
    """The feature's values as a 1-D array of one value per character, or a clear error."""
    where = f"feature {feature.name!r}"
    try:
        array = np.asarray(values)
    except Exception as e:  # noqa: BLE001  whatever the function returned cannot become an array
        raise RnnlensError(f"{where} returned something that is not an array of numbers ({e})") from None
    if array.ndim != 1 or array.shape[0] != length:
        raise RnnlensError(f"{where} must give one value per character ({length}); "
                           f"it gave an array of shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.float32) if feature.kind == NUMERIC else array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise RnnlensError(f"{where} must give numbers or booleans; it gave {array.dtype} values")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise RnnlensError(f"{where} gave a non-finite value ({array[bad]}) at character {bad}; "
                           "give a finite number for every character")
    if feature.kind == BINARY:
        if not np.isin(array, (0, 1)).all():
            raise RnnlensError(f"{where} is on/off, so its values must be 0/1 or booleans; "
                               f"it gave {array[~np.isin(array, (0, 1))][0]!r}")
        return array.astype(bool)
    return array.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Shared helpers: code points, newlines, spans


def _codes(text: str) -> np.ndarray:
    """Unicode code points of the text, uint32 [T]."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _char_class(codes: np.ndarray, predicate: Callable[[str], bool]) -> np.ndarray:
    """predicate(ch) for every character, bool [T], calling the predicate once per distinct character."""
    if len(codes) == 0:
        return np.zeros(0, bool)
    distinct = np.flatnonzero(np.bincount(codes))  # code points are < 0x110000: a short table
    table = np.zeros(int(distinct[-1]) + 1, dtype=bool)
    table[distinct] = [predicate(chr(c)) for c in distinct]
    return table[codes]


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _last_newline(codes: np.ndarray) -> np.ndarray:
    """Index of the last '\\n' at or before each t, -1 when none, int64 [T]."""
    index = np.where(codes == 10, np.arange(len(codes)), -1)
    return np.maximum.accumulate(index) if len(codes) else index


def _spans_to_mask(starts, ends, length: int) -> np.ndarray:
    """bool [T], true inside any half-open span [start, end)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    keep = ends > starts
    change = np.bincount(starts[keep], minlength=length + 1) - np.bincount(ends[keep], minlength=length + 1)
    return np.cumsum(change[:length]) > 0


def _regex_spans(pattern: re.Pattern, text: str) -> tuple[list[int], list[int]]:
    starts, ends = [], []
    for m in pattern.finditer(text):
        starts.append(m.start())
        ends.append(m.end())
    return starts, ends


def _clamped_depth(step: np.ndarray) -> np.ndarray:
    """Running sum of +1/-1 steps that never goes below zero (a close with nothing open is ignored)."""
    total = np.cumsum(step, dtype=np.int64)
    floor = np.minimum.accumulate(np.minimum(total, 0)) if len(total) else total
    return (total - floor).astype(np.float32)


def _bracket_steps(codes: np.ndarray, pairs: str) -> np.ndarray:
    """+1 at each opening bracket of `pairs` (e.g. '()[]'), -1 at each closing one, int8 [T]."""
    step = np.zeros(len(codes), dtype=np.int8)
    for opening, closing in zip(pairs[::2], pairs[1::2]):
        step[codes == ord(opening)] = 1
        step[codes == ord(closing)] = -1
    return step


# ---------------------------------------------------------------------------------------------
# The lexer shared by the code features: string literals and comments, scanned left to right.
# `re.search` from the current position finds the leftmost token and the scan resumes after it,
# which is exactly how a lexer decides that a '#' inside "..." is not a comment and a quote inside
# a comment is not a string. Every pattern is an unrolled loop (no nested quantifiers that could
# backtrack), so the scan stays linear.

_LEXER = re.compile(r"""
    (?P<line_comment> //[^\n]* | \#[^\n]* )
  | (?P<block_comment> /\*.*?\*/ )
  | (?P<open_comment> /\*.* )                                   # never closed: to the end
  | (?P<string> \"\"\"[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*\"\"\"
              | '''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*''' )
  | (?P<open_string> \"\"\".* | '''.* )                         # never closed: to the end
  | (?P<line_string> "[^"\\\n]*(?:\\.[^"\\\n]*)*"
                   | '[^'\\\n]*(?:\\.[^'\\\n]*)*' )
""", re.VERBOSE | re.DOTALL)
_BEFORE_LINE_COMMENT = "\n;{},:"  # what may precede '//' (blanks between) for it to open a comment


def _opens_line_comment(text: str, start: int) -> bool:
    """Whether the '//' at `start` opens a comment rather than being Python's floor division or a URL.

    C comments follow a statement end or start a line; Python's `a // b` follows an operand and a
    URL's '//' follows ':' directly. So: the previous non-blank character is a line start or one of
    ; { } , : (and a ':' must be followed by a blank, which `http://` is not)."""
    j = start - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    if j < 0:
        return True
    return text[j] in _BEFORE_LINE_COMMENT and not (text[j] == ":" and j == start - 1)


@lru_cache(maxsize=1)  # the code features of one text share one lexing; keep no more texts alive
def _lex(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(in string literal, in comment), bool [T] each, by the rules of `in_string` and `in_comment`."""
    spans = {"string": ([], []), "comment": ([], [])}
    position = 0
    while (m := _LEXER.search(text, position)) is not None:
        kind = m.lastgroup
        if kind == "line_comment" and text[m.start()] == "/" and not _opens_line_comment(text, m.start()):
            position = m.start() + 2  # floor division or a URL: lex on after the '//'
            continue
        # the character that closes a string or block comment is off (after reading it the state is
        # outside); a line comment's match stops before its newline, and an unclosed one has no end
        end = m.end() - 1 if kind in ("string", "line_string", "block_comment") else m.end()
        starts, ends = spans["string" if kind.endswith("string") else "comment"]
        starts.append(m.start())
        ends.append(end)
        position = m.end()
    T = len(text)
    return _spans_to_mask(*spans["string"], T), _spans_to_mask(*spans["comment"], T)


def _code_mask(text: str) -> np.ndarray:
    strings, comments = _lex(text)
    return ~(strings | comments)


def _first_at_depth(depth: np.ndarray, candidates: np.ndarray, after: np.ndarray, target: np.ndarray,
                    length: int) -> np.ndarray:
    """For each i, the first candidate position > after[i] whose depth equals target[i]; `length` if none.

    Vectorised: candidates sorted by (depth, position) as one int64 key, then one searchsorted.
    """
    if len(after) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(candidates) == 0:
        return np.full(len(after), length, dtype=np.int64)
    shift = int(min(depth.min(), target.min()))
    stride = length + 1
    keys = np.sort((depth[candidates] - shift) * stride + candidates)
    query = (target - shift) * stride + after + 1
    found = np.searchsorted(keys, query)
    hit = np.full(len(after), length, dtype=np.int64)
    ok = found < len(keys)
    ok[ok] = keys[found[ok]] // stride == (target[ok] - shift)
    hit[ok] = keys[found[ok]] % stride
    return hit


def _empty_line_stop(codes: np.ndarray, after: np.ndarray) -> np.ndarray:
    """For each i, the first '\\n' after after[i] that ends an empty (or all-blank) line; len(codes) if none.

    A safety net for the condition features: conditions do not span empty lines, so a bracket the
    lexer got wrong cannot stretch one over the rest of the text."""
    T = len(codes)
    index = np.arange(T)
    newline = codes == 10
    last_visible = np.maximum.accumulate(np.where((codes != 32) & (codes != 9), index, -1))
    before = np.r_[-1, last_visible[:-1]]  # the last non-blank character before t
    empty_end = np.flatnonzero(newline & ((before < 0) | (codes[np.maximum(before, 0)] == 10)))
    found = np.searchsorted(np.append(empty_end, T), after, side="right")
    return np.append(empty_end, T)[np.minimum(found, len(empty_end))]


# ---------------------------------------------------------------------------------------------
# The built-in features. Each docstring is the exact rule.


def line_position(text: str) -> np.ndarray:
    """Characters read since the last newline: t minus the index of the last '\\n' at or before t
    (the text's start counts as a newline at index -1). A '\\n' is 0, the first character of a line 1."""
    codes = _codes(text)
    return (np.arange(len(codes)) - _last_newline(codes)).astype(np.float32)


def chars_to_newline(text: str) -> np.ndarray:
    """Characters after t before the next '\\n' (or the end of the text): 0 for the last character
    of a line; a '\\n' holds the length of the line it starts."""
    codes = _codes(text)
    T = len(codes)
    index = np.where(codes == 10, np.arange(T), T)
    next_newline = np.minimum.accumulate(index[::-1])[::-1]  # first '\n' at or after t
    following = np.append(next_newline[1:], T)                 # first '\n' after t
    return (following - np.arange(T) - 1).astype(np.float32)


def in_double_quotes(text: str) -> np.ndarray:
    """An odd number of '"' characters at or before t: on from an opening '"' (included) to the
    next '"' (excluded). No escapes, spans lines; meant for prose (for code see `in_string`)."""
    return np.cumsum(_codes(text) == ord('"')) % 2 == 1


def in_single_quotes(text: str) -> np.ndarray:
    """Like `in_double_quotes` for "'", except (a) a "'" between two word characters (letters,
    digits, '_') is an apostrophe, not a quote (don't, o'clock); (b) the count restarts at every
    newline (a quote left open at the end of a line is closed there, so a stray apostrophe such as
    'tis or boys' spoils at most one line)."""
    codes = _codes(text)
    word = _char_class(codes, _is_word_char)
    quote = codes == ord("'")
    apostrophe = quote & np.r_[False, word[:-1]] & np.r_[word[1:], False]
    count = np.cumsum(quote & ~apostrophe)
    last_nl = _last_newline(codes)
    before_line = np.where(last_nl >= 0, count[np.maximum(last_nl, 0)], 0)
    return (count - before_line) % 2 == 1


def _code_bracket_depth(text: str, pairs: str) -> np.ndarray:
    return _clamped_depth(_bracket_steps(_codes(text), pairs) * _code_mask(text))


def bracket_depth(text: str) -> np.ndarray:
    """Brackets of all three kinds, (), [] and {}, open after reading t: +1 at each opening bracket
    (counted at itself), -1 at each closing one (counted at itself), never below 0 (a closing bracket
    with nothing open is ignored). Kinds are not matched against each other. Brackets inside string
    literals and comments (as `in_string` and `in_comment` find them) do not count: a '(' in a
    string would otherwise leave the depth one too high for the rest of the text."""
    return _code_bracket_depth(text, "()[]{}")


def paren_depth(text: str) -> np.ndarray:
    """As `bracket_depth`, counting only '(' and ')'."""
    return _code_bracket_depth(text, "()")


def square_depth(text: str) -> np.ndarray:
    """As `bracket_depth`, counting only '[' and ']'."""
    return _code_bracket_depth(text, "[]")


def brace_depth(text: str) -> np.ndarray:
    """As `bracket_depth`, counting only '{' and '}'."""
    return _code_bracket_depth(text, "{}")


_C_CONDITION = re.compile(r"\b(?:if|while|for)\s*\(")
_PY_CONDITION = re.compile(r"^[ \t]*(?:if|elif|while|for)(?=[ \t(\[{])", re.MULTILINE)


def in_c_condition(text: str) -> np.ndarray:
    """C-like condition: the word `if`, `while` or `for` outside strings and comments, then optional
    whitespace and '('; on from that '(' (included) to its matching ')' (excluded), parentheses
    counted outside strings and comments. One never closed ends at the next empty line (or the end
    of the text)."""
    T = len(text)
    code = _code_mask(text)
    codes = _codes(text)
    opens = np.array([m.end() - 1 for m in _C_CONDITION.finditer(text) if code[m.start()]], dtype=np.int64)
    if len(opens) == 0:
        return np.zeros(T, bool)
    depth = np.cumsum(_bracket_steps(codes, "()") * code, dtype=np.int64)
    closes = np.flatnonzero((codes == ord(")")) & code)
    ends = _first_at_depth(depth, closes, opens, depth[opens] - 1, T)
    ends = np.minimum(ends, _empty_line_stop(codes, opens))
    return _spans_to_mask(opens, ends, T)


def in_py_condition(text: str) -> np.ndarray:
    """Python condition: a line whose first word is `if`, `elif`, `while` or `for` (outside strings
    and comments) followed by a blank or an opening bracket; on from the character after the keyword
    up to (excluded) the first ':' that is at the same bracket depth, outside strings and comments
    and not part of ':=', or the first newline at that depth not after a '\\', or the first closing
    bracket that closes a bracket opened before the keyword (an `if` filter on its own line inside a
    comprehension), and never past an empty line. Brackets of all kinds count outside strings and
    comments, so a condition continues over lines inside brackets."""
    T = len(text)
    code = _code_mask(text)
    codes = _codes(text)
    starts = np.array([m.end() for m in _PY_CONDITION.finditer(text) if code[m.end() - 1]], dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(T, bool)
    depth = np.cumsum(_bracket_steps(codes, "()[]{}") * code, dtype=np.int64)
    next_char = np.r_[codes[1:], 0]
    prev_char = np.r_[0, codes[:-1]]
    colon = (codes == ord(":")) & (next_char != ord("="))
    newline = (codes == 10) & (prev_char != ord("\\"))
    candidates = np.flatnonzero((colon | newline) & code)
    outer = depth[starts - 1]
    ends = _first_at_depth(depth, candidates, starts - 1, outer, T)
    closes = np.flatnonzero(_bracket_steps(codes, "()[]{}") * code < 0)
    ends = np.minimum(ends, _first_at_depth(depth, closes, starts - 1, outer - 1, T))
    ends = np.minimum(ends, _empty_line_stop(codes, starts))
    return _spans_to_mask(starts, ends, T)


def in_comment(text: str) -> np.ndarray:
    """Comments outside string literals: '#' to the end of the line, '/* ... */', and '//' to the
    end of the line when the previous non-blank character is a line start or one of ; { } , : (a
    ':' only with a blank between, so `http://` is no comment; `a // b`, Python's floor division,
    is none either). On from the comment's first character; a line comment's newline is off, a
    block comment's final '/' is off. C-like and Python rules together: in C, a preprocessor line
    (#include) reads as a comment."""
    return _lex(text)[1].copy()


def in_string(text: str) -> np.ndarray:
    """String literals of Python and C outside comments: '...' and "..." within one line with
    backslash escapes, and Python's triple-quoted '''...''' and \"\"\"...\"\"\" across lines. On from
    the opening quote to the closing one (excluded; a triple quote's first two closing quotes are
    on). A quote never closed on its line opens no string; an unclosed triple quote runs to the end."""
    return _lex(text)[0].copy()


def indent(text: str) -> np.ndarray:
    """Indentation of the current line in columns, counting the blanks at the line's start read so
    far: a space is 1 column, a tab 8. During the leading blanks it grows with each one; after them
    it is the line's full indentation; a '\\n' is 0 (it starts a new line)."""
    codes = _codes(text)
    width = np.where(codes == 32, 1, np.where(codes == 9, 8, 0)).astype(np.int64)
    last_nl = _last_newline(codes)
    index = np.arange(len(codes))
    # leading blanks: no character other than a blank since the last newline
    last_other = np.maximum.accumulate(np.where(width == 0, index, -1)) if len(codes) else index
    leading = (last_other == last_nl) & (width > 0)
    total = np.cumsum(width * leading)
    before_line = np.where(last_nl >= 0, total[np.maximum(last_nl, 0)], 0)
    return (total - before_line).astype(np.float32)


_URL = re.compile(r"(?:\b(?:https?|ftp|file)://|\bwww\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]")


def in_url(text: str) -> np.ndarray:
    """The span of each match of `(https?|ftp|file)://` or `www.` followed by characters other than
    blanks and <>"'` , without trailing punctuation (.,;:!?)]}); the first character of the URL is on."""
    return _spans_to_mask(*_regex_spans(_URL, text), len(text))


def word_position(text: str) -> np.ndarray:
    """1-based position of character t in its word, a run of letters, digits and '_' (Unicode);
    0 when t is not a word character."""
    codes = _codes(text)
    word = _char_class(codes, _is_word_char)
    index = np.arange(len(codes))
    last_break = np.maximum.accumulate(np.where(word, -1, index)) if len(codes) else index
    return np.where(word, index - last_break, 0).astype(np.float32)


_SENTENCE_START = re.compile(r"(?:(?<=[.!?])['\"’”)\]]*\s|\A)[\s'\"‘“(\[]*\w")


def sentence_start(text: str) -> np.ndarray:
    """Between sentences: on from the character after a sentence end up to and including the first
    letter or digit of the next sentence. A sentence ends with '.', '!' or '?' followed, possibly
    after closing quotes or brackets, by a blank; the start of the text counts as one."""
    return _spans_to_mask(*_regex_spans(_SENTENCE_START, text), len(text))


def uppercase(text: str) -> np.ndarray:
    """Character t is an uppercase letter (str.isupper)."""
    codes = _codes(text)
    if len(codes) and codes.max() < 128:
        return (codes >= ord("A")) & (codes <= ord("Z"))
    return _char_class(codes, str.isupper)


def _builtin(function, kind: str, description: str) -> Feature:
    return Feature(function.__name__, kind, description, function)


FEATURES: dict[str, Feature] = {f.name: f for f in [
    _builtin(line_position, NUMERIC, "position in the line: characters since the last newline"),
    _builtin(chars_to_newline, NUMERIC, "characters left before the next newline"),
    _builtin(in_double_quotes, BINARY, 'inside "double quotes" (prose rule: every " toggles)'),
    _builtin(in_single_quotes, BINARY, "inside 'single quotes' (apostrophes skipped, closed at each newline)"),
    _builtin(bracket_depth, NUMERIC, "open brackets of all kinds: (), [] and {}"),
    _builtin(paren_depth, NUMERIC, "open parentheses ()"),
    _builtin(square_depth, NUMERIC, "open square brackets []"),
    _builtin(brace_depth, NUMERIC, "open braces {}"),
    _builtin(in_c_condition, BINARY, "inside a C-like if/while/for (...) condition"),
    _builtin(in_py_condition, BINARY, "inside a Python if/elif/while/for condition, up to its ':'"),
    _builtin(in_comment, BINARY, "inside a comment: //, /* */ or #"),
    _builtin(in_string, BINARY, "inside a string literal of code (escapes, triple quotes)"),
    _builtin(indent, NUMERIC, "indentation of the line in columns (tab = 8)"),
    _builtin(in_url, BINARY, "inside a URL"),
    _builtin(word_position, NUMERIC, "position in the word (0 outside words)"),
    _builtin(sentence_start, BINARY, "between a sentence end and the next sentence's first letter"),
    _builtin(uppercase, BINARY, "an uppercase letter"),
]}


# ---------------------------------------------------------------------------------------------
# User features


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RnnlensError(f"a feature name is a letter or '_' then letters, digits, '_', '.' or '-'; got {name!r}")
    return name


def regex_feature(name: str, pattern: str, description: str | None = None) -> Feature:
    """An on/off feature: on over the span of every match of `pattern` (Python `re` syntax; flags
    inline, e.g. '(?m)^def ' or '(?i)todo'). Empty matches mark nothing."""
    _check_name(name)
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        where = f" at position {e.pos}" if e.pos is not None else ""
        raise RnnlensError(f"the regex of feature {name!r} is not valid: {e.msg}{where} in {pattern!r}") from None

    def matches(text: str) -> np.ndarray:
        return _spans_to_mask(*_regex_spans(compiled, text), len(text))
    return Feature(name, BINARY, description or f"inside a match of /{pattern}/", matches)


def callable_feature(name: str, function: Callable[[str], object], kind: str | None = None,
                     description: str | None = None) -> Feature:
    """A feature from any function text -> one value per character (a list or array [T]).

    kind: 'numeric' or 'binary'; None (the default) takes it from the values: booleans are binary,
    numbers numeric. The values are checked on every call: length T, numbers or booleans, finite,
    and 0/1 when binary.
    """
    _check_name(name)
    if not callable(function):
        raise RnnlensError(f"feature {name!r} needs a function text -> values; got {type(function).__name__}")
    if kind is not None and kind not in KINDS:
        raise RnnlensError(f"feature kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return Feature(name, kind, description or f"user function {getattr(function, '__name__', name)}", function)


def parse_feature_spec(spec: str) -> Feature:
    """'name=REGEX' (the `--feature` option) -> a regex feature."""
    name, sep, pattern = str(spec).partition("=")
    if not sep or not name.strip() or not pattern:
        raise RnnlensError(f"--feature takes NAME=REGEX, e.g. --feature 'url=https?://\\S+'; got {spec!r}")
    return regex_feature(name.strip(), pattern)


def resolve_features(features: Iterable[str | Feature] | None = None) -> list[Feature]:
    """Names of built-ins and Feature objects -> Features (default: every built-in), names unique."""
    if features is None:
        return list(FEATURES.values())
    if isinstance(features, (str, Feature)):
        features = [features]
    resolved = []
    for f in features:
        if isinstance(f, Feature):
            resolved.append(f)
        elif isinstance(f, str) and f in FEATURES:
            resolved.append(FEATURES[f])
        else:
            raise RnnlensError(f"no feature named {f!r}; built-in features: {', '.join(FEATURES)} "
                               "(add your own with --feature NAME=REGEX)")
    names = [f.name for f in resolved]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RnnlensError(f"feature name {twice[0]!r} is given twice; give each feature its own name")
    if not resolved:
        raise RnnlensError("no features to score; name some or leave the list out for all built-ins")
    return resolved


def compute_features(text: str, features: Sequence[str | Feature] | None = None) -> dict[str, np.ndarray]:
    """{name: values [T]} for the given features (default: every built-in)."""
    return {f.name: f(text) for f in resolve_features(features)}
