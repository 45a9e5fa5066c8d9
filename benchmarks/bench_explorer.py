"""The explorer at corpus scale: trace, first paint, scroll, match and edit on a long text.

    python benchmarks/bench_explorer.py                     # 1M characters, 1x128 LSTM
    python benchmarks/bench_explorer.py --chars 60000 --size 256
    python benchmarks/bench_explorer.py --quick             # 100K characters
    python benchmarks/bench_explorer.py --quick --threads 1 # one torch thread (default: torch's own choice)

A randomly initialised LSTM (the work is the same for trained weights) over a generated text:
  1. fused: the model's own forward pass (nn.LSTM, batch 1, chunks of 8,192) over the whole text: the reference;
  2. document: rnnlens.explorer.document.Document.advance() over the whole text: the explorer's trace
     (cells and hidden states float16 in memory maps, loss, a checkpoint every 2,000 characters), until
     the document is complete and serves; the cache is then written in a thread of its own (timed apart);
     fused and document alternate, `--repeats` times each; the ratio is printed per repeat and best to best;
  3. first paint: GET /api/window of 5,000 characters at the start right after opening (the server traces
     up to the window first) and the same at the end once traced;
  4. scroll: /api/window + /api/lines + /api/tracks at 20 positions through the text;
  5. match: /api/corpus/select + /api/corpus/match over the whole text;
  6. edit: a one-character edit 100 characters before the end (re-traced from its checkpoint), against the
     full re-trace (document) time.
The sgemm probe runs before and after, as in the other scripts: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import benchutil as bu
import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chars", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of the fused pass and the trace")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the fused pass and the trace (default 1, what rnnlens.trace uses; "
                         "0: torch's own choice)")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.chars = 100_000
    from fastapi.testclient import TestClient

    from rnnlens.api import LanguageModel
    from rnnlens.corpus import Vocab
    from rnnlens.explorer.document import Document
    from rnnlens.explorer.engine import Explorer
    from rnnlens.explorer.server import create_app
    from rnnlens.model import CharRNN

    bu.print_header(f"explorer: {args.chars:,} characters, {args.layers}x{args.size} LSTM, "
                    f"{torch.get_num_threads()} torch threads")
    bu.sgemm_probe("before")
    ids = bu.generated_ids(args.chars, vocab=65).astype(np.int64)
    chars = [chr(32 + i) if i else "\n" for i in range(65)]
    text = "".join(chars[i] for i in ids)
    vocab = Vocab(chars)
    model = CharRNN(bu.model_config(len(chars), "lstm", args.layers, args.size)).eval()
    lm = LanguageModel(model, vocab, {}, None)

    def fused_pass() -> float:
        with torch.no_grad():
            t0 = time.perf_counter()
            ids_t, state = torch.from_numpy(ids)[None], None
            for s in range(0, len(ids), 8192):
                _, state = model(ids_t[:, s:s + 8192], state)
            return time.perf_counter() - t0

    saving = []  # per document pass: the seconds of writing the cache, after the trace, in a thread of its own

    def document_pass(root) -> float:
        doc = Document(lm, text, cache=True, cache_root=root, threads=None)  # the bench's setting, not the default
        t0 = time.perf_counter()
        doc.advance()  # complete: the document serves from here
        took = time.perf_counter() - t0
        doc.wait_saved()
        saving.append(time.perf_counter() - t0 - took)
        doc.close()
        return took

    with tempfile.TemporaryDirectory() as tmp:
        # side by side, alternating (the machine is shared and noisy): the best of `repeats` of each
        fused, full = [], []
        for r in range(args.repeats):
            fused.append(fused_pass())
            full.append(document_pass(tmp if r == args.repeats - 1 else tempfile.mkdtemp(dir=tmp)))
        each = ", ".join(f"{d / f:.2f}" for f, d in zip(fused, full))
        save = saving[full.index(min(full))]
        fused, full = min(fused), min(full)
        print(f"fused forward pass:          {fused:7.2f} s  ({len(ids) / fused:,.0f} chars/s; best of {args.repeats})")
        print(f"document trace (explorer):   {full:7.2f} s  ({len(ids) / full:,.0f} chars/s; best of {args.repeats})")
        print(f"trace / fused:               {full / fused:7.2f} x  best to best (each repeat: {each})")
        print(f"then writing the cache:      {save:7.2f} s  (in its own thread; trace and cache: "
              f"{(full + save) / fused:.2f} x)")
        if default_threads != torch.get_num_threads():  # for context: the fused pass on torch's own choice
            from rnnlens.recurrence import torch_threads
            with torch_threads(default_threads):
                other = fused_pass()
            print(f"fused pass on {default_threads} threads:     {other:7.2f} s  (once; {other / fused:.2f} x the "
                  f"{torch.get_num_threads()}-thread fused pass)")

        ex = Explorer({"m": lm}, max_text_bytes=4 * args.chars)
        import rnnlens.cache as cache
        old = cache.cache_root
        cache.cache_root = lambda: __import__("pathlib").Path(tmp)
        try:
            t0 = time.perf_counter()
            ex.open_document(text, cache=True)  # the cache entry made above: nothing to trace
            opened = time.perf_counter() - t0
        finally:
            cache.cache_root = old
        client = TestClient(create_app(ex), base_url="http://127.0.0.1")
        print(f"open from the cache:         {opened:7.2f} s  (cache hit: {ex.docs['m'].cache_hit})")

        def timed(fn, n=1):
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = fn()
                assert r.status_code == 200, r.text
                out.append(time.perf_counter() - t0)
            return statistics.median(out), r

        T = len(text)
        paint, r = timed(lambda: client.get("/api/window", params={"from": 0, "to": 5000, "unit": 3}), 3)
        print(f"first paint /api/window 5K:  {paint * 1000:7.1f} ms  ({len(r.content):,} bytes)")
        end, _ = timed(lambda: client.get("/api/window", params={"from": T - 5000, "to": T, "unit": 3}), 3)
        print(f"window at the end:           {end * 1000:7.1f} ms")
        scroll = []
        for p in np.linspace(0, T - 5000, 20).astype(int):
            t0 = time.perf_counter()
            for path, params in [("/api/window", {"from": int(p), "to": int(p) + 5000, "unit": 3}),
                                 ("/api/lines", {"from": int(p), "to": int(p) + 240}),
                                 ("/api/tracks", {"from": int(p), "to": int(p) + 240})]:
                assert client.get(path, params=params).status_code == 200
            scroll.append(time.perf_counter() - t0)
        print(f"scroll step (window+lines+tracks): median {statistics.median(scroll) * 1000:6.1f} ms, "
              f"max {max(scroll) * 1000:6.1f} ms (20 positions; the first computes the features)")
        sel = client.post("/api/corpus/select", json={"from": 1000, "to": 1010, "threshold": 0.0}).json()
        units = sel["units"] or list(range(8))
        match, r = timed(lambda: client.post("/api/corpus/match", json={
            "units": units, "threshold": 0.0, "min_length": 5, "max_length": 15}), 3)
        print(f"match over the whole text:   {match * 1000:7.1f} ms  ({len(units)} units, {r.json()['total']:,} spans)")
        edits = []
        for k in range(5):
            pos = T - 100 - k
            t0 = time.perf_counter()
            e = client.post("/api/edit", json={"from": pos, "to": pos + 1, "insert": "x"}).json()
            edits.append(time.perf_counter() - t0)
        print(f"one-character edit near the end: {statistics.median(edits[1:]) * 1000:7.1f} ms median of 4 "
              f"(first, which copies the cached arrays: {edits[0] * 1000:.0f} ms); re-traced "
              f"{e['models']['m']['recomputed']:,} characters from {e['retraced_from']:,}; "
              f"= {statistics.median(edits[1:]) / full:.3f} x the full trace")
        ex.close()
    bu.sgemm_probe("after")


if __name__ == "__main__":
    main()
