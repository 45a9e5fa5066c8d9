"""The experiment grid: parameter matching, the cell list, a tiny grid end to end (one process per
cell, two workers), resuming cell by cell, a failing cell, the table and the map."""

import contextlib
import csv
import io
import json
import math
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from conftest import make_text, run_cli

import rnnlens
from rnnlens.analysis.grid_results import grid_table, model_map, pca_2d
from rnnlens.errors import RnnlensError
from rnnlens.evaluate import EvalResult
from rnnlens.grid import parse_list, plan_cells
from rnnlens.model import CharRNN, ModelConfig, count_parameters
from rnnlens.predictions import Predictions
from rnnlens.render.grid_table import table_html, table_markdown

TINY = ["--types", "lstm,rnn", "--layers", "1", "--sizes", "8,16", "--match-params", "--max-steps", "6",
        "--batch-size", "4", "--seq-len", "20", "--eval-every", "3", "--map-chars", "200", "--threads", "1"]
NAMES = ["lstm-1x8", "lstm-1x16", "rnn-1x24", "rnn-1x44"]  # rnn widths matched to the LSTMs' counts (vocab 17)


# --------------------------------------------------------------------------------------------- planning

def closest_width(cell, layers, lstm_width, vocab):
    """By brute force: the width of `cell` whose parameter count is closest to the LSTM's."""
    target = count_parameters(ModelConfig(vocab_size=vocab, cell="lstm", layers=layers, size=lstm_width))
    counts = {w: count_parameters(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, size=w))
              for w in range(1, 3 * lstm_width)}
    return min(counts, key=lambda w: (abs(counts[w] - target), w))


def test_matched_widths_give_the_lstm_parameter_count():
    cells = plan_cells(["lstm", "gru", "rnn"], [1, 2, 3], [64, 128, 256, 512], vocab_size=65, match_params=True)
    assert len(cells) == 36
    for c in cells:
        cfg = ModelConfig(vocab_size=65, cell=c.cell_type, layers=c.layers, size=c.size)
        assert c.params == count_parameters(cfg)
        lstm = ModelConfig(vocab_size=65, cell="lstm", layers=c.layers, size=c.column)
        assert c.target == count_parameters(lstm)
        if c.cell_type == "lstm":
            assert c.size == c.column and c.params == c.target
        else:
            assert abs(c.mismatch) < 0.01, c
            if c.column <= 128:  # the closest width, found by brute force (kept small: it is slow)
                assert c.size == closest_width(c.cell_type, c.layers, c.column, 65)
            for other in (c.size - 1, c.size + 1):  # neither neighbour is closer to the LSTM's count
                n = count_parameters(ModelConfig(vocab_size=65, cell=c.cell_type, layers=c.layers, size=other))
                assert abs(n - c.target) >= abs(c.params - c.target)
    by_name = {c.name: c for c in cells}
    # a GRU has 3 gate blocks to the LSTM's 4, a plain RNN 1: wider at the same count
    assert by_name["gru-1x76"].column == 64 and by_name["rnn-1x139"].column == 64
    assert by_name["rnn-2x1030"].column == 512
    # the real module has exactly the count the matching used
    c = by_name["gru-2x149"]
    model = CharRNN(ModelConfig(vocab_size=65, cell="gru", layers=2, size=149))
    assert sum(p.numel() for p in model.parameters()) == c.params


def test_cell_list_order_names_and_unmatched_widths():
    cells = plan_cells("lstm,gru", "1,2", "8,16", vocab_size=17, match_params=False)
    assert [c.name for c in cells] == ["lstm-1x8", "lstm-1x16", "lstm-2x8", "lstm-2x16",
                                       "gru-1x8", "gru-1x16", "gru-2x8", "gru-2x16"]
    assert all(c.size == c.column for c in cells)
    gru = cells[4]
    assert gru.params < gru.target  # unmatched: a GRU of the same width is smaller


