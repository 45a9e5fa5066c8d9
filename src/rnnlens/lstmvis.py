"""Export a model's states over a text in the files LSTMVis reads (Strobelt et al., 2017;
github.com/HendrikStrobelt/LSTMVis), for people who already use it.

An LSTMVis project folder holds (its README and lstmdata/data_handler.py):

* states.h5 -- one float32 dataset [T, H] per layer and kind: `states{n}` for the LSTM cells c
  of layer n (from 1, as LSTMVis counts), `output{n}` for the hidden states h, and, asked for
  with names=, `{gate}{n}` for gates and candidates (`forget1`, `candidate2`, ...);
* train.h5 -- the word id of every time step, int32 [T], as `word_ids` (what its lstm.yml
  example names) and, linked to the same data, `words` (what its preprocessing writes). A word
  is a character here; ids are the model's character ids plus 1 (LSTMVis's own preprocessing
  numbers words from 1);
* words.dict -- one `token id` per line; LSTMVis splits each line on whitespace, so a character
  that is whitespace or invisible gets a visible stand-in: '␣' space, '↵' newline, '⇥' tab
  (the strip's symbols in rnnlens.render.html), '<U+XXXX>' the others (also used when a stand-in
  is itself a character of the vocabulary);
* lstm.yml -- the project's name and description, the files, the word sequence and the states.
  LSTMVis applies tanh to states unless told `transform: none`: cells are exported raw and
  shown as tanh(c), as in Karpathy et al.; h, candidates and gates are exported as they are,
  with `transform: none` (gates also `unsigned: true`, being 0..1).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from rnnlens.checks import require
from rnnlens.errors import RnnlensError
from rnnlens.fileio import atomic_write, make_folder
from rnnlens.names import LAYER_ACTIVATIONS, layer_names
from rnnlens.runs import fits_in_memory

STAND_INS = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}
ROWS_PER_COPY = 65536


def dataset_name(name: str) -> str:
    """'layer0.cell' -> 'states1', 'layer1.hidden' -> 'output2', 'layer0.gate.forget' -> 'forget1'."""
    head, kind = name.split(".", 1)
    n = int(head.removeprefix("layer")) + 1
    return {"cell": "states", "hidden": "output"}.get(kind, kind.removeprefix("gate.")) + str(n)


def tokens(chars: list[str]) -> list[str]:
    """The dict token of every character: itself when visible and not whitespace, else a stand-in."""
    real = set(chars)
    out = []
    for c in chars:
        if c.isprintable() and not c.isspace():
            out.append(c)
        elif STAND_INS.get(c) and STAND_INS[c] not in real:
            out.append(STAND_INS[c])
        else:
            out.append(f"<U+{ord(c):04X}>")
    return out


def default_names(cell: str, layers: int) -> list[str]:
    kinds = ("cell", "hidden") if cell == "lstm" else ("hidden",)
    return layer_names(layers, kinds)


def check_names(names, cell: str, layers: int) -> list[str]:
    valid = layer_names(layers, LAYER_ACTIVATIONS[cell])
    names = list(dict.fromkeys(names))
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise RnnlensError(f"--names: a {cell} {layers}-layer model has no {', '.join(bad) or 'empty list'}; "
                           f"choose from {', '.join(valid)}")
    return names


def _yaml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def lstm_yml(project: str, description: str, names: list[str]) -> str:
    lines = [f"name: {_yaml_string(project)}", f"description: {_yaml_string(description)}", "",
             "files:  # reference names of the files in this folder",
             "  states: states.h5", "  train: train.h5", "  words: words.dict", "",
             "word_sequence:  # one word per character", "  file: train", "  path: word_ids",
             "  dict_file: words", "", "states:", "  file: states", "  types:"]
    for name in names:
        layer = int(name.split(".", 1)[0].removeprefix("layer")) + 1
        kind = name.split(".", 1)[1]
        if kind == "cell":
            lines.append(f"    - {{type: state, layer: {layer}, path: {dataset_name(name)}}}  # c, shown as tanh(c)")
        elif kind == "hidden":
            lines.append(f"    - {{type: output, layer: {layer}, path: {dataset_name(name)}, transform: none}}  # h")
        elif kind == "gate.candidate":
            lines.append(f"    - {{type: state, layer: {layer}, path: {dataset_name(name)}, transform: none}}")
        else:
            lines.append(f"    - {{type: state, layer: {layer}, path: {dataset_name(name)}, transform: none, "
                         "unsigned: true}")
    return "\n".join(lines) + "\n"


def export_lstmvis(lm, text: str, out: str | Path, *, names=None, unknown: str = "error",
                   replacement: str | None = None, project: str | None = None, source: str = "text") -> dict:
    """Write an LSTMVis project folder for model `lm` over `text` into `out`; returns {file kind: path}."""
    h5py = require("h5py", "lstmvis", "the LSTMVis export")

    cfg = lm.config
    names = check_names(names, cfg.cell, cfg.layers) if names else default_names(cfg.cell, cfg.layers)
    out = make_folder(out, "LSTMVis project")
    run = Path(str(lm.path)).parent.name if lm.path else "model"
    project = project or f"rnnlens {run}"

    with tempfile.TemporaryDirectory(prefix="rnnlens-lstmvis-") as folder:
        big = not fits_in_memory(len(text) * cfg.size * len(names) * 4)
        trace = lm.trace(text, names=names, unknown=unknown, replacement=replacement,
                         out=Path(folder) / "trace.safetensors" if big else None)
        T = len(trace)

        def write_states(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                for name in names:
                    a = trace[name]
                    d = f.create_dataset(dataset_name(name), shape=a.shape, dtype="float32")
                    for s in range(0, T, ROWS_PER_COPY):  # bounded memory for long texts
                        d[s:s + ROWS_PER_COPY] = np.asarray(a[s:s + ROWS_PER_COPY], dtype=np.float32)
                    d.attrs["rnnlens_name"] = name

        def write_words(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("word_ids", data=(np.asarray(trace.ids, dtype=np.int64) + 1).astype(np.int32))
                f["words"] = f["word_ids"]  # a hard link: the name LSTMVis's preprocessing uses, no extra space

        states = atomic_write(out / "states.h5", write_states)
        words = atomic_write(out / "train.h5", write_words)
    dict_text = "".join(f"{tok} {i + 1}\n" for i, tok in enumerate(tokens(lm.vocab.chars)))
    dict_path = atomic_write(out / "words.dict", lambda tmp: tmp.write_text(dict_text, encoding="utf-8"))
    description = (f"{cfg.cell.upper()} {cfg.layers}x{cfg.size} from {lm.path}, over {source} ({T:,} characters); "
                   "one word = one character, word id = rnnlens id + 1")
    yml = atomic_write(out / "lstm.yml", lambda tmp: tmp.write_text(lstm_yml(project, description, names),
                                                                         encoding="utf-8"))
    return {"states": states, "word_ids": words, "dict": dict_path, "config": yml, "chars": T,
            "datasets": {dataset_name(n): n for n in names}}
