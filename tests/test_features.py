"""Text features: exact values on hand-written strings, agreement with Python's own tokenizer and
parser on standard-library source, user features and their errors."""

import ast
import importlib
import inspect
import io
import re
import tokenize

import numpy as np
import pytest

from rnnlens.analysis import features as F
from rnnlens.analysis.features import (
    BINARY,
    FEATURES,
    NUMERIC,
    callable_feature,
    compute_features,
    parse_feature_spec,
    regex_feature,
    resolve_features,
)
from rnnlens.errors import RnnlensError


def marks(values: np.ndarray) -> str:
    """One character per row: '1'/'.' for on/off, 0-9 then a-z for small numbers."""
    if values.dtype == np.bool_:
        return "".join("1" if v else "." for v in values)
    return "".join("0123456789abcdefghijklmnopqrstuvwxyz"[int(v)] for v in values)


# (feature, text, expected marks): row t is the state after reading character t
EXACT = [
    ("line_position", "ab\ncd\n\nx", "12012001"),
    ("chars_to_newline", "ab\ncde\n\nf", "103210010"),
    # the opening quote is inside, the closing one outside; double quotes span lines
    ("in_double_quotes", 'a "b\nc" d "e', "..1111....11"),
    # it's: an apostrophe; a quote left open closes at the newline
    ("in_single_quotes", "it's 'ab' x\n'c d\ne'", ".....111....1111..1"),
    # a bracket counts at itself; unmatched ')' ignored; brackets in strings and comments ignored
    ("bracket_depth", "a(b[c]{d})) ( ')' # (\nx", "01122122100011111111111"),
    ("paren_depth", "(a[b)]", "111100"),
    ("square_depth", "(a[b)]", "001110"),
    ("brace_depth", "{a{b}}}{", "11221001"),
    # from '(' to its matching ')' (excluded); not 'elif', not inside a string
    ("in_c_condition", 'if (a(b)) { while(x) y; } elif (z) "if (q)"', "...11111.........11........................"),
    # from the blank after the keyword up to ':' at the same depth; a newline inside brackets continues it
    ("in_py_condition", "if a[1:2] and b:\n  x\nwhile (a\n  and b) :\n", "..1111111111111...........1111111111111.."),
    # ':=' is no end; a comment is no condition; ':' inside braces is no end
    ("in_py_condition", "    elif n := f(x): y\n# if c:\nfor k in {1: 2}:\n",
     "........1111111111...............111111111111.."),
    # a comprehension's 'if' on its own line ends where its bracket closes; an empty line stops a runaway
    ("in_py_condition", "x = [a\n     if a)\nb\nif (c\n\nd", "..............11......1111.."),
    # '#' in a string is none; '//' after an operand is floor division; a block comment's '/' is off
    ("in_comment", "x = '#' # c\ny // z\n/* a\nb */ q http://x", "........111........11111111............"),
    ("in_comment", "a // b\nf(); // c\n/* x", "............1111.1111"),
    # escapes, triple quotes over lines, a string-looking thing in a comment
    ("in_string", "s = 'a\\'b' + \"c\" + '''d\ne''' # 'x'\n", "....11111....11....11111111........"),
    # an unclosed triple quote runs to the end
    ("in_string", "don't 'x\n\"\"\"doc\n", "...111...1111111"),
    ("indent", "a\n  b\n\t c\n", "0012208990"),
    ("in_url", "see https://x.org/a. ok www.b.c", "....111111111111111.....1111111"),
    ("word_position", "ab c_d.\u00e91", "120123012"),
    ("sentence_start", 'Hi. The end! "Yes" ok', "1..11.......111......"),
    ("uppercase", "aB\u00c9c1", ".11.."),
]


@pytest.mark.parametrize("name,text,expected", EXACT, ids=[f"{c[0]}-{i}" for i, c in enumerate(EXACT)])
def test_exact_values(name, text, expected):
    values = FEATURES[name](text)
    assert len(values) == len(text)
    assert marks(values) == expected