@pytest.mark.parametrize("flag, value, message", [
    ("--types", "lstm,transformer", "unknown 'transformer'; choose from lstm, gru, rnn"),
    ("--types", "", "--types is empty"),
    ("--sizes", " , ", "--sizes is empty"),
    ("--sizes", "64,big", "--sizes must list whole numbers"),
    ("--layers", "0", "--layers must be an integer >= 1"),
    ("--sizes", "64,64", "--sizes lists 64 twice"),
])
def test_bad_lists_are_refused(flag, value, message):
    choices = ("lstm", "gru", "rnn") if flag == "--types" else None
    with pytest.raises(RnnlensError, match=message.replace("(", r"\(")):
        parse_list(flag, value, choices=choices)


def test_plan_checks_model_options():
    with pytest.raises(RnnlensError, match="--dropout must be"):
        plan_cells("lstm", "1", "8", vocab_size=10, dropout=1.5)


def test_workers_get_their_threads_and_their_own_gpu(monkeypatch):
    from rnnlens.grid import visible_gpus, worker_env
    env = worker_env(0, 3, [], base={"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "7"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "7", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    gpus = ["4", "5"]
    assert [worker_env(k, 1, gpus, base={})["CUDA_VISIBLE_DEVICES"] for k in range(3)] == ["4", "5", "4"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,6")
    assert visible_gpus("cuda") == ["2", "5", "6"] and visible_gpus("auto") == ["2", "5", "6"]
    assert visible_gpus("cpu") == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus("cuda") == ["0", "1", "2"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert visible_gpus("cuda") == []  # one GPU: nothing to spread over


def test_time_is_an_alias_of_time_budget():
    from rnnlens.cli import build_parser
    args = build_parser().parse_args(["grid", "--time", "10m", "--lr", "0.002", "--dropout", "0.1"])
    assert args.time_budget == "10m" and args.lr == 0.002 and args.dropout == 0.1
    assert "time_budget" in args.grid_train_options and "model" not in args.grid_train_options


# --------------------------------------------------------------------------------------------- table and map

def _records():
    return [{"cell": "lstm", "layers": 1, "column": 8, "size": 8, "params": 100, "status": "done", "test_loss": 2.0},
            {"cell": "lstm", "layers": 1, "column": 16, "size": 16, "params": 200, "status": "done",
             "test_loss": 1.5},
            {"cell": "rnn", "layers": 1, "column": 8, "size": 24, "params": 101, "status": "failed"},
            {"cell": "rnn", "layers": 1, "column": 16, "size": 44, "params": 199, "status": "done",
             "test_loss": 1.75}]


def test_table_layout_and_renderers(tmp_path):
    table = grid_table(_records(), corpus="toy", ngram_order=20, ngram_loss=2.25)
    assert table.rows == [("lstm", 1), ("rnn", 1)] and table.columns == [8, 16]
    assert table.value("rnn", 1, 16) == 1.75 and math.isnan(table.loss[1, 0])
    assert table.best() == (0, 1)
    md = table_markdown(table)
    assert "| model | 8 | 16 |" in md
    assert "| LSTM 1 layer | 2.000 | **1.500** |" in md
    assert "| RNN 1 layer | failed (24) | 1.750 (44) |" in md
    assert "20-gram (Kneser-Ney): 2.250 nats/char" in md
    page = table_html(table)
    assert "<td class=best" in page and ">1.500<" in page and "20-gram" in page and "http" not in page
    rows = list(csv.reader(table.write_csv(tmp_path / "t.csv").read_text().splitlines()))
    assert rows == [["model", "layers", "8", "16"], ["lstm", "1", "2.000000", "1.500000"],
                    ["rnn", "1", "", "1.750000"]]
    long = list(csv.DictReader(table.write_long_csv(tmp_path / "l.csv").read_text().splitlines()))
    assert [r["model"] for r in long] == ["lstm", "lstm", "rnn", "rnn", "ngram-20"]
    assert long[3]["width"] == "44" and long[2]["status"] == "failed" and long[4]["test_loss_nats"] == "2.250000"


def _preds(text, probs_of_truth, name):
    """Predictions over `text` (alphabet 'ab') giving the true character the listed probabilities."""
    chars = ["a", "b"]
    rows = []
    for ch, p in zip(text[1:], probs_of_truth):
        rows.append([p, 1 - p] if ch == "a" else [1 - p, p])
    return Predictions(text, chars, np.array(rows, dtype=np.float32), name=name)


def test_model_map_places_alike_models_together():
    text = "abbabaabab"
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.9, len(text) - 1)
    preds = [_preds(text, base, "a1"), _preds(text, base, "a2"), _preds(text, base[::-1], "b"),
             _preds(text, np.full(len(text) - 1, 0.5), "c")]
    info = [{"kind": "lstm", "layers": 1, "width": 8}, {"kind": "lstm", "layers": 1, "width": 16},
            {"kind": "rnn", "layers": 1, "width": 24}, {"kind": "ngram"}]
    m = model_map(preds, info)
    assert m.coords.shape == (4, 2) and len(m) == 4
    assert m.names == ["a1", "a2", "b", "c"] and m.kinds[3] == "ngram"
    assert np.allclose(m.coords[0], m.coords[1])  # identical predictions, one point
    assert np.linalg.norm(m.coords[0] - m.coords[2]) > 0.1
    assert abs(m.losses[3] - math.log(2)) < 1e-6
    assert 0.99 < sum(m.explained) <= 1.0 + 1e-9  # 4 points span at most 3 dims; two give nearly all here
    d = m.to_dict()
    assert d["models"][2]["name"] == "b" and set(d["models"][2]) >= {"x", "y", "width", "kind"}


def test_pca_matches_the_known_projection():
    # points on a line along (1, 1, 0): one component carries all the variance
    x = np.array([[0.0, 0, 5], [1, 1, 5], [3, 3, 5]])
    coords, explained = pca_2d(x)
    assert explained[0] == pytest.approx(1.0) and explained[1] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(coords[:, 1], 0)
    d = np.linalg.norm(x - x.mean(0), axis=1) * np.sign(x[:, 0] - x[:, 0].mean())
    assert np.allclose(np.abs(coords[:, 0]), np.abs(d))
    one, _ = pca_2d(np.ones((1, 4)))
    assert one.shape == (1, 2) and np.all(one == 0)


def test_map_refuses_bad_input():
    text = "abab"
    with pytest.raises(RnnlensError, match="--map-method must be one of pca, tsne"):
        model_map([_preds(text, [0.5] * 3, "x")], [{"kind": "lstm"}], method="umap")
    with pytest.raises(RnnlensError, match="scored on different texts"):
        model_map([_preds(text, [0.5] * 3, "x"), _preds("abba", [0.5] * 3, "y")], [{"kind": "lstm"}] * 2)


# --------------------------------------------------------------------------------------------- end to end

class StandInNGram:
    """A unigram model with the n-gram API (rnnlens.ngram is written elsewhere): p(c) from train counts, add-1."""

    def __init__(self, chars, probs, order):
        self.chars, self.probs, self.order, self.smoothing = chars, probs, order, "addk"

    def predict(self, text, order=None, *, unknown="error"):
        rows = np.tile(self.probs, (len(text) - 1, 1)).astype(np.float32)
        return Predictions(text, list(self.chars), rows, name=f"{self.order}-gram")

    def evaluate(self, text=None, **ignored):
        p = self.predict(text)
        return EvalResult(loss=p.loss, chars=len(p))


def stand_in_ngram_module():
    """rnnlens.ngram with a unigram fit in place of train_ngram (the rest is the real module's), so the
    table's n-gram value is known exactly."""
    import rnnlens.ngram as real
    from rnnlens.corpus import load_corpus
    mod = types.ModuleType("rnnlens.ngram")
    mod.NGramModel = real.NGramModel

    def train_ngram(data, order, out=None, *, smoothing="kn", glob=None, split=None):
        corpus = load_corpus(data, glob=glob, split=split)
        counts = np.bincount(np.asarray(corpus.split("train"), dtype=np.int64), minlength=len(corpus.vocab)) + 1.0
        mod.fitted.append(order)
        return StandInNGram(corpus.vocab.chars, counts / counts.sum(), order)

    mod.train_ngram = train_ngram
    mod.is_ngram = lambda path: False  # the stand-in is never saved, so the grid fits it each time
    mod.fitted = []
    return mod


def grid_main(*args):
    """`rnnlens grid ARGS` in this process: (exit status, stdout, stderr)."""
    from rnnlens.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["grid", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """A 2 types x 1 depth x 2 sizes grid on generated text, two workers, with a stand-in 5-gram."""
    root = tmp_path_factory.mktemp("grid")
    data = root / "input.txt"
    data.write_text(make_text(300))
    stand_in = stand_in_ngram_module()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLENS_CACHE", str(root / "cache"))
        mp.setitem(sys.modules, "rnnlens.ngram", stand_in)
        mp.setattr(rnnlens, "ngram", stand_in, raising=False)
        code, out, err = grid_main("--data", data, *TINY, "--workers", 2, "--ngram-order", 5, "--out", root / "g")
    assert code == 0, err
    return {"root": root, "data": data, "grid": root / "g", "stdout": out, "ngram": stand_in}


def test_tiny_grid_end_to_end(tiny_grid):
    g, out = tiny_grid["grid"], tiny_grid["stdout"]
    assert "2 workers, 1 CPU thread each" in out
    manifest = json.loads((g / "grid.json").read_text())
    assert list(manifest["cells"]) == NAMES
    for name, rec in manifest["cells"].items():
        assert rec["status"] == "done" and rec["action"] == "trained" and rec["step"] == 6
        assert rec["params"] == count_parameters(rnnlens.load(g / "cells" / name).config)
        assert (g / "cells" / name / "best.safetensors").exists() and (g / "logs" / f"{name}.log").exists()
    assert abs(manifest["cells"]["rnn-1x24"]["params"] - manifest["cells"]["lstm-1x8"]["params"]) < 0.02 * 3609
    # every value of the table is that cell's own evaluation of its best checkpoint on the test split
    own = {name: rnnlens.load(g / "cells" / name).evaluate(split="test").loss for name in NAMES}
    rows = list(csv.reader((g / "table.csv").read_text().splitlines()))
    assert rows[0] == ["model", "layers", "8", "16"]
    assert [r[:2] for r in rows[1:]] == [["lstm", "1"], ["rnn", "1"]]
    got = {"lstm-1x8": rows[1][2], "lstm-1x16": rows[1][3], "rnn-1x24": rows[2][2], "rnn-1x44": rows[2][3]}
    for name in NAMES:
        assert float(got[name]) == pytest.approx(own[name], abs=1e-6)
        assert manifest["cells"][name]["test_loss"] == pytest.approx(own[name], abs=1e-12)
    # the n-gram beside the table: the stand-in's own test loss
    assert tiny_grid["ngram"].fitted == [5]
    ngram = manifest["ngram"]["test_loss"]
    assert f"5-gram (Kneser-Ney): {ngram:.3f} nats/char" in (g / "table.md").read_text()
    rnn_row = next(ln for ln in (g / "table.md").read_text().splitlines() if ln.startswith("| RNN 1 layer"))
    assert f"{own['rnn-1x24']:.3f}" in rnn_row and f"{own['rnn-1x44']:.3f}" in rnn_row and "(44)" in rnn_row
    long = list(csv.DictReader((g / "results.csv").read_text().splitlines()))
    assert [r["model"] for r in long][-1] == "ngram-5" and float(long[-1]["test_loss_nats"]) == pytest.approx(ngram)
    page = (g / "table.html").read_text()
    assert f"{own['lstm-1x8']:.3f}" in page and "5-gram" in page
    # the map: one 2-D point per model, the n-gram included
    m = json.loads((g / "map.json").read_text())
    assert [p["name"] for p in m["models"]] == NAMES + ["5-gram"]
    assert all(np.isfinite([p["x"], p["y"]]).all() for p in m["models"]) and m["chars"] == 199
    assert m["method"] == "pca" and len(m["explained_variance"]) == 2
    assert (g / "map.png").read_bytes()[:4] == b"\x89PNG"
    logp = np.load(g / "cells" / "lstm-1x8" / "excerpt_logp.npy")
    assert logp.shape == (199,) and -logp.mean() == pytest.approx(m["models"][0]["loss_nats"], rel=1e-5)
    assert "| LSTM 1 layer |" in out and "wrote " in out


def _copy_grid(tiny_grid, tmp_path):
    g = tmp_path / "g"
    shutil.copytree(tiny_grid["grid"], g)
    return g


def _rerun(tiny_grid, g, *extra):
    return grid_main("--data", tiny_grid["data"], *TINY, "--no-ngram", *extra, "--out", g)


def test_rerun_trains_only_the_missing_and_resumes_the_interrupted(tiny_grid, tmp_path):
    from rnnlens.trainer import TrainConfig, Trainer
    g = _copy_grid(tiny_grid, tmp_path)
    shutil.rmtree(g / "cells" / "lstm-1x8")  # its result is gone: it trains again
    # rnn-1x24 stopped half way: a training state at step 3 that is not done
    run = g / "cells" / "rnn-1x24"
    shutil.rmtree(run)
    cfg = TrainConfig(data=str(tiny_grid["data"]), max_steps=3, batch_size=4, seq_len=20, eval_every=3,
                      split=(0.9, 0.05, 0.05))
    trainer = Trainer.start(run, ModelConfig(vocab_size=17, cell="rnn", size=24), cfg, progress=False)
    trainer.run()
    trainer.state.done = False
    trainer.save_last()
    code, out, err = _rerun(tiny_grid, g, "--workers", 2)
    assert code == 0, err
    cells = json.loads((g / "grid.json").read_text())["cells"]
    assert {n: c["action"] for n, c in cells.items()} == {"lstm-1x8": "trained", "lstm-1x16": "skipped",
                                                          "rnn-1x24": "resumed", "rnn-1x44": "skipped"}
    assert cells["rnn-1x24"]["resumed_from_step"] == 3 and cells["rnn-1x24"]["step"] == 6
    assert cells["lstm-1x8"]["step"] == 6 and all(c["status"] == "done" for c in cells.values())
    assert "resume rnn-1x24 at step 3" in out and "train lstm-1x8" in out
    assert "skip lstm-1x16: done at step 6" in out and "train lstm-1x16" not in out
    assert "no n-gram" not in out and "n-gram baseline: skipped" in out
    # the skipped cells kept their evaluation; the retrained ones were evaluated afresh
    assert "test lstm-1x16" not in out and "test lstm-1x8" in out and "test rnn-1x24" in out
    assert cells["lstm-1x16"]["test_loss"] == json.loads((tiny_grid["grid"] / "grid.json").read_text())[
        "cells"]["lstm-1x16"]["test_loss"]
    assert cells["rnn-1x24"]["test_loss"] == pytest.approx(
        rnnlens.load(g / "cells" / "rnn-1x24").evaluate(split="test").loss, abs=1e-12)


def test_a_failing_cell_is_recorded_and_the_others_go_on(tiny_grid, tmp_path):
    g = _copy_grid(tiny_grid, tmp_path)
    (g / "cells" / "lstm-1x16" / "last.safetensors").write_bytes(b"not a checkpoint at all")
    shutil.rmtree(g / "cells" / "rnn-1x44")
    code, _, err = _rerun(tiny_grid, g, "--workers", 1)
    assert code == 1
    assert "1 cell(s) failed: lstm-1x16" in err and "run the same command again to retry them" in err
    cells = json.loads((g / "grid.json").read_text())["cells"]
    bad = cells["lstm-1x16"]
    assert bad["status"] == "failed" and bad["exit_code"] == 2
    assert "corrupt" in bad["error"] and f"delete {g / 'cells' / 'lstm-1x16'}" in bad["error"]
    assert "error: checkpoint" in (g / bad["log"]).read_text()
    assert cells["rnn-1x44"]["status"] == "done" and cells["rnn-1x44"]["action"] == "trained"
    md = (g / "table.md").read_text()
    assert "| LSTM 1 layer | " in md and "failed" in md.splitlines()[4]
    rows = list(csv.reader((g / "table.csv").read_text().splitlines()))
    assert rows[1][3] == "" and rows[2][3] != ""
    assert [p["name"] for p in json.loads((g / "map.json").read_text())["models"]] == \
        ["lstm-1x8", "rnn-1x24", "rnn-1x44"]


def test_other_settings_on_an_existing_grid_are_refused(tiny_grid, tmp_path, capsys):
    g = _copy_grid(tiny_grid, tmp_path)
    code, _, err = run_cli(capsys, "grid", "--data", tiny_grid["data"], *TINY, "--lr", "0.01", "--out", g)
    assert code == 2
    assert "holds a grid made with other settings (--lr was unset, now 0.01)" in err
    assert "choose another --out" in err


# --------------------------------------------------------------------------------------------- CLI

def test_dry_run_lists_cells_with_widths_and_counts(text_file, capsys):
    code, out, err = run_cli(capsys, "grid", "--data", text_file, "--types", "lstm,gru", "--layers", "1,2",
                             "--sizes", "8,16", "--match-params", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert "vocabulary 17" in lines[0] and "matched" in lines[0]
    rows = [ln.split() for ln in lines[2:-1]]
    g = {(n, s): closest_width("gru", n, s, 17) for n in (1, 2) for s in (8, 16)}
    assert [r[0] for r in rows] == ["lstm-1x8", "lstm-1x16", "lstm-2x8", "lstm-2x16",
                                    f"gru-1x{g[1, 8]}", f"gru-1x{g[1, 16]}", f"gru-2x{g[2, 8]}", f"gru-2x{g[2, 16]}"]
    gru = ModelConfig(vocab_size=17, cell="gru", layers=2, size=g[2, 16])
    assert rows[7][5] == f"{count_parameters(gru):,}"
    assert rows[7][3:5] == ["16", str(g[2, 16])]
    assert lines[-1].startswith("8 cells")
    assert not list(text_file.parent.glob("**/grid.json"))


def test_dry_run_shows_the_state_of_an_existing_grid(tiny_grid, capsys):
    code, out, err = run_cli(capsys, "grid", "--data", tiny_grid["data"], *TINY, "--dry-run", "--out",
                             tiny_grid["grid"])
    assert code == 0, err
    assert out.count("done (step 6)") == 4


@pytest.mark.parametrize("args, message", [
    (["--types", "lstm,lstn"], "--types: unknown 'lstn'; choose from lstm, gru, rnn"),
    (["--sizes", ""], "--sizes is empty"),
    (["--layers", "1,x"], "--layers must list whole numbers"),
    (["--workers", "0"], "--workers must be an integer >= 1"),
    (["--map-chars", "1"], "--map-chars must be an integer >= 2"),
    (["--no-stop"], None),
])
def test_bad_grid_arguments(text_file, tmp_path, capsys, args, message):
    base = ["grid", "--data", text_file, "--out", tmp_path / "g", "--types", "lstm", "--layers", "1",
            "--sizes", "8"]
    if args == ["--no-stop"]:
        code, _, err = run_cli(capsys, *base)
        message = "give a stopping rule for every cell: --max-epochs, --max-steps or --time-budget"
    else:
        code, _, err = run_cli(capsys, *base, "--max-steps", "2", *args)
    assert code == 2
    assert err.strip() == f"error: {message}" or message in err
    assert "Traceback" not in err
    assert not (tmp_path / "g" / "cells").exists()


def test_grid_needs_out_unless_dry_run(text_file, capsys):
    code, _, err = run_cli(capsys, "grid", "--data", text_file, "--max-steps", "2")
    assert code == 2 and "give the grid folder with --out" in err
