"""Named corpora: registry, verified downloads from a local server, local sources, and the
pystdlib and linux recipes. No network: the server runs on 127.0.0.1."""

import dataclasses
import hashlib
import http.server
import io
import json
import random
import socket
import tarfile
import threading

import pytest

from rnnlens import datasets
from rnnlens.corpus import load_corpus
from rnnlens.errors import RnnlensError

FIXTURE = ("First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n" * 40).encode()
FIXTURE_SHA = hashlib.sha256(FIXTURE).hexdigest()


@pytest.fixture(autouse=True)
def datasets_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def datasets_server():
    """A local HTTP server that serves FIXTURE at /input.txt; yields its base URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        hits = 0

        def do_GET(self):
            if self.path != "/input.txt":
                self.send_error(404)
                return
            Handler.hits += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(FIXTURE)))
            self.end_headers()
            self.wfile.write(FIXTURE)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", Handler
    finally:
        srv.shutdown()
        srv.server_close()


def patch_entry(monkeypatch, name, **changes):
    entry = dataclasses.replace(datasets._REGISTRY[name], **changes)
    monkeypatch.setitem(datasets._REGISTRY, name, entry)
    return entry


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- registry

def test_registry():
    names = [c.name for c in datasets.list_corpora()]
    assert names[0] == "pystdlib" == datasets.DEFAULT_CORPUS
    assert set(names) == {"pystdlib", "tinyshakespeare", "warandpeace", "linux"}
    ts = datasets.get_corpus("tinyshakespeare")
    assert ts.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert ts.chars == 1_115_394 and ts.split == (0.9, 0.05, 0.05)
    wp = datasets.get_corpus("warandpeace")
    assert wp.split == (0.8, 0.1, 0.1) and wp.chars == 3_258_246 and wp.sha256 is None
    assert datasets.get_corpus("linux").chars == 6_206_996
    assert datasets.get_corpus("pystdlib").url is None


def test_unknown_name_lists_known():
    with pytest.raises(RnnlensError) as e:
        datasets.fetch("enwik8")
    assert "unknown corpus 'enwik8'" in str(e.value)
    assert "pystdlib, tinyshakespeare, warandpeace, linux" in str(e.value)


# ----------------------------------------------------------------------------- downloads

def test_download_with_matching_hash(monkeypatch, datasets_server, datasets_cache_env):
    base, handler = datasets_server
    patch_entry(monkeypatch, "tinyshakespeare", sha256=FIXTURE_SHA)
    path = datasets.fetch("tinyshakespeare", url=base + "/input.txt", progress=True)
    assert path == datasets_cache_env / "datasets" / "tinyshakespeare.txt"
    assert path.read_bytes() == FIXTURE
    side = json.loads((path.parent / "tinyshakespeare.json").read_text())
    assert side["sha256"] == FIXTURE_SHA
    # second call: verified from the cache, no download
    assert datasets.fetch("tinyshakespeare", url=base + "/input.txt") == path
    assert handler.hits == 1
    assert not list(path.parent.glob(".*.part"))


def test_download_hash_mismatch_keeps_file_aside(monkeypatch, datasets_server, datasets_cache_env):
    base, _ = datasets_server
    patch_entry(monkeypatch, "tinyshakespeare", sha256="0" * 64)
    with pytest.raises(RnnlensError) as e:
        datasets.fetch("tinyshakespeare", url=base + "/input.txt")
    msg = str(e.value)
    assert FIXTURE_SHA in msg and "0" * 64 in msg and "kept at" in msg
    folder = datasets_cache_env / "datasets"
    assert not (folder / "tinyshakespeare.txt").exists()
    kept = list(folder.glob("tinyshakespeare.mismatch-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == FIXTURE


def test_connection_refused_says_use_source():
    url = f"http://127.0.0.1:{closed_port()}/input.txt"
    with pytest.raises(RnnlensError) as e:
        datasets.fetch("tinyshakespeare", url=url)
    msg = str(e.value)
    assert msg.startswith(f"could not download tinyshakespeare from {url} (")
    assert "`rnnlens data get tinyshakespeare --source FILE`" in msg and "\n" not in msg


def test_http_404_is_a_download_error(datasets_server):
    base, _ = datasets_server
    with pytest.raises(RnnlensError, match="could not download tinyshakespeare .*Not Found.*--source"):
        datasets.fetch("tinyshakespeare", url=base + "/missing.txt")


def test_source_local_file(monkeypatch, tmp_path):
    src = tmp_path / "input.txt"
    src.write_bytes(FIXTURE)
    patch_entry(monkeypatch, "tinyshakespeare", sha256=FIXTURE_SHA)
    path = datasets.fetch("tinyshakespeare", source=src)
    assert path.read_bytes() == FIXTURE and path != src
    # later use without source or network: verified from the cache
    assert datasets.fetch("tinyshakespeare", url=f"http://127.0.0.1:{closed_port()}/x") == path


def test_source_local_file_mismatch(tmp_path):
    src = tmp_path / "input.txt"
    src.write_bytes(FIXTURE)  # not the real tinyshakespeare
    with pytest.raises(RnnlensError) as e:
        datasets.fetch("tinyshakespeare", source=src)
    assert "is not the expected tinyshakespeare" in str(e.value) and FIXTURE_SHA in str(e.value)
    with pytest.raises(RnnlensError, match="no such file"):
        datasets.fetch("tinyshakespeare", source=tmp_path / "nope.txt")


def test_no_known_hash_checks_length_and_pins(monkeypatch, tmp_path, datasets_server, datasets_cache_env):
    base, _ = datasets_server
    n = len(FIXTURE.decode())
    patch_entry(monkeypatch, "warandpeace", chars=n + 1)
    with pytest.raises(RnnlensError, match=f"has {n:,} characters, but warandpeace has {n + 1:,}"):
        datasets.fetch("warandpeace", url=base + "/input.txt")
    patch_entry(monkeypatch, "warandpeace", chars=n)
    path = datasets.fetch("warandpeace", url=base + "/input.txt")
    side = json.loads((path.parent / "warandpeace.json").read_text())
    assert side["sha256"] == FIXTURE_SHA and side["pinned"] is True
    # another copy of the same length is refused: the first hash is pinned
    other = tmp_path / "other.txt"
    other.write_bytes(FIXTURE.replace(b"speak", b"SPEAK"))
    with pytest.raises(RnnlensError) as e:
        datasets.fetch("warandpeace", source=other)
    assert "pinned at first download" in str(e.value) and FIXTURE_SHA in str(e.value)


# ----------------------------------------------------------------------------- linux recipe

KERNEL = {
    "kernel/sched/core.c": "int schedule(void) { return 0; }\n",
    "kernel/fork.c": "long do_fork(void)\n{\n\treturn -1;\n}\n",
    "include/linux/list.h": "#define LIST_HEAD(x) x\n",
    "drivers/net/e1000.c": "/* Intel\xe9 */ int probe(void);\n",  # Latin-1 byte: replaced
    "arch/x86/boot/a.h": "#pragma once\n",
    "Makefile": "obj-y += fork.o\n",
    "README": "Linux kernel\n",
    "scripts/checkpatch.pl": "print 1;\n",
    "Documentation/x.rst": "Docs\n",
}


def kernel_bytes(rel):
    text = KERNEL[rel]
    return text.encode("latin-1") if "\xe9" in text else text.encode()


def make_tarball(path, top="linux-9.9"):
    with tarfile.open(path, "w:gz") as tf:
        for rel in sorted(KERNEL, reverse=True):  # archive order differs from sorted order
            data = kernel_bytes(rel)
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def expected_linux():
    rels = sorted(r for r in KERNEL if r.endswith((".c", ".h")))
    random.Random(datasets.SHUFFLE_SEED).shuffle(rels)
    return "".join(kernel_bytes(r).decode("utf-8", "replace") for r in rels)


def test_linux_from_tarball(tmp_path):
    tarball = make_tarball(tmp_path / "linux-9.9.tar.gz")
    path = datasets.fetch("linux", source=tarball, cache_dir=tmp_path / "c1")
    text = path.read_text(encoding="utf-8")
    assert text == expected_linux()
    assert "Intel\ufffd" in text
    for rel in KERNEL:
        assert (KERNEL[rel].replace("\xe9", "\ufffd") in text) == rel.endswith((".c", ".h"))
    # deterministic across builds
    again = datasets.fetch("linux", source=tarball, cache_dir=tmp_path / "c2")
    assert again.read_bytes() == path.read_bytes()


def test_linux_cut_is_honored_and_folder_matches_tarball(tmp_path, monkeypatch):
    patch_entry(monkeypatch, "linux", chars=50)
    tarball = make_tarball(tmp_path / "linux.tar.gz")
    text = datasets.fetch("linux", source=tarball, cache_dir=tmp_path / "c1").read_text(encoding="utf-8")
    assert len(text) == 50 and text == expected_linux()[:50]
    tree = tmp_path / "linux-9.9"
    for rel in KERNEL:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(kernel_bytes(rel))
    from_folder = datasets.fetch("linux", source=tree, cache_dir=tmp_path / "c2").read_text(encoding="utf-8")
    assert from_folder == text


def test_linux_bad_sources(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(RnnlensError, match="cannot read .*junk.tar.gz as a tarball"):
        datasets.fetch("linux", source=junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RnnlensError, match="no .c or .h files"):
        datasets.fetch("linux", source=empty)


# ----------------------------------------------------------------------------- pystdlib

def test_pystdlib_builds_deterministically(tmp_path, monkeypatch):
    patch_entry(monkeypatch, "pystdlib", chars=20_000)
    a = datasets.fetch("pystdlib", cache_dir=tmp_path / "c1")
    b = datasets.fetch("pystdlib", cache_dir=tmp_path / "c2")
    text = a.read_text(encoding="utf-8")
    assert len(text) == 20_000 and a.read_bytes() == b.read_bytes()
    assert "import " in text or "def " in text
    # cached: the second call in the same cache returns the same file without rebuilding
    stamp = a.stat().st_mtime_ns
    assert datasets.fetch("pystdlib", cache_dir=tmp_path / "c1") == a and a.stat().st_mtime_ns == stamp


def test_pystdlib_recipe_on_a_small_tree(tmp_path, monkeypatch):
    patch_entry(monkeypatch, "pystdlib", chars=10_000)
    root = tmp_path / "lib"
    files = {"os.py": "import sys\n", "json/__init__.py": "x = 1\n", "abc.py": "class ABC: pass\n",
             "test/test_os.py": "TEST\n", "idlelib/run.py": "IDLE\n", "site-packages/pkg.py": "SITE\n",
             "unittest/tests/t.py": "TESTS\n", "notes.txt": "NOTPY\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "latin1.py").write_bytes(b"# caf\xe9\n")
    text = datasets.fetch("pystdlib", source=root).read_text(encoding="utf-8")
    rels = sorted(["abc.py", "json/__init__.py", "os.py", "latin1.py"])
    random.Random(datasets.SHUFFLE_SEED).shuffle(rels)
    assert text == "".join(files.get(r, "") for r in rels)  # latin1.py skipped
    for word in ("TEST", "IDLE", "SITE", "NOTPY", "caf"):
        assert word not in text
    with pytest.raises(RnnlensError, match="has no URL"):
        datasets.fetch("pystdlib", url="http://127.0.0.1:1/x")


def test_load_corpus_by_name(tmp_path, monkeypatch):
    patch_entry(monkeypatch, "pystdlib", chars=5_000)
    c = load_corpus("pystdlib", cache_dir=tmp_path / "c")
    assert c.name == "pystdlib" and len(c) == 5_000
    assert c.split_fractions == (0.9, 0.05, 0.05) and c.splits["val"] == (4500, 4750)


# ----------------------------------------------------------------------------- war and peace: line ends

def test_warandpeace_lf_copy_becomes_crlf_with_a_note(monkeypatch, tmp_path, capsys):
    """The public copy of War and Peace has LF ends; the paper's has CRLF. A copy with LF ends is
    written with CRLF ends; a known copy (by the hash of the file as given) whose length differs from
    the paper's is accepted with a one-line note saying by how much; an unknown one is refused."""
    lf = "Well, Prince, so Genoa\nand Lucca are now\n\nfamily estates. Caf\u00e9.\n".encode()
    crlf = lf.replace(b"\n", b"\r\n")
    src = tmp_path / "warpeace_input.txt"
    src.write_bytes(lf)
    patch_entry(monkeypatch, "warandpeace", chars=len(crlf) + 4, vocab=len(set(crlf)) + 3)
    with pytest.raises(RnnlensError, match=f"has {len(crlf.decode()):,} characters, but warandpeace has"):
        datasets.fetch("warandpeace", source=src)            # not a known copy: refused
    monkeypatch.setitem(datasets.KNOWN_COPIES, "warandpeace", {hashlib.sha256(lf).hexdigest()})
    path = datasets.fetch("warandpeace", source=src)
    assert path.read_bytes() == crlf and src.read_bytes() == lf
    note = capsys.readouterr().err.strip()
    assert note == (f"note: this copy of warandpeace converted to CRLF line ends has {len(crlf.decode()):,} "
                    f"characters ({len(crlf):,} bytes), vocabulary {len(set(crlf.decode()))} ({len(set(crlf))} "
                    f"bytes); the paper's has {len(crlf) + 4:,} bytes, {len(set(crlf)) + 3} distinct: "
                    "4 bytes fewer than the paper's")
    side = json.loads((path.parent / "warandpeace.json").read_text())
    assert side["sha256"] == hashlib.sha256(crlf).hexdigest() and side["note"] == note
    assert not list(path.parent.glob(".*part"))              # no temporary file left behind
    # later uses: verified against the pinned hash of the CRLF form, no note
    assert datasets.fetch("warandpeace") == path and capsys.readouterr().err == ""


