"""Argument checks, scikit-learn style: parameters are validated up front, and the message names the
parameter and the values it accepts. Every layer may use these (they import nothing but errors)."""

from __future__ import annotations

import math

from rnnlens.errors import RnnlensError


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise RnnlensError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_range(name, value, low=None, high=None, *, integer=False, low_open=False, high_open=False):
    """Validate a hyperparameter up front, scikit-learn style: the message names the parameter and range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer and ok:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
        rng = " and ".join(s for s in (lo, hi) if s)
        kind = "an integer" if integer else "a number"
        raise RnnlensError(f"{name} must be {kind} {rng}; got {value!r}")


def parse_count(text: str, name: str = "--params") -> int:
    """'3.3M' -> 3300000, '250k' -> 250000, '1e6' -> 1000000."""
    t = str(text).strip().lower()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale != 1 else t) * scale
    except ValueError:
        raise RnnlensError(f"{name} must be a count like 250k, 3.3M or 1e6; got {text!r}") from None
    check_range(name, value, 1, None)
    return round(value)


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or raise a one-line RnnlensError naming the pip command that adds it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RnnlensError(f"{what} needs the {module} package: pip install 'rnnlens[{extra}]'") from None