def test_registry_kinds_dtypes_and_rules():
    assert len(FEATURES) >= 15
    for name, f in FEATURES.items():
        assert f.name == name and f.kind in (NUMERIC, BINARY) and f.description
        assert f.function.__doc__ and len(f.function.__doc__) > 40, f"{name} documents no exact rule"
        values = f("if (a): 'x' # c\nB. Hello http://e.f\n")
        assert values.dtype == (np.bool_ if f.kind == BINARY else np.float32), name
        assert f("").shape == (0,), name  # an empty text gives empty arrays, not errors
    values = compute_features("ab\n", ["line_position", "uppercase"])
    assert list(values) == ["line_position", "uppercase"]


def test_positions_count_characters_not_bytes():
    text = "\u00e9\u00e9\u00e9\n\u4e2d\u6587"
    assert marks(FEATURES["line_position"](text)) == "123012"
    assert marks(FEATURES["chars_to_newline"](text)) == "210210"


def python_source(module: str) -> str:
    return inspect.getsource(importlib.import_module(module))


def tokenizer_reference(src: str) -> tuple[np.ndarray, np.ndarray]:
    """Strings and comments as Python's own tokenizer sees them, in this module's row convention."""
    starts = np.cumsum([0] + [len(line) for line in src.splitlines(keepends=True)])
    strings, comments = np.zeros(len(src), bool), np.zeros(len(src), bool)
    fstring_start, nesting = None, 0
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        a, b = starts[tok.start[0] - 1] + tok.start[1], starts[tok.end[0] - 1] + tok.end[1]
        name = tokenize.tok_name[tok.type]
        if name == "STRING":
            quote = min(i for i in (tok.string.find("'"), tok.string.find('"')) if i >= 0)  # after any prefix
            strings[a + quote:b - 1] = True
        elif name == "FSTRING_START":  # Python >= 3.12 splits f-strings into tokens
            fstring_start = (a + len(tok.string) - 1) if nesting == 0 else fstring_start
            nesting += 1
        elif name == "FSTRING_END":
            nesting -= 1
            if nesting == 0:
                quote_len = len(tok.string)
                strings[fstring_start - (quote_len - 1):b - 1] = True
        elif name == "COMMENT" and nesting == 0:
            comments[a:b] = True
    return strings, comments


@pytest.mark.parametrize("module", ["argparse", "textwrap", "json.decoder", "email.message"])
def test_strings_and_comments_match_pythons_tokenizer(module):
    src = python_source(module)
    strings, comments = tokenizer_reference(src)
    assert strings.sum() > 1000 and comments.sum() > 100
    np.testing.assert_array_equal(F.in_string(src), strings)
    np.testing.assert_array_equal(F.in_comment(src), comments)


def ast_condition_spans(src: str) -> tuple[np.ndarray, np.ndarray]:
    """(statement conditions, comprehension clauses) as masks: the test expression of every
    if/elif/while, target..iter of every for; the same for comprehensions."""
    lines = src.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(line) for line in lines])

    def at(line, col):  # ast columns are UTF-8 byte offsets
        return starts[line - 1] + len(lines[line - 1].encode()[:col].decode())
    statements, comprehensions = np.zeros(len(src), bool), np.zeros(len(src), bool)
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.If, ast.While)):
            first, last = node.test, node.test
        elif isinstance(node, ast.For):
            first, last = node.target, node.iter
        elif isinstance(node, ast.comprehension):
            first, last = node.target, (node.ifs[-1] if node.ifs else node.iter)
        else:
            continue
        mask = comprehensions if isinstance(node, ast.comprehension) else statements
        mask[at(first.lineno, first.col_offset):at(last.end_lineno, last.end_col_offset)] = True
    return statements, comprehensions