def test_warandpeace_lf_copy_of_the_papers_length_needs_no_note(monkeypatch, tmp_path, capsys,
                                                                datasets_server):
    lf = b"one\ntwo\nthree\n"
    crlf = lf.replace(b"\n", b"\r\n")
    patch_entry(monkeypatch, "warandpeace", chars=len(crlf))
    src = tmp_path / "w.txt"
    src.write_bytes(lf)
    assert datasets.fetch("warandpeace", source=src).read_bytes() == crlf
    assert capsys.readouterr().err == ""
    # a copy already in CRLF is taken as it is
    (tmp_path / "cache2").mkdir()
    src.write_bytes(crlf)
    assert datasets.fetch("warandpeace", source=src, cache_dir=tmp_path / "cache2").read_bytes() == crlf


def test_linux_from_a_small_folder_says_how_it_differs_from_the_papers(tmp_path, capsys):
    tree = tmp_path / "tiny"
    (tree / "kernel").mkdir(parents=True)
    (tree / "kernel" / "a.c").write_text("int a;\n")
    (tree / "b.h").write_text("#define B 1\n")
    path = datasets.fetch("linux", source=tree, cache_dir=tmp_path / "c")
    assert len(path.read_text(encoding="utf-8")) == 19
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "has 19 characters, not the paper's 6,206,996" in err
    datasets.fetch("linux", source=tree, cache_dir=tmp_path / "c")  # from the cache: said again
    assert "has 19 characters" in capsys.readouterr().err


def test_linux_of_full_length_says_nothing(tmp_path, capsys, monkeypatch):
    patch_entry(monkeypatch, "linux", chars=50)
    datasets.fetch("linux", source=make_tarball(tmp_path / "linux.tar.gz"), cache_dir=tmp_path / "c")
    assert capsys.readouterr().err == ""
