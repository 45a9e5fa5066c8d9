"""Named corpora: where the paper's data sets (and a default that needs no network) come from.

``fetch(name)`` returns the path of a UTF-8 text file, ready for ``prepare_corpus``, kept in
``cache_root()/datasets/`` as ``<name>.txt`` with a ``<name>.json`` sidecar that records its
sha256, character count and origin. Every later use re-hashes the file against the sidecar
(and against the registry's hash where one is known); a file that fails is fetched again.

The corpora
-----------
* ``pystdlib`` (the default, no network): the running Python's standard-library ``.py``
  files (``sysconfig.get_paths()["stdlib"]``), skipping the ``site-packages``,
  ``dist-packages``, ``idlelib`` and ``__pycache__`` trees and every ``test``/``tests`` tree,
  and skipping files that are not valid UTF-8; sorted by relative path, shuffled with
  ``random.Random(SHUFFLE_SEED)``, concatenated as they are and cut to 4,000,000 characters:
  a code corpus like the paper's Linux set. It depends on the Python version, so the
  sidecar records a key (Python version, file list, cut) and the file is rebuilt when it
  changes. ``source=`` may name another folder of .py files to use instead. Split 90/5/5.
* ``tinyshakespeare``: Karpathy's char-rnn copy, 1,115,394 characters, sha256 pinned below.
  Split 90/5/5.
* ``warandpeace``: Karpathy's copy of War and Peace (3,258,246 characters, CRLF line ends),
  split 80/10/10 as in the paper. NO PUBLISHED SHA-256 WAS FOUND for this file, so the
  registry has none: the file is accepted when it has exactly 3,258,246 characters (or
  bytes: char-rnn, which the paper used, counts bytes; the two agree for ASCII), and its
  sha256 is then pinned in the sidecar (trust on first use) and checked on every later use.
  A copy with another hash is refused until the sidecar is deleted. A copy with LF line ends
  (the public GitHub copy, and ../shared's) is rewritten with CRLF ends, the paper's form, before
  these checks. A copy in ``KNOWN_COPIES`` (by the sha256 of the file as given) is accepted
  whatever its length, with a one-line note on stderr (also kept in the sidecar) saying how it
  differs: the GitHub copy in CRLF form has 3,258,242 bytes (3,258,225 characters: 17 accented
  letters take 2 bytes), vocabulary 83 (84 distinct bytes), 4 bytes fewer than the paper's
  3,258,246 bytes with 87 distinct (char-rnn counts bytes).
* ``linux``: the paper's recipe. All regular ``.c`` and ``.h`` files of a kernel source tree
  (paths relative to the tree's top folder), sorted, shuffled with
  ``random.Random(SHUFFLE_SEED)``, concatenated and cut to 6,206,996 characters; split
  90/5/5. ``source=`` may be a kernel tarball (.tar, .tar.gz, .tar.bz2, .tar.xz; read
  streaming, nothing extracted to disk) or a folder, of any kernel version. Without
  ``source=`` it downloads Linux 4.0 (April 2015, just before the paper) from kernel.org,
  ``LINUX_URL``, checked against its published sha256. Files that are not valid UTF-8 (a few
  have Latin-1 comments) are decoded with errors="replace", so their code is kept and each
  bad byte becomes U+FFFD. The registry's ``sha256`` for linux is that of the tarball.

Downloads use urllib with a timeout, stream into a temporary file with a progress bar and
the running sha256, and are renamed into place only when the hash matches. A mismatch is an
error naming both hashes; the downloaded file is kept aside for inspection. ``source=`` a local
file goes through the same check (for the downloaded corpora).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import sys
import sysconfig
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rnnlens.cache import cache_root
from rnnlens.errors import RnnlensError

__all__ = ["DEFAULT_CORPUS", "NamedCorpus", "fetch", "get_corpus", "list_corpora"]

DEFAULT_CORPUS = "pystdlib"
#: Seed of the file shuffle of pystdlib and linux (the paper's recipe shuffles the files).
SHUFFLE_SEED = 0
#: Seconds to wait for the server before giving up on a download.
DOWNLOAD_TIMEOUT = 60
LINUX_URL = "https://cdn.kernel.org/pub/linux/kernel/v4.x/linux-4.0.tar.xz"
# Published in kernel.org's sha256sums and repeated in distribution build recipes.
LINUX_SHA256 = "0f2f7d44979bc8f71c4fc5d3308c03499c26a824dd311fdf6eef4dee0d7d5991"
_READ = 1 << 20
#: Copies known to differ from the paper's file, by the sha256 of the file as given (before any line-end
#: conversion): accepted, with a note saying how they differ. The public GitHub copy of
#: warpeace_input.txt has LF line ends and lacks 4 bytes of the paper's (3 of its distinct bytes).
KNOWN_COPIES: dict[str, set[str]] = {
    "warandpeace": {"b0fc81c399971eaf738c8be89809e6a0d95c151749112b04f06b6af648d8a39f"},
}


@dataclass(frozen=True)
class NamedCorpus:
    """A corpus rnnlens knows by name. ``url``/``sha256`` say where the file comes from and
    what it must hash to (None: built locally / no published hash); ``split`` is its default
    (train, val, test); ``chars`` its length in characters (the cut for built corpora)."""
    name: str
    description: str
    url: str | None
    sha256: str | None
    split: tuple[float, float, float]
    chars: int | None
    newline: str | None = None   # line ends of the paper's file: a copy with other line ends is converted
    vocab: int | None = None     # distinct characters (bytes, as char-rnn counts) of the paper's file


_REGISTRY: dict[str, NamedCorpus] = {c.name: c for c in [
    NamedCorpus(
        "pystdlib",
        "Python standard-library source code (no download; built from this Python)",
        None, None, (0.9, 0.05, 0.05), 4_000_000),
    NamedCorpus(
        "tinyshakespeare",
        "Tiny Shakespeare from char-rnn (1.1M characters)",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        (0.9, 0.05, 0.05), 1_115_394),
    NamedCorpus(
        "warandpeace",
        "War and Peace, the paper's copy (3.3M characters, CRLF; hash pinned on first download)",
        "https://cs.stanford.edu/people/karpathy/char-rnn/warpeace_input.txt",
        None,  # no published sha256 found: the character count is checked and the hash pinned
        (0.8, 0.1, 0.1), 3_258_246, "\r\n", 87),
    NamedCorpus(
        "linux",
        "Linux kernel .c/.h files, shuffled and concatenated, the paper's recipe (6.2M characters)",
        LINUX_URL, LINUX_SHA256, (0.9, 0.05, 0.05), 6_206_996),
]}


def list_corpora() -> list[NamedCorpus]:
    """The named corpora, the default (pystdlib) first."""
    return list(_REGISTRY.values())


def get_corpus(name: str) -> NamedCorpus:
    """The registry entry of a name (RnnlensError listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise RnnlensError(f"unknown corpus {name!r}; known corpora: {', '.join(_REGISTRY)}") from None


# ----------------------------------------------------------------------------- helpers

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while b := f.read(_READ):
                h.update(b)
    except OSError as e:
        raise RnnlensError(f"cannot read {path}: {e.strerror or e}; check the path and its permissions") from None
    return h.hexdigest()


def _tmp_path(folder: Path, stem: str) -> Path:
    return folder / f".{stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"


def _write_atomic(path: Path, writer: Callable) -> None:
    tmp = _tmp_path(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_sidecar(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_sidecar(path: Path, d: dict) -> None:
    _write_atomic(path, lambda f: f.write((json.dumps(d, indent=1) + "\n").encode()))


def _count_chars(path: Path) -> int | None:
    """Characters in a UTF-8 file, or None when it is not valid UTF-8."""
    import codecs
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    n = 0
    try:
        with open(path, "rb") as f:
            while b := f.read(_READ):
                n += len(dec.decode(b))
            n += len(dec.decode(b"", final=True))
    except UnicodeDecodeError:
        return None
    return n


def _datasets_dir(cache_dir: Path | None) -> Path:
    root = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "datasets"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlensError(f"cannot create the cache folder {root}: {e.strerror or e}; "
                           "set RNNLENS_CACHE to a writable folder") from None
    return root


def _download(name: str, url: str, folder: Path, progress: bool) -> tuple[Path, str]:
    """Stream url into a temporary file in folder; returns (temp path, sha256)."""
    from tqdm import tqdm

    tmp = _tmp_path(folder, name)
    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "rnnlens"})
    try:
        with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, desc=f"downloading {name}", unit="B", unit_scale=True,
                      unit_divisor=1024, disable=not progress, leave=False) as bar:
                while b := r.read(_READ):
                    h.update(b)
                    f.write(b)
                    bar.update(len(b))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if tmp.exists():
            tmp.unlink()
        reason = getattr(e, "reason", None) or e
        raise RnnlensError(f"could not download {name} from {url} ({reason}); download it yourself "
                           f"and run `rnnlens data get {name} --source FILE`") from None
    return tmp, h.hexdigest()


