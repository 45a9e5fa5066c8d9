"""Text -> Corpus: a vocabulary of Unicode characters and the whole text as one compact,
memory-mapped id array, cut into train / val / test by position.

Rules
-----
* Characters are Unicode code points, not bytes. The vocabulary is the set of characters of
  the whole text, sorted by code point, so the same text always gives the same ids.
* The id array is stored as uint8 when the vocabulary has <= 256 characters, uint16 when
  <= 65536, else uint32 (``Vocab.dtype``).
* Splits are positions in the character array, cut before any batching:
  train = [0, a), val = [a, b), test = [b, N) with a = floor(N * f_train) and
  b = floor(N * (f_train + f_val)), both computed exactly on the decimal value of the
  fractions (so 100 * 0.29 gives 29, not 28); b = N when the test fraction is 0.
* Preparation runs once per content: the source bytes are hashed (sha256, together with the
  options that change the result) and the result is cached in
  ``cache_root()/corpora/<hash>/`` as ``data.bin`` (raw ids), ``vocab.json`` and ``meta.json``.
  The folder is built under a temporary name and renamed into place, so an interrupted run
  never leaves a cache that is later trusted. A second call with the same content only pays
  the hash pass.
* Preparation streams: bytes are read in chunks of ``CHUNK_BYTES`` and decoded with an
  incremental UTF-8 decoder, so memory stays bounded whatever the file size. Pass 1 hashes,
  pass 2 finds the character set (and checks the UTF-8), pass 3 writes the ids.
* A folder source takes the files matched by a glob: a pattern with a '/' is relative to the
  folder (``**`` matches any depth, e.g. ``src/**/*.c``); a pattern without one matches file
  names at any depth (``*.txt`` is ``**/*.txt``). The default ``**/*`` takes every file except
  hidden ones. The files are sorted by relative path,
  shuffles them with ``random.Random(seed)`` and concatenates them as they are.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import lzma
import math
import os
import random
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from rnnlens.cache import cache_root
from rnnlens.errors import RnnlensError

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_SPLIT",
    "Corpus",
    "Vocab",
    "cache_root",
    "load_corpus",
    "parse_split",
    "prepare_corpus",
]

#: Bytes read per step when hashing, scanning and encoding (tests shrink it).
CHUNK_BYTES = 16 * 1024 * 1024
#: Split used for files and folders when none is given.
DEFAULT_SPLIT = (0.9, 0.05, 0.05)
#: Bumped whenever the cache layout or the encoding rules change.
FORMAT_VERSION = 1
ENCODING_ERRORS = ("strict", "replace", "ignore")
UNKNOWN_POLICIES = ("error", "drop", "replace")
DEFAULT_GLOB = "**/*"
_MAX_CP = 0x110000
_INDEX_STEP = 1 << 21  # code points looked up at a time (bounds the int64 index copies)
_DECODE_STEP = 4 * 1024 * 1024  # bytes decoded at a time (bounds the str and UTF-32 copies)
_SPLIT_NAMES = ("train", "val", "test")
# Corpus.compressed_bits measures a longer split on this many symbols, in this many evenly spaced pieces
COMPRESSED_SAMPLE, COMPRESSED_PIECES = 4_000_000, 4


# ----------------------------------------------------------------------------- vocabulary

class Vocab:
    """The characters of a corpus, sorted by code point; id i is ``chars[i]``.

    ``encode`` maps text to int64 ids. Characters outside the vocabulary follow ``unknown``:
    ``"error"`` (default) raises RnnlensError listing them, ``"drop"`` removes them,
    ``"replace"`` puts ``replacement`` in their place. When no replacement is given the rule
    is: ``' '`` if it is in the vocabulary, else U+FFFD, else ``'?'``, else the character with
    the lowest code point.
    """

    def __init__(self, chars: Iterable[str]):
        chars = set(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise RnnlensError(f"a vocabulary entry must be one character, got {c!r}; "
                                   "rebuild the vocabulary from text")
        self.chars: list[str] = sorted(chars)
        self._cps = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._cps_u32 = self._cps.astype("<u4")

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(tuple(self.chars))

    def __repr__(self) -> str:
        shown = "".join(self.chars[:40])
        more = "" if len(self) <= 40 else f"... (+{len(self) - 40})"
        return f"Vocab({len(self)} chars: {shown!r}{more})"

    def __contains__(self, ch: object) -> bool:
        if not isinstance(ch, str) or len(ch) != 1:
            return False
        i = int(np.searchsorted(self._cps, ord(ch)))
        return i < len(self._cps) and self._cps[i] == ord(ch)

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned integer type that holds every id."""
        n = len(self.chars)
        if n <= 256:
            return np.dtype(np.uint8)
        if n <= 65536:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def index(self, ch: str) -> int:
        """Id of one character (RnnlensError when it is not in the vocabulary)."""
        if ch not in self:
            raise RnnlensError(f"character {ch!r} is not in the vocabulary; "
                               "use a character the model was trained on")
        return int(np.searchsorted(self._cps, ord(ch)))

    def default_replacement(self) -> str:
        """The character ``encode(unknown="replace")`` uses when none is given."""
        if not self.chars:
            raise RnnlensError("the vocabulary is empty; build it from some text")
        for c in (" ", "\ufffd", "?"):
            if c in self:
                return c
        return self.chars[0]

    def _lookup(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, known mask) for every character of text."""
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        if len(self._cps) == 0:
            return np.zeros(len(cps), np.int64), np.zeros(len(cps), bool)
        idx = np.searchsorted(self._cps, cps)
        idx_c = np.minimum(idx, len(self._cps) - 1)
        known = self._cps[idx_c] == cps
        return idx_c, known

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of text that are not in the vocabulary, in order of first
        appearance."""
        _, known = self._lookup(text)
        if known.all():
            return []
        seen: dict[str, None] = {}
        for i in np.flatnonzero(~known):
            seen.setdefault(text[i], None)
        return list(seen)

    def encode(self, text: str, unknown: str = "error", replacement: str | None = None) -> np.ndarray:
        """Text -> int64 ids of shape [len]. See the class docstring for ``unknown``."""
        if unknown not in UNKNOWN_POLICIES:
            raise RnnlensError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}")
        if not isinstance(text, str):
            raise RnnlensError(f"can only encode text (str), got {type(text).__name__}")
        ids, known = self._lookup(text)
        if known.all():
            return ids
        if unknown == "error":
            missing = self.unknown_chars(text)
            count = int((~known).sum())
            shown = ", ".join(repr(c) for c in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise RnnlensError(
                f"the text has {count} character{'s' if count != 1 else ''} not in the vocabulary "
                f"({len(missing)} distinct: {shown}{more}); use --unknown drop or --unknown replace")
        if unknown == "drop":
            return ids[known]
        if replacement is None:
            replacement = self.default_replacement()
        if replacement not in self:
            raise RnnlensError(f"the replacement character {replacement!r} is not in the vocabulary; "
                               "pick one that is (e.g. a space)")
        ids = ids.copy()
        ids[~known] = self.index(replacement)
        return ids

    def translate(self, ids, to: "Vocab", unknown: str = "error") -> np.ndarray:
        """Ids in this vocabulary -> ids in `to` (a text scored by a model of another corpus); characters
        `to` lacks are an error, or dropped with unknown='drop'."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.chars == to.chars:
            return ids
        index = {c: i for i, c in enumerate(to.chars)}
        mapping = np.array([index.get(c, -1) for c in self.chars], dtype=np.int64)
        out = mapping[ids]
        if (out < 0).any():
            if unknown == "drop":
                return out[out >= 0]
            missing = sorted({self.chars[j] for j in np.unique(ids[out < 0])})
            shown = ", ".join(repr(c) for c in missing[:20])
            raise RnnlensError(f"the text has {len(missing)} characters the model never saw ({shown}); "
                               "evaluate on text from the model's corpus, or use --unknown drop")
        return out

    def decode(self, ids) -> str:
        """Ids (list, numpy array or CPU tensor) -> text."""
        arr = np.asarray(ids)
        if arr.size == 0:
            return ""
        if arr.dtype.kind not in "iu":
            raise RnnlensError(f"ids must be integers, got {arr.dtype}")
        arr = arr.reshape(-1)
        if arr.min() < 0 or arr.max() >= len(self.chars):
            bad = int(arr[(arr < 0) | (arr >= len(self.chars))][0])
            raise RnnlensError(f"id {bad} is outside the vocabulary of {len(self.chars)} characters; "
                               "decode with the vocabulary the ids came from")
        return self._cps_u32[arr].tobytes().decode("utf-32-le", "surrogatepass")

    def to_json(self) -> dict:
        return {"format": 1, "chars": list(self.chars)}

    @classmethod
    def from_json(cls, d: dict) -> Vocab:
        if not isinstance(d, dict) or not isinstance(d.get("chars"), list):
            raise RnnlensError("the vocabulary JSON has no 'chars' list; it is damaged, prepare the corpus again")
        chars = d["chars"]
        if len(set(chars)) != len(chars):
            raise RnnlensError("the vocabulary JSON repeats characters; it is damaged, prepare the corpus again")
        v = cls(chars)
        if v.chars != chars:
            raise RnnlensError("the vocabulary JSON is not sorted by code point; it is damaged, "
                               "prepare the corpus again")
        return v


# ----------------------------------------------------------------------------- splits

def _fraction(x) -> Fraction:
    # The decimal the user wrote (shortest repr of the float), so 0.29 is exactly 29/100.
    return Fraction(str(float(x)))


def _validate_split(split, flag: str = "--split", need_train: bool = False) -> tuple[float, float, float]:
    form = "two or three fractions separated by commas, e.g. 0.9,0.05,0.05 or 0.9,0.1"
    try:
        vals = [float(v) for v in split]
    except (TypeError, ValueError):
        raise RnnlensError(f"{flag} must be {form} (got {split!r})") from None
    if len(vals) == 2:
        vals.append(0.0)
    if len(vals) != 3:
        raise RnnlensError(f"{flag} must be {form} (got {len(vals)} numbers)")
    if not all(math.isfinite(v) for v in vals):
        raise RnnlensError(f"{flag} fractions must be finite numbers, e.g. 0.9,0.05,0.05 (got {vals})")
    if any(v < 0 for v in vals):
        raise RnnlensError(f"{flag} fractions must be >= 0, e.g. 0.9,0.05,0.05 (got {vals})")
    if need_train and vals[0] <= 0:
        raise RnnlensError(f"{flag} needs a train fraction above 0, e.g. 0.9,0.05,0.05 (got {vals})")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise RnnlensError(f"{flag} fractions must sum to 1, e.g. 0.9,0.05,0.05 "
                           f"(got {','.join(f'{v:g}' for v in vals)}, sum {sum(vals):g})")
    return (vals[0], vals[1], vals[2])


def parse_split(text: str, flag: str = "--split", need_train: bool = True) -> tuple[float, float, float]:
    """Parse ``--split``: "0.8,0.1,0.1" (train,val,test) or "0.9,0.1" (test = 0).
    Fractions must be >= 0 and sum to 1 within 1e-6; train > 0 when the split is for training
    (scoring a whole file takes 0,0,1). `flag` is the option named in errors."""
    form = "two or three fractions separated by commas, e.g. 0.9,0.05,0.05 or 0.9,0.1"
    if not isinstance(text, str) or not text.strip():
        raise RnnlensError(f"{flag} must be {form} (got {text!r})")
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise RnnlensError(f"{flag} must be {form} (got {text!r})") from None
    if len(vals) not in (2, 3):
        raise RnnlensError(f"{flag} must be {form} (got {text!r})")
    return _validate_split(vals, flag, need_train)


def split_positions(n: int, fractions: tuple[float, float, float]) -> dict[str, tuple[int, int]]:
    """Positions [start, end) of train, val and test in an array of n characters."""
    f0, f1, f2 = (_fraction(f) for f in fractions)
    a = min(n, math.floor(n * f0))
    b = n if f2 == 0 else max(a, min(n, math.floor(n * (f0 + f1))))
    return {"train": (0, a), "val": (a, b), "test": (b, n)}


# ----------------------------------------------------------------------------- corpus

class Corpus:
    """A prepared corpus: ``data`` is a read-only memmap of all ids (dtype ``vocab.dtype``),
    ``splits`` maps 'train', 'val', 'test' to [start, end) positions in it."""

    def __init__(self, directory: Path, *, name: str | None = None,
                 split: tuple[float, float, float] | None = None):
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            vocab = Vocab.from_json(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise RnnlensError(f"the prepared corpus in {directory} is damaged ({e}); "
                               "delete that folder and prepare again") from None
        n = int(meta["size"])
        dtype = np.dtype(meta["dtype"])
        if dtype != vocab.dtype:
            raise RnnlensError(f"the prepared corpus in {directory} is damaged (dtype {dtype} does not fit "
                               f"{len(vocab)} characters); delete that folder and prepare again")
        path = directory / "data.bin"
        if not path.is_file() or path.stat().st_size != n * dtype.itemsize:
            raise RnnlensError(f"the prepared corpus in {directory} is damaged (data.bin has the wrong size); "
                               "delete that folder and prepare again")
        self.directory = directory
        self.vocab = vocab
        self.meta = meta
        self.source: str = meta.get("source", "")
        self.name: str = name if name is not None else meta.get("name", self.source)
        self.content_hash: str = meta["content_hash"]
        self.data: np.ndarray = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
        self.split_fractions = _validate_split(split if split is not None else meta["split_fractions"])
        self.splits: dict[str, tuple[int, int]] = split_positions(n, self.split_fractions)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        return (f"Corpus({self.name!r}, {len(self):,} chars, {len(self.vocab)} symbols, "
                f"splits={self.splits})")

    def split(self, name: str) -> np.ndarray:
        """The ids of one split ('train', 'val' or 'test') as a view of ``data``."""
        if name not in self.splits:
            raise RnnlensError(f"unknown split {name!r}; use one of {', '.join(_SPLIT_NAMES)}")
        start, end = self.splits[name]
        return self.data[start:end]

    def text(self, name: str | None = None, start: int = 0, end: int | None = None) -> str:
        """Decode part of the corpus (of one split when name is given) back to text."""
        arr = self.data if name is None else self.split(name)
        return self.vocab.decode(arr[start:end])

    def compressed_bits(self, name: str = "train") -> float:
        """The size of one split under lzma (xz's preset 6), in bits: roughly how much the text holds that a model
        could learn by heart. Over COMPRESSED_SAMPLE symbols it is measured on evenly spaced pieces and scaled to
        the whole (lzma reads ~2-3M symbols a second)."""
        ids = sample = self.split(name)
        if len(ids) > COMPRESSED_SAMPLE:
            piece = COMPRESSED_SAMPLE // COMPRESSED_PIECES
            starts = np.linspace(0, len(ids) - piece, COMPRESSED_PIECES).astype(np.int64)
            sample = np.concatenate([ids[s:s + piece] for s in starts])
        if not len(sample):
            return 0.0
        return 8 * len(lzma.compress(sample.tobytes(), preset=6)) * len(ids) / len(sample)


# ----------------------------------------------------------------------------- sources

def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _resolve_files(source: Path, glob: str | None) -> tuple[list[Path], str]:
    """The files of a source in concatenation order (before shuffling) and a description."""
    if not source.exists():
        raise RnnlensError(f"no such file or folder: {source}; give a UTF-8 text file, a folder of "
                           "text files (with --glob), or a named corpus (see `rnnlens data list`)")
    if source.is_file():
        if glob is not None:
            raise RnnlensError(f"--glob only applies to a folder, but {source} is a file; drop --glob")
        return [source], str(source)
    if not source.is_dir():
        raise RnnlensError(f"{source} is neither a regular file nor a folder; give a text file or a folder")
    pattern = glob if glob is not None else DEFAULT_GLOB
    try:
        matches = source.glob(pattern) if "/" in pattern else source.rglob(pattern)
        found = [p for p in matches if p.is_file()]
    except (ValueError, NotImplementedError) as e:
        raise RnnlensError(f"bad --glob {pattern!r} ({e}); give a pattern relative to the folder, "
                           "e.g. '**/*.txt'") from None
    if glob is None:
        found = [p for p in found if not any(part.startswith(".") for part in p.relative_to(source).parts)]
    if not found:
        raise RnnlensError(f"no files in {source} match --glob {pattern!r}; check the pattern "
                           "(it is relative to the folder; use '**/' to search subfolders)")
    found.sort(key=lambda p: p.relative_to(source).as_posix())
    return found, f"{source} ({pattern}, {len(found)} files)"


def read_text_file(path: str | Path, encoding_errors: str = "strict", what: str = "text") -> str:
    """A small UTF-8 file (a prime, a text to trace) as a str, with the corpus's one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise RnnlensError(f"no such file: {path}; give the path of a UTF-8 {what} file")
    data = b"".join(_read_chunks(path, CHUNK_BYTES))
    if not data:
        raise RnnlensError(f"{path} is empty; give a file with some {what}")
    if b"\x00" in data[:CHUNK_BYTES]:
        raise RnnlensError(f"{path} looks like a binary file (it has NUL bytes); give a UTF-8 text file")
    try:
        return data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise RnnlensError(f"{path} is not valid UTF-8: bad byte 0x{data[e.start]:02x} at byte offset {e.start}; "
                           "fix the file or use --encoding-errors replace (or ignore) to go on") from None


def _read_chunks(path: Path, chunk: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while True:
                b = f.read(chunk)
                if not b:
                    return
                yield b
    except OSError as e:
        raise RnnlensError(f"cannot read {path}: {e.strerror or e}; check the path and its permissions") from None


def _hash_pass(files: list[Path], header: bytes, chunk: int, progress: bool, many: bool) -> tuple[str, int]:
    """sha256 of header + all bytes; checks each file's first chunk for NUL bytes."""
    h = hashlib.sha256(header)
    total = sum(p.stat().st_size for p in files)
    with _progress(total, "hashing", progress) as bar:
        for p in files:
            first = True
            for b in _read_chunks(p, chunk):
                if first and b"\x00" in b:
                    fix = ("choose text files with --glob, e.g. --glob '**/*.txt'" if many
                           else "give a UTF-8 text file (convert UTF-16 text to UTF-8 first)")
                    raise RnnlensError(f"{p} looks like a binary file (it has NUL bytes); {fix}")
                first = False
                h.update(b)
                bar.update(len(b))
    return h.hexdigest(), total


def _pieces(path: Path, chunk: int) -> Iterator[bytes]:
    """The file's bytes in reads of `chunk`, handed on in pieces of at most _DECODE_STEP
    (decoding a piece makes a str and a UTF-32 copy up to 4x its size)."""
    for b in _read_chunks(path, chunk):
        if len(b) <= _DECODE_STEP:
            yield b
        else:
            mv = memoryview(b)
            for i in range(0, len(b), _DECODE_STEP):
                yield bytes(mv[i:i + _DECODE_STEP])


def _decode_file(path: Path, errors: str, chunk: int) -> Iterator[tuple[np.ndarray, int]]:
    """Code points of a file, piece by piece, as uint8 (ASCII pieces) or uint32 arrays, with
    the number of bytes consumed. Strict decoding errors name the file and byte offset."""
    dec = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0
    pieces = _pieces(path, chunk)
    while True:
        b = next(pieces, None)
        final = b is None
        if final:
            b = b""
        pending = dec.getstate()[0]
        if not final and not pending and b.isascii():
            cps = np.frombuffer(b, dtype=np.uint8)
        else:
            try:
                s = dec.decode(b, final=final)
            except UnicodeDecodeError as e:
                at = offset - len(pending) + e.start
                raise RnnlensError(
                    f"{path} is not valid UTF-8: bad byte 0x{e.object[e.start]:02x} at byte offset {at}; "
                    "fix the file or use --encoding-errors replace (or ignore) to go on") from None
            if s.isascii():
                cps = np.frombuffer(s.encode("ascii"), dtype=np.uint8)
            else:
                cps = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            del s
        offset += len(b)
        yield cps, len(b)
        if final:
            return


def _scan_pass(files: list[Path], errors: str, chunk: int, total: int, progress: bool) -> tuple[Vocab, int]:
    present = np.zeros(_MAX_CP, dtype=bool)
    seen = b""  # the code points < 256 marked so far, as bytes
    n = 0
    with _progress(total, "scanning", progress) as bar:
        for p in files:
            for cps, nbytes in _decode_file(p, errors, chunk):
                if cps.dtype == np.uint8:
                    # deleting the bytes already seen runs at C speed (3x a bincount); what is left,
                    # usually nothing, holds the new characters
                    rest = cps.tobytes().translate(None, seen)
                    if rest:
                        present[np.frombuffer(rest, dtype=np.uint8)] = True
                        seen = np.flatnonzero(present[:256]).astype(np.uint8).tobytes()
                else:  # in slices: fancy indexing makes an int64 copy of the index array
                    for i in range(0, len(cps), _INDEX_STEP):
                        present[cps[i:i + _INDEX_STEP]] = True
                    seen = np.flatnonzero(present[:256]).astype(np.uint8).tobytes()
                n += len(cps)
                bar.update(nbytes)
    vocab = Vocab(chr(int(c)) for c in np.flatnonzero(present))
    return vocab, n


def _encode_pass(files: list[Path], errors: str, chunk: int, total: int, progress: bool,
                 vocab: Vocab, out) -> int:
    lut = np.zeros(_MAX_CP, dtype=vocab.dtype)
    lut[vocab._cps] = np.arange(len(vocab), dtype=vocab.dtype)
    n = 0
    with _progress(total, "encoding", progress) as bar:
        for p in files:
            for cps, nbytes in _decode_file(p, errors, chunk):
                for i in range(0, len(cps), _INDEX_STEP):
                    out.write(lut[cps[i:i + _INDEX_STEP]].tobytes())
                n += len(cps)
                bar.update(nbytes)
    return n


def _cleanup_stale(corpora: Path, max_age_s: float = 24 * 3600) -> None:
    """Remove temporary build folders left by crashed runs (older than a day)."""
    try:
        entries = list(corpora.glob(".tmp-*"))
    except OSError:
        return
    now = time.time()
    for d in entries:
        try:
            if now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _cache_ok(d: Path) -> bool:
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        size = (d / "data.bin").stat().st_size
        return meta.get("format") == FORMAT_VERSION and size == int(meta["size"]) * np.dtype(meta["dtype"]).itemsize
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=True)
        f.write("\n")


def prepare_corpus(source: str | Path, *, glob: str | None = None, split=DEFAULT_SPLIT,
                   encoding_errors: str = "strict", cache_dir: Path | None = None, seed: int = 0,
                   progress: bool = False) -> Corpus:
    """Prepare (or load from the cache) the corpus of a UTF-8 text file or a folder of them.

    source: a file, or a folder whose files matching ``glob`` (default ``**/*``, hidden files
    skipped) are sorted, shuffled with ``random.Random(seed)`` and concatenated as they are.
    split: (train, val, test) fractions or a "0.9,0.05,0.05" string; positions are recomputed
    on every load, so it does not change the cache. encoding_errors: "strict" (invalid UTF-8 is
    an error naming the file and byte offset), "replace" (U+FFFD) or "ignore" (dropped).
    cache_dir replaces ``cache_root()``; the corpus lives in ``<cache_dir>/corpora/<hash>/``.
    Errors: missing path, empty input, binary file (NUL bytes in a file's first chunk),
    invalid UTF-8, an empty glob match, bad options - each an RnnlensError.
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise RnnlensError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}, "
                           f"got {encoding_errors!r}")
    fractions = parse_split(split) if isinstance(split, str) else _validate_split(split)
    source = Path(source).expanduser()
    files, description = _resolve_files(source, glob)
    many = len(files) > 1 or source.is_dir()
    if many:
        random.Random(seed).shuffle(files)
    chunk = int(CHUNK_BYTES)

    header = json.dumps({"rnnlens-corpus": FORMAT_VERSION, "encoding_errors": encoding_errors},
                        sort_keys=True).encode() + b"\0"
    content_hash, total = _hash_pass(files, header, chunk, progress, many)
    if total == 0:
        if many:
            raise RnnlensError(f"all {len(files)} files of {description} are empty; "
                               "point at files with some text")
        raise RnnlensError(f"{source} is empty; give a file with some text")

    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    corpora = root / "corpora"
    final = corpora / content_hash
    if _cache_ok(final):
        return Corpus(final, name=description, split=fractions)

    try:
        corpora.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlensError(f"cannot create the cache folder {corpora}: {e.strerror or e}; "
                           "set RNNLENS_CACHE to a writable folder") from None
    _cleanup_stale(corpora)

    vocab, n = _scan_pass(files, encoding_errors, chunk, total, progress)
    if n == 0:
        raise RnnlensError(f"{description} has no characters left after decoding with "
                           f"--encoding-errors {encoding_errors}; give some UTF-8 text")

    tmp = corpora / f".tmp-{content_hash[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with open(tmp / "data.bin", "wb") as out:
            written = _encode_pass(files, encoding_errors, chunk, total, progress, vocab, out)
            out.flush()
            os.fsync(out.fileno())
        if written != n:  # the files changed between the passes
            raise RnnlensError(f"{description} changed while it was being prepared; run again")
        _write_json(tmp / "vocab.json", vocab.to_json())
        _write_json(tmp / "meta.json", {
            "format": FORMAT_VERSION,
            "name": description,
            "source": str(source),
            "files": len(files),
            "size": n,
            "bytes": total,
            "dtype": vocab.dtype.name,
            "vocab_size": len(vocab),
            "content_hash": content_hash,
            "encoding_errors": encoding_errors,
            "seed": seed if many else None,
            "split_fractions": list(fractions),
            "splits": {k: list(v) for k, v in split_positions(n, fractions).items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        if final.exists():  # a damaged leftover (a good one returned above): move it out of the way
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not _cache_ok(final):  # not a concurrent run that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Corpus(final, name=description, split=fractions)


def load_corpus(spec: str | Path, *, glob: str | None = None, split=None, encoding_errors: str = "strict",
                cache_dir: Path | None = None, progress: bool = False) -> Corpus:
    """A corpus from a file, a folder (with ``glob``) or a named corpus (``rnnlens.datasets``).

    An existing path wins over a corpus name. split=None means the default: 90/5/5 for files
    and folders, the named corpus's own split otherwise (80/10/10 for warandpeace).
    """
    from rnnlens import datasets  # named corpora; datasets does not import corpus (cache_root is in rnnlens.cache)

    path = Path(spec).expanduser()
    if path.exists():
        return prepare_corpus(path, glob=glob, split=split if split is not None else DEFAULT_SPLIT,
                              encoding_errors=encoding_errors, cache_dir=cache_dir, progress=progress)
    name = str(spec)
    known = {c.name: c for c in datasets.list_corpora()}
    if name not in known:
        raise RnnlensError(f"no file, folder or named corpus called {name!r}; named corpora: "
                           f"{', '.join(known)} (or give a path to a UTF-8 text file)")
    if glob is not None:
        raise RnnlensError(f"--glob only applies to a folder, but {name!r} is a named corpus; drop --glob")
    text_file = datasets.fetch(name, cache_dir=cache_dir, progress=progress)
    corpus = prepare_corpus(text_file, split=split if split is not None else known[name].split,
                            encoding_errors=encoding_errors, cache_dir=cache_dir, progress=progress)
    corpus.name = name
    return corpus


# ----------------------------------------------------------------------------- a run's corpus

def cached_corpus(content_hash: str, *, split=None, name: str | None = None,
                  cache_dir: Path | None = None) -> Corpus | None:
    """The prepared corpus with this content hash, if the cache still holds it."""
    folder = (cache_dir or cache_root()) / "corpora" / str(content_hash)
    return Corpus(folder, name=name, split=split) if content_hash and _cache_ok(folder) else None


def open_run_corpus(train: dict, corpus: dict, *, data: str | Path | None = None, glob: str | None = None,
                    encoding_errors: str | None = None, run: str = "this run", progress: bool = False) -> Corpus:
    """The corpus a run was trained on, found again wherever the run folder is now.

    train: the run's TrainConfig as a dict (its data, glob, split, encoding_errors); corpus: the
    checkpoint's corpus record (content_hash, split_fractions, name). The corpus is looked up by its
    content hash in the cache first (no reading, no hashing); else `data` (a path the user gives, which
    must hash the same), else the path or name the run recorded. Any other text is refused: a run's
    splits only mean something on its own corpus.
    """
    content_hash = corpus.get("content_hash")
    split = corpus.get("split_fractions") or train.get("split")
    name = corpus.get("name")
    found = cached_corpus(content_hash, split=split, name=name)
    if found is not None:
        return found
    source = str(data) if data is not None else train.get("data")
    if source is None:
        raise RnnlensError(f"{run} does not say which corpus it was trained on; give it with --data")
    try:
        found = load_corpus(source, glob=glob if glob is not None else train.get("glob"), split=split,
                            encoding_errors=encoding_errors or train.get("encoding_errors") or "strict",
                            progress=progress)
    except RnnlensError as e:
        if data is not None:
            raise
        raise RnnlensError(f"{run} was trained on {source}, which is not in the cache and cannot be read from here "
                           f"({e}); give that text with --data") from None
    if content_hash and found.content_hash != content_hash:
        given = "--data " + source if data is not None else source
        raise RnnlensError(f"{given} is not the text {run} was trained on (its content hash differs); "
                           "give the original text with --data")
    return found