@pytest.mark.parametrize("module", ["argparse", "collections", "email.message"])
def test_python_conditions_match_the_ast(module):
    src = python_source(module)
    on = F.in_py_condition(src)
    statements, comprehensions = ast_condition_spans(src)
    assert statements.sum() > 2000
    assert not (statements & ~on).any(), "a statement's condition is not covered"
    extra = np.flatnonzero(on & ~statements & ~comprehensions)
    # beyond the expressions, only what surrounds them: blanks, brackets, line breaks
    assert {src[i] for i in extra} <= set(" \t\n()[]{}\\")


def test_bracket_depth_returns_to_zero_on_real_code():
    src = python_source("argparse")
    depth = FEATURES["bracket_depth"](src)
    # every def and class starts outside all brackets: no bracket in a string or comment leaked
    starts = [m.start() for m in re.finditer(r"(?m)^[ \t]*(?:def|class) ", src)]
    assert len(starts) > 100 and (depth[starts] == 0).all()
    assert depth[-1] == 0 and 1 <= depth.max() <= 6


def test_regex_feature_marks_match_spans():
    f = regex_feature("todo", r"(?i)todo:?")
    assert f.kind == BINARY and "todo" in f.description
    assert marks(f("a TODO: b todo")) == "..11111...1111"
    assert not regex_feature("nothing", r"x*")("abc").any()  # empty matches mark nothing
    spec = parse_feature_spec(r"url=https?://\S+")
    assert spec.name == "url" and marks(spec("go http://a.b now")) == "...1111111111...."


@pytest.mark.parametrize("spec,phrase", [
    ("url", "NAME=REGEX"),
    ("=abc", "NAME=REGEX"),
    ("url=", "NAME=REGEX"),
    ("bad name=x", "feature name"),
    ("paren=(a", "not valid: missing ), unterminated subpattern at position 0"),
    ("cls=[a-", "not valid"),
])
def test_bad_feature_specs(spec, phrase):
    with pytest.raises(RnnlensError) as e:
        parse_feature_spec(spec)
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_callable_features_and_their_checks():
    vowels = callable_feature("vowel", lambda t: [c in "aeiou" for c in t])
    assert vowels("bae").dtype == np.bool_ and marks(vowels("bae")) == ".11"
    length = callable_feature("code", lambda t: [ord(c) % 3 for c in t])
    assert length("abc").dtype == np.float32 and list(length("abc")) == [1, 2, 0]
    as_numeric = callable_feature("flag", lambda t: np.ones(len(t), bool), kind=NUMERIC)
    assert as_numeric("ab").dtype == np.float32
    as_binary = callable_feature("flag", lambda t: np.arange(len(t)) % 2, kind=BINARY)
    assert marks(as_binary("abcd")) == ".1.1"
    cases = [
        (callable_feature("short", lambda t: [1.0]), "one value per character (3)"),
        (callable_feature("words", lambda t: list(t)), "numbers or booleans"),
        (callable_feature("nan", lambda t: [0.0, float("nan"), 1.0]), "non-finite value (nan) at character 1"),
        (callable_feature("two", lambda t: [0, 2, 1], kind=BINARY), "0/1"),
        (callable_feature("grid", lambda t: np.zeros((3, 2))), "shape (3, 2)"),
    ]
    for feature, phrase in cases:
        with pytest.raises(RnnlensError) as e:
            feature("abc")
        assert phrase in str(e.value) and feature.name in str(e.value)
    with pytest.raises(RnnlensError, match="needs a function"):
        callable_feature("x", 3)
    with pytest.raises(RnnlensError, match="numeric, binary"):
        callable_feature("x", len, kind="ordinal")


def test_resolve_features_errors():
    assert [f.name for f in resolve_features(None)] == list(FEATURES)
    assert resolve_features("indent")[0] is FEATURES["indent"]
    with pytest.raises(RnnlensError, match="no feature named 'depth'.*bracket_depth"):
        resolve_features(["depth"])
    with pytest.raises(RnnlensError, match="'indent' is given twice"):
        resolve_features(["indent", regex_feature("indent", "x")])
    with pytest.raises(RnnlensError, match="no features"):
        resolve_features([])