def _keep_aside(tmp: Path, folder: Path, name: str, digest: str) -> Path:
    kept = folder / f"{name}.mismatch-{digest[:12]}"
    os.replace(tmp, kept)
    return kept


# ----------------------------------------------------------------------------- downloaded corpora

def _paper_form(nc: NamedCorpus, path: Path, folder: Path) -> tuple[Path, str | None, bool]:
    """(file in the paper's line ends, a one-line note on how it differs from the paper's file or None,
    whether it is a known copy). A copy with bare LF ends is rewritten with nc.newline into a temporary
    file in `folder` (the caller removes it); one that already has CR LF ends is used as it is."""
    if nc.newline is None:
        return path, None, False
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RnnlensError(f"cannot read {path}: {e.strerror or e}; check the path and its permissions") from None
    known = hashlib.sha256(data).hexdigest() in KNOWN_COPIES.get(nc.name, set())
    out, converted = path, False
    if nc.newline == "\r\n" and b"\n" in data and b"\r" not in data:
        data = data.replace(b"\n", b"\r\n")
        out, converted = _tmp_path(folder, nc.name + ".crlf"), True
        out.write_bytes(data)
    if len(data) == nc.chars:
        note = None
    else:
        try:
            text = data.decode("utf-8")
            chars = f"{len(text):,} characters ({len(data):,} bytes), vocabulary {len(set(text))} ({len(set(data))} bytes)"
        except UnicodeDecodeError:
            chars = f"{len(data):,} bytes ({len(set(data))} distinct)"
        delta = nc.chars - len(data)
        note = (f"note: this copy of {nc.name}{' converted to CRLF line ends' if converted else ''} has {chars}; "
                f"the paper's has {nc.chars:,} bytes, {nc.vocab} distinct: {abs(delta):,} bytes "
                f"{'fewer' if delta > 0 else 'more'} than the paper's")
    return out, note, known


