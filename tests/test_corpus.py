"""Corpus preparation: vocabulary, encoding, splits, cache, folders, bad input, streaming."""

import json
import random

import numpy as np
import pytest

from rnnlens import corpus as corpus_mod
from rnnlens.corpus import Corpus, Vocab, cache_root, load_corpus, parse_split, prepare_corpus, split_positions
from rnnlens.errors import RnnlensError


@pytest.fixture(autouse=True)
def corpus_cache_env(tmp_path, monkeypatch):
    """Every test gets its own cache root; nothing touches ~/.cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("RNNLENS_CACHE", str(root))
    return root


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# ----------------------------------------------------------------------------- Vocab

def test_vocab_sorted_by_code_point_and_deduplicated():
    v = Vocab("hello, wörld€")
    assert v.chars == sorted(set("hello, wörld€"), key=ord)
    assert v.chars[0] == " " and v.chars[-1] == "€"
    assert len(v) == len(set("hello, wörld€"))
    assert Vocab("ba") == Vocab("ab")


def test_vocab_dtype_boundaries():
    assert Vocab([chr(i) for i in range(256)]).dtype == np.uint8
    assert Vocab([chr(i) for i in range(257)]).dtype == np.uint16
    assert Vocab([chr(i) for i in range(65536)]).dtype == np.uint16
    big = [chr(i) for i in range(0xD800)] + [chr(i) for i in range(0xE000, 0xE000 + 40000)]
    assert len(big) > 65536 and Vocab(big).dtype == np.uint32


def test_encode_decode_round_trip():
    text = "Grüße, 世界! 🙂\n\ttabs"
    v = Vocab(text)
    ids = v.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert [v.chars[i] for i in ids] == list(text)
    assert v.decode(ids) == text
    assert v.decode(list(ids)) == text
    assert v.decode([]) == ""


def test_decode_out_of_range_is_an_error():
    with pytest.raises(RnnlensError, match="outside the vocabulary of 2"):
        Vocab("ab").decode([0, 5])


def test_unknown_error_lists_chars_and_fix():
    v = Vocab("abc ")
    with pytest.raises(RnnlensError) as e:
        v.encode("abxxzé")
    msg = str(e.value)
    assert "\n" not in msg
    assert "'x'" in msg and "'z'" in msg and "'é'" in msg
    assert msg.count("'x'") == 1  # deduplicated
    assert "4 characters" in msg and "3 distinct" in msg
    assert "--unknown drop or --unknown replace" in msg


def test_unknown_error_caps_the_list():
    v = Vocab("a")
    text = "".join(chr(0x100 + i) for i in range(30))
    with pytest.raises(RnnlensError, match="and 10 more"):
        v.encode(text)


def test_unknown_drop_and_replace():
    v = Vocab("ab ?")
    assert v.decode(v.encode("axbyb", unknown="drop")) == "abb"
    assert v.decode(v.encode("axb", unknown="replace")) == "a b"  # space is the default
    assert v.decode(v.encode("axb", unknown="replace", replacement="?")) == "a?b"
    with pytest.raises(RnnlensError, match="replacement character 'z' is not in the vocabulary"):
        v.encode("axb", unknown="replace", replacement="z")
    with pytest.raises(RnnlensError, match="--unknown must be one of error, drop, replace"):
        v.encode("a", unknown="skip")


def test_default_replacement_rule():
    assert Vocab("ab ").default_replacement() == " "
    assert Vocab("ab\ufffd?").default_replacement() == "\ufffd"
    assert Vocab("ab?").default_replacement() == "?"
    assert Vocab("zb").default_replacement() == "b"


def test_unknown_chars_in_order_of_first_appearance():
    assert Vocab("abc").unknown_chars("azbyzx") == ["z", "y", "x"]
    assert Vocab("abc").unknown_chars("abc") == []


def test_vocab_json_round_trip_and_damage():
    v = Vocab("hé\n")
    assert Vocab.from_json(json.loads(json.dumps(v.to_json()))) == v
    with pytest.raises(RnnlensError, match="damaged"):
        Vocab.from_json({"chars": ["b", "a"]})
    with pytest.raises(RnnlensError, match="damaged"):
        Vocab.from_json({"nope": 1})


# ----------------------------------------------------------------------------- splits

def test_parse_split_good():
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_split(" 0.9 , 0.1 ") == (0.9, 0.1, 0.0)
    assert parse_split("1,0,0") == (1.0, 0.0, 0.0)
    assert parse_split("0.7,0.2,0.1") == (0.7, 0.2, 0.1)  # float sum 0.9999999999999999 is fine


@pytest.mark.parametrize("bad,part", [
    ("0.8,0.1", "sum to 1"),
    ("0.8;0.1;0.1", "--split must be"),
    ("a,b,c", "--split must be"),
    ("0.5", "--split must be"),
    ("0.5,0.2,0.2,0.1", "--split must be"),
    ("1.1,-0.1,0", ">= 0"),
    ("0,0.5,0.5", "train fraction above 0"),
    ("", "--split must be"),
    ("nan,0.5,0.5", "finite"),
])
def test_parse_split_bad(bad, part):
    with pytest.raises(RnnlensError) as e:
        parse_split(bad)
    assert part in str(e.value) and "--split" in str(e.value) and "0.9,0.05,0.05" in str(e.value)


def test_split_positions_exact():
    assert split_positions(1000, (0.9, 0.05, 0.05)) == {"train": (0, 900), "val": (900, 950), "test": (950, 1000)}
    assert split_positions(101, (0.8, 0.1, 0.1)) == {"train": (0, 80), "val": (80, 90), "test": (90, 101)}
    # decimal-exact: 100 * 0.29 is 28.999999999999996 in floats, but the split is 29
    assert split_positions(100, (0.29, 0.71, 0.0))["train"] == (0, 29)
    assert split_positions(10, (0.7, 0.2, 0.1)) == {"train": (0, 7), "val": (7, 9), "test": (9, 10)}
    assert split_positions(7, (0.9, 0.1, 0.0)) == {"train": (0, 6), "val": (6, 7), "test": (7, 7)}


# ----------------------------------------------------------------------------- prepare

def test_prepare_file_memmap_dtype_content_and_splits(tmp_path):
    text = "".join(random.Random(0).choice("abcdefgh \n") for _ in range(1000))
    c = prepare_corpus(write(tmp_path / "t.txt", text), split=(0.8, 0.1, 0.1))
    assert isinstance(c, Corpus) and len(c) == 1000
    assert isinstance(c.data, np.memmap) and c.data.dtype == np.uint8
    assert not c.data.flags.writeable
    assert c.vocab.chars == sorted(set(text))
    assert c.vocab.decode(c.data) == text
    assert np.array_equal(np.asarray(c.data), c.vocab.encode(text))
    assert c.splits == {"train": (0, 800), "val": (800, 900), "test": (900, 1000)}
    assert c.split_fractions == (0.8, 0.1, 0.1)
    assert c.vocab.decode(c.split("val")) == text[800:900]
    assert c.split("test").shape == (100,)
    with pytest.raises(RnnlensError, match="unknown split 'dev'; use one of train, val, test"):
        c.split("dev")
    assert c.directory.parent == cache_root() / "corpora"
    assert c.directory.name == c.content_hash and len(c.content_hash) == 64
    meta = json.loads((c.directory / "meta.json").read_text())
    assert meta["size"] == 1000 and meta["splits"]["val"] == [800, 900] and meta["dtype"] == "uint8"
    assert json.loads((c.directory / "vocab.json").read_text())["chars"] == c.vocab.chars
    assert (c.directory / "data.bin").stat().st_size == 1000


def test_uint16_corpus(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 2
    c = prepare_corpus(write(tmp_path / "cjk.txt", text), cache_dir=tmp_path / "c")
    assert c.data.dtype == np.uint16 and len(c.vocab) == 300
    assert c.vocab.decode(c.data) == text
    assert c.directory.parent == tmp_path / "c" / "corpora"


def test_cache_hit_does_not_rewrite(tmp_path, monkeypatch):
    src = write(tmp_path / "t.txt", "hello world\n" * 50)
    c1 = prepare_corpus(src)
    data_bin = c1.directory / "data.bin"
    stamp = data_bin.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(corpus_mod, "_encode_pass", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(corpus_mod, "_scan_pass", lambda *a, **k: calls.append(1))
    c2 = prepare_corpus(src, split=(0.5, 0.25, 0.25))  # split does not change the cache
    assert calls == [] and data_bin.stat().st_mtime_ns == stamp
    assert c2.directory == c1.directory and c2.splits["train"] == (0, 300)
    # same bytes elsewhere: same cache entry
    c3 = prepare_corpus(write(tmp_path / "copy.txt", "hello world\n" * 50))
    assert c3.directory == c1.directory and c3.name.endswith("copy.txt")


def test_options_that_change_the_result_change_the_hash(tmp_path):
    src = write(tmp_path / "t.txt", b"ab\xffcd")
    a = prepare_corpus(src, encoding_errors="replace")
    b = prepare_corpus(src, encoding_errors="ignore")
    assert a.content_hash != b.content_hash
    assert a.vocab.decode(a.data) == "ab\ufffdcd" and b.vocab.decode(b.data) == "abcd"


def test_damaged_cache_is_rebuilt(tmp_path):
    src = write(tmp_path / "t.txt", "abcabc")
    c = prepare_corpus(src)
    (c.directory / "data.bin").write_bytes(b"\x00")  # truncated
    c2 = prepare_corpus(src)
    assert c2.vocab.decode(c2.data) == "abcabc"


def test_interrupted_prepare_leaves_no_trusted_cache(tmp_path, monkeypatch):
    src = write(tmp_path / "t.txt", "abcabc")
    real_encode = corpus_mod._encode_pass

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(corpus_mod, "_encode_pass", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(src)
    corpora = cache_root() / "corpora"
    assert [p.name for p in corpora.iterdir()] == []  # temp folder removed, nothing final
    monkeypatch.setattr(corpus_mod, "_encode_pass", real_encode)
    c = prepare_corpus(src)
    assert c.directory.parent == corpora and c.vocab.decode(c.data) == "abcabc"


def test_streaming_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 7)
    # multi-byte characters of 2, 3 and 4 bytes land across every 7-byte boundary
    text = "".join(random.Random(1).choice(["a", "é", "€", "🙂", "\n", "z"]) for _ in range(500))
    c = prepare_corpus(write(tmp_path / "u.txt", text))
    assert len(c) == len(text) and c.vocab.decode(c.data) == text
    assert c.vocab.chars == sorted(set(text))
    # a long ASCII run then a multi-byte char split by the boundary (the ASCII fast path)
    text2 = "abcdef" + "é" + "ghijklm" * 3 + "🙂"
    c2 = prepare_corpus(write(tmp_path / "v.txt", text2))
    assert c2.vocab.decode(c2.data) == text2
    # reads of 16 bytes decoded in pieces of 5
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 16)
    monkeypatch.setattr(corpus_mod, "_DECODE_STEP", 5)
    c3 = prepare_corpus(write(tmp_path / "w.txt", text + "!"))
    assert c3.vocab.decode(c3.data) == text + "!"
    with pytest.raises(RnnlensError, match="byte offset 21"):
        prepare_corpus(write(tmp_path / "x.txt", ("é" * 10 + "a").encode() + b"\xc3("))


def test_progress_bar_runs(tmp_path, capsys):
    c = prepare_corpus(write(tmp_path / "t.txt", "abc" * 10), progress=True)
    assert len(c) == 30


# ----------------------------------------------------------------------------- folders

def make_tree(root):
    files = {
        "a.txt": "alpha\n", "b.txt": "bravo\n", "sub/c.txt": "charlie\n",
        "sub/deep/d.txt": "delta\n", "sub/e.md": "echo\n", ".hidden/f.txt": "foxtrot\n",
    }
    for rel, text in files.items():
        write(root / rel, text)
    return files


def expected_order(rels, seed):
    rels = sorted(rels)
    random.Random(seed).shuffle(rels)
    return rels


def test_folder_glob_seeded_shuffle(tmp_path):
    files = make_tree(tmp_path / "d")
    c = prepare_corpus(tmp_path / "d", glob="**/*.txt", seed=3)
    rels = expected_order([r for r in files if r.endswith(".txt")], 3)
    assert c.vocab.decode(c.data) == "".join(files[r] for r in rels)
    assert "(**/*.txt, 5 files)" in c.name
    # deterministic, and another seed gives the same files in another order
    assert prepare_corpus(tmp_path / "d", glob="**/*.txt", seed=3).content_hash == c.content_hash
    other = prepare_corpus(tmp_path / "d", glob="**/*.txt", seed=4)
    got = other.vocab.decode(other.data)
    assert sorted(got.splitlines()) == sorted(c.vocab.decode(c.data).splitlines())


def test_folder_glob_forms(tmp_path):
    files = make_tree(tmp_path / "d")
    top = prepare_corpus(tmp_path / "d", glob="sub/*.txt")
    assert top.vocab.decode(top.data) == "charlie\n"
    anywhere = prepare_corpus(tmp_path / "d", glob="*.md")  # no '/': any depth
    assert anywhere.vocab.decode(anywhere.data) == "echo\n"
    default = prepare_corpus(tmp_path / "d")  # every file except hidden ones
    text = default.vocab.decode(default.data)
    assert "foxtrot" not in text and all(files[r] in text for r in files if not r.startswith("."))


def test_folder_glob_matches_nothing(tmp_path):
    make_tree(tmp_path / "d")
    with pytest.raises(RnnlensError) as e:
        prepare_corpus(tmp_path / "d", glob="**/*.py")
    assert str(tmp_path / "d") in str(e.value) and "'**/*.py'" in str(e.value)


def test_folder_all_empty(tmp_path):
    write(tmp_path / "d" / "a.txt", "")
    write(tmp_path / "d" / "b.txt", "")
    with pytest.raises(RnnlensError, match="all 2 files .* are empty"):
        prepare_corpus(tmp_path / "d")


def test_folder_binary_names_file_and_glob_fix(tmp_path):
    write(tmp_path / "d" / "a.txt", "text\n")
    write(tmp_path / "d" / "img.png", b"\x89PNG\x00\x00")
    with pytest.raises(RnnlensError) as e:
        prepare_corpus(tmp_path / "d")
    assert "img.png looks like a binary file" in str(e.value) and "--glob" in str(e.value)


def test_glob_on_a_file_is_an_error(tmp_path):
    with pytest.raises(RnnlensError, match="--glob only applies to a folder"):
        prepare_corpus(write(tmp_path / "t.txt", "abc"), glob="*.txt")


# ----------------------------------------------------------------------------- bad input

def test_missing_path(tmp_path):
    with pytest.raises(RnnlensError) as e:
        prepare_corpus(tmp_path / "nope.txt")
    assert "no such file or folder" in str(e.value) and "nope.txt" in str(e.value)


def test_empty_file(tmp_path):
    with pytest.raises(RnnlensError, match=r"empty\.txt is empty; give a file with some text"):
        prepare_corpus(write(tmp_path / "empty.txt", ""))


def test_binary_file(tmp_path):
    with pytest.raises(RnnlensError, match="looks like a binary file"):
        prepare_corpus(write(tmp_path / "b.bin", b"abc\x00def"))
    with pytest.raises(RnnlensError, match="UTF-16"):
        prepare_corpus(write(tmp_path / "u16.txt", "hello", encoding="utf-16"))


def test_invalid_utf8_names_file_and_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 5)
    raw = "héllo wörld".encode() + b"\xff" + b" tail"
    src = write(tmp_path / "bad.txt", raw)
    with pytest.raises(RnnlensError) as e:
        prepare_corpus(src)
    msg = str(e.value)
    at = raw.index(b"\xff")
    assert at == 13
    assert "bad.txt is not valid UTF-8" in msg and f"byte offset {at}" in msg
    assert "0xff" in msg and "--encoding-errors replace" in msg and "\n" not in msg


def test_invalid_utf8_split_sequence_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 4)
    # a 3-byte '€' cut short by a plain ASCII byte; the lead byte sits before a chunk boundary
    raw = b"abc" + b"\xe2\x82" + b"x" * 10
    with pytest.raises(RnnlensError, match="byte offset 3"):
        prepare_corpus(write(tmp_path / "bad.txt", raw))
    # truncated at the end of the file
    with pytest.raises(RnnlensError, match="byte offset 5"):
        prepare_corpus(write(tmp_path / "end.txt", b"abcde\xe2\x82"))


def test_encoding_errors_replace_goes_on(tmp_path):
    src = write(tmp_path / "bad.txt", b"ok \xff\xfe done")
    c = prepare_corpus(src, encoding_errors="replace")
    assert c.vocab.decode(c.data) == "ok \ufffd\ufffd done"
    c = prepare_corpus(src, encoding_errors="ignore")
    assert c.vocab.decode(c.data) == "ok  done"


def test_bad_options(tmp_path):
    src = write(tmp_path / "t.txt", "abc")
    with pytest.raises(RnnlensError, match="--encoding-errors must be one of strict, replace, ignore"):
        prepare_corpus(src, encoding_errors="surrogateescape")
    with pytest.raises(RnnlensError, match="--split"):
        prepare_corpus(src, split=(0.5, 0.5, 0.5))
    assert prepare_corpus(src, split="0.5,0.5").splits["test"] == (3, 3)


# ----------------------------------------------------------------------------- load_corpus

def test_load_corpus_file_default_split(tmp_path):
    c = load_corpus(write(tmp_path / "t.txt", "x" * 100))
    assert c.split_fractions == (0.9, 0.05, 0.05) and c.splits["val"] == (90, 95)
    c = load_corpus(str(tmp_path / "t.txt"), split="0.8,0.1,0.1")
    assert c.splits["val"] == (80, 90)


def test_load_corpus_unknown_name_lists_names():
    with pytest.raises(RnnlensError) as e:
        load_corpus("no-such-corpus-xyz")
    assert "pystdlib" in str(e.value) and "tinyshakespeare" in str(e.value)


def test_load_corpus_named_uses_its_split(tmp_path, monkeypatch):
    from rnnlens import datasets
    text_file = write(tmp_path / "wp.txt", "war and peace " * 20)
    monkeypatch.setattr(datasets, "fetch", lambda name, **k: text_file)
    c = load_corpus("warandpeace")
    assert c.name == "warandpeace" and c.split_fractions == (0.8, 0.1, 0.1)
    assert c.splits == split_positions(280, (0.8, 0.1, 0.1))


def test_the_compressed_size_of_a_long_split_is_measured_on_evenly_spaced_pieces(tmp_path, monkeypatch):
    rng = random.Random(4)
    # the first half random letters (~4 bits each under lzma), the second half one repeated line (~0 bits)
    text = "".join(rng.choice("abcdefghijklmnop") for _ in range(20_000)) + "the same line\n" * 1_500
    path = tmp_path / "half.txt"
    path.write_text(text)
    corpus = load_corpus(str(path), split="1,0,0")
    whole = corpus.compressed_bits("train")
    assert 4 * 20_000 < whole < 4.4 * 20_000
    assert corpus.compressed_bits("val") == 0.0  # an empty split holds nothing
    monkeypatch.setattr(corpus_mod, "COMPRESSED_SAMPLE", 8_000)  # 4 pieces of 2,000: 2 random, 2 repeated
    sampled = corpus.compressed_bits("train")
    assert sampled != whole and abs(sampled - whole) < 0.1 * whole