def _fetch_file(nc: NamedCorpus, folder: Path, source, url, progress: bool) -> Path:
    """tinyshakespeare / warandpeace: verified download or verified local copy."""
    target, side_path = folder / f"{nc.name}.txt", folder / f"{nc.name}.json"
    side = _read_sidecar(side_path)
    expected = nc.sha256 or side.get("sha256")  # the registry's hash, else the pinned one
    how = "published" if nc.sha256 else f"pinned at first download in {side_path}"

    def accept(path: Path, digest: str, what: str, kept: Callable[[], Path] | None, known: bool = False) -> None:
        """Raise unless path is the right file (a known copy, KNOWN_COPIES, passes the length check)."""
        if expected and digest != expected:
            where = f"; the file is kept at {kept()}" if kept else ""
            fix = ("delete the pinned hash file if you trust this copy" if not nc.sha256
                   else "get the right file")
            raise RnnlensError(f"{what} is not the expected {nc.name}: its sha256 is {digest}, expected "
                               f"{expected} ({how}){where}; {fix}")
        if not expected and nc.chars is not None and not known:
            n = _count_chars(path)
            # char-rnn (the paper's tool) counts bytes; for an ASCII file bytes = characters
            if n != nc.chars and path.stat().st_size != nc.chars:
                got = "is not valid UTF-8" if n is None else f"has {n:,} characters"
                where = f"; the file is kept at {kept()}" if kept else ""
                raise RnnlensError(f"{what} {got}, but {nc.name} has {nc.chars:,}{where}; "
                                   "get the right file")

    def record(digest: str, origin: str, note: str | None = None) -> None:
        _write_sidecar(side_path, {"name": nc.name, "sha256": digest, "chars": nc.chars,
                                   "origin": origin, "pinned": nc.sha256 is None,
                                   **({"note": note} if note else {})})
        if note:
            print(note, file=sys.stderr)

    if source is not None:
        src = Path(source).expanduser()
        if not src.is_file():
            raise RnnlensError(f"no such file: {src}; give the path of a downloaded copy of {nc.name}")
        form, note, known = _paper_form(nc, src, folder)
        try:
            digest = _sha256_file(form)
            accept(form, digest, str(src), None, known)
            if form != src:
                os.replace(form, target)
            elif src.resolve() != target.resolve():
                def copy(f):
                    with open(src, "rb") as s:
                        shutil.copyfileobj(s, f, _READ)
                _write_atomic(target, copy)
        finally:
            if form != src and form.exists():
                form.unlink()
        record(digest, str(src), note)
        return target

    if target.is_file():
        digest = _sha256_file(target)
        if expected and digest == expected:
            return target
        if not expected and _count_chars(target) == nc.chars:  # sidecar lost: pin what we have
            record(digest, side.get("origin", str(target)))
            return target
        os.replace(target, folder / f"{nc.name}.bad-{digest[:12]}")  # damaged: fetch again

    src_url = url or nc.url
    tmp, digest = _download(nc.name, src_url, folder, progress)
    form = tmp
    try:
        form, note, known = _paper_form(nc, tmp, folder)
        if form != tmp:
            digest = _sha256_file(form)
        accept(form, digest, f"the file downloaded from {src_url}",
               lambda: _keep_aside(tmp, folder, nc.name, digest), known)
        os.replace(form, target)
    finally:
        for f in {tmp, form}:
            if f.exists():
                f.unlink()
    record(digest, src_url, note)
    return target


# ----------------------------------------------------------------------------- built corpora

def _concat_cut(order: list[tuple[str, int]], read: Callable[[list[str]], dict[str, str]],
                cut: int) -> str:
    """Texts of order's files, concatenated in that order and cut to `cut` characters, reading
    only as many files as needed (sizes are bytes, which are never fewer than characters)."""
    texts: list[str] = []
    chars, i = 0, 0
    while chars < cut and i < len(order):
        need, batch, acc = cut - chars, [], 0
        while i < len(order) and acc < need * 1.02 + 4096:
            batch.append(order[i][0])
            acc += order[i][1]
            i += 1
        got = read(batch)
        for rel in batch:
            if rel in got:
                texts.append(got[rel])
                chars += len(got[rel])
    return "".join(texts)[:cut]


def _write_text(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    _write_atomic(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def _cached_build(folder: Path, name: str, key: str) -> Path | None:
    target, side = folder / f"{name}.txt", _read_sidecar(folder / f"{name}.json")
    if side.get("key") == key and target.is_file() and _sha256_file(target) == side.get("sha256"):
        return target
    return None


def _stdlib_files(root: Path) -> list[tuple[str, int]]:
    skip = {"site-packages", "dist-packages", "idlelib", "test", "tests", "__pycache__"}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith(".")]
        for fn in filenames:
            p = Path(dirpath, fn)
            if fn.endswith(".py") and not p.is_symlink() and p.is_file():
                out.append((p.relative_to(root).as_posix(), p.stat().st_size))
    out.sort()
    return out


def _read_utf8_files(root: Path, rels: list[str]) -> dict[str, str]:
    """{relative path: text} of the files under root that read as UTF-8; the others are skipped."""
    got = {}
    for rel in rels:
        try:
            got[rel] = (root / rel).read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            pass  # not UTF-8 (or unreadable): skipped
    return got


def _fetch_pystdlib(nc: NamedCorpus, folder: Path, source, url, progress: bool) -> Path:
    if url is not None:
        raise RnnlensError("pystdlib is built from this Python's standard library and has no URL; "
                           "drop --url (use --source FOLDER for another folder of .py files)")
    root = Path(source).expanduser() if source is not None else Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise RnnlensError(f"no such folder: {root}; give a folder of Python files with --source")
    files = _stdlib_files(root)
    if not files:
        raise RnnlensError(f"no .py files in {root}; give a folder of Python files with --source")
    cut = nc.chars or 0
    key = hashlib.sha256(json.dumps({
        "recipe": 1, "python": sys.version, "root": str(root), "cut": cut, "seed": SHUFFLE_SEED,
        "files": [(rel, size, os.stat(root / rel).st_mtime_ns) for rel, size in files],
    }).encode()).hexdigest()
    hit = _cached_build(folder, nc.name, key)
    if hit:
        return hit
    random.Random(SHUFFLE_SEED).shuffle(files)
    text = _concat_cut(files, lambda rels: _read_utf8_files(root, rels), cut)
    target = folder / f"{nc.name}.txt"
    digest = _write_text(target, text)
    _write_sidecar(folder / f"{nc.name}.json", {"name": nc.name, "sha256": digest, "chars": len(text),
                                                 "origin": str(root), "key": key})
    return target


def _is_c(rel: str) -> bool:
    return rel.endswith((".c", ".h"))


def _strip_top(names: Iterable[str]) -> dict[str, str]:
    """Map tar member names to paths relative to the single top folder they share, if any."""
    names = list(names)
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return {n: n.split("/", 1)[1] for n in names}
    return {n: n for n in names}


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError) as e:
        raise RnnlensError(f"cannot read {path} as a tarball ({e}); give a kernel tarball (.tar, .tar.gz, "
                           ".tar.xz) or the folder of a kernel source tree") from None


def _linux_from_tar(path: Path, cut: int, progress: bool) -> str:
    names = []
    try:
        with _open_tar(path) as tf:
            for m in tf:
                if m.isfile() and _is_c(m.name):
                    names.append((m.name.removeprefix("./"), m.name, m.size))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise RnnlensError(f"cannot read {path} as a tarball ({e}); give a kernel tarball (.tar, .tar.gz, "
                           ".tar.xz) or the folder of a kernel source tree") from None
    if not names:
        raise RnnlensError(f"no .c or .h files in {path}; give a kernel source tarball or folder")
    rel_of = _strip_top(n for n, _, _ in names)
    member_of = {rel_of[n]: member for n, member, _ in names}
    order = sorted((rel_of[n], size) for n, _, size in names)
    random.Random(SHUFFLE_SEED).shuffle(order)

    def read(rels: list[str]) -> dict[str, str]:
        wanted = {member_of[r]: r for r in rels}
        got = {}
        with _open_tar(path) as tf:
            for m in tf:
                if m.name in wanted:
                    f = tf.extractfile(m)
                    if f is not None:
                        got[wanted[m.name]] = f.read().decode("utf-8", "replace")
                    if len(got) == len(wanted):
                        break
        return got

    return _concat_cut(order, read, cut)


def _linux_from_folder(root: Path, cut: int) -> str:
    order = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            p = Path(dirpath, fn)
            if _is_c(fn) and not p.is_symlink() and p.is_file():
                order.append((p.relative_to(root).as_posix(), p.stat().st_size))
    if not order:
        raise RnnlensError(f"no .c or .h files in {root}; give a kernel source tarball or folder")
    order.sort()
    random.Random(SHUFFLE_SEED).shuffle(order)

    def read(rels: list[str]) -> dict[str, str]:
        return {r: (root / r).read_bytes().decode("utf-8", "replace") for r in rels}

    return _concat_cut(order, read, cut)


def _fetch_linux(nc: NamedCorpus, folder: Path, source, url, progress: bool) -> Path:
    cut = nc.chars or 0
    if source is None:
        side = _read_sidecar(folder / f"{nc.name}.json")
        target = folder / f"{nc.name}.txt"
        if side.get("cut") == cut and target.is_file() and _sha256_file(target) == side.get("sha256"):
            return target  # built before, from whatever source
        src_url = url or nc.url
        tarball = folder / (src_url.rstrip("/").rsplit("/", 1)[-1] or "linux.tar")
        if not (tarball.is_file() and (nc.sha256 is None or _sha256_file(tarball) == nc.sha256)):
            tmp, digest = _download(nc.name, src_url, folder, progress)
            try:
                if nc.sha256 and digest != nc.sha256:
                    kept = _keep_aside(tmp, folder, nc.name, digest)
                    raise RnnlensError(f"the file downloaded from {src_url} is not the expected kernel "
                                       f"tarball: sha256 {digest}, expected {nc.sha256}; the file is kept "
                                       f"at {kept}; get the right file")
                os.replace(tmp, tarball)
            finally:
                if tmp.exists():
                    tmp.unlink()
        source = tarball
    src = Path(source).expanduser()
    if not src.exists():
        raise RnnlensError(f"no such file or folder: {src}; give a kernel source tarball or folder")
    if src.is_dir():
        key_src = sorted((p.relative_to(src).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in src.rglob("*") if _is_c(p.name) and p.is_file())
    else:
        key_src = _sha256_file(src)
    key = hashlib.sha256(json.dumps({"recipe": 1, "src": key_src, "cut": cut,
                                     "seed": SHUFFLE_SEED}).encode()).hexdigest()
    hit = _cached_build(folder, nc.name, key)
    if hit:
        _note_short_linux(_read_sidecar(folder / f"{nc.name}.json").get("chars"), cut, src)
        return hit
    text = _linux_from_folder(src, cut) if src.is_dir() else _linux_from_tar(src, cut, progress)
    target = folder / f"{nc.name}.txt"
    digest = _write_text(target, text)
    _write_sidecar(folder / f"{nc.name}.json", {"name": nc.name, "sha256": digest, "chars": len(text),
                                                 "origin": str(src), "key": key, "cut": cut})
    _note_short_linux(len(text), cut, src)
    return target


def _note_short_linux(chars: int | None, cut: int, src: Path) -> None:
    """One line on stderr when a source gave less than the paper's corpus: the run is on another corpus."""
    if chars is not None and chars < cut:
        print(f"note: linux built from {src} has {chars:,} characters, not the paper's {cut:,} "
              f"({chars / cut:.2%} of it): losses are not comparable with the paper's", file=sys.stderr)


def fetch(name: str, *, source: str | Path | None = None, url: str | None = None,
          cache_dir: Path | None = None, progress: bool = False) -> Path:
    """The path of the named corpus's UTF-8 text file, fetching or building it once.

    source: a local copy to use instead of the network (checked like a download), or for
    pystdlib / linux the folder or tarball to build from. url: another address to download
    from (tests point it at a local server). cache_dir replaces ``cache_root()``; files live
    in ``<cache_dir>/datasets/``. Errors (RnnlensError): unknown name, no network (with the
    ``--source`` hint), hash or length mismatch.
    """
    nc = get_corpus(name)
    folder = _datasets_dir(cache_dir)
    if nc.name == "pystdlib":
        return _fetch_pystdlib(nc, folder, source, url, progress)
    if nc.name == "linux":
        return _fetch_linux(nc, folder, source, url, progress)
    return _fetch_file(nc, folder, source, url, progress)
