"""A timed `rnnlens train` on a machine where other processes hold cores: torch's thread count against the one the
run now chooses (rnnlens.threads), side by side in one run of this script.

    python benchmarks/bench_busy_cores.py                                    # tiny Shakespeare, 60 s, 0 and 1 busy core
    python benchmarks/bench_busy_cores.py --data my.txt --budget 120 --busy 0,1,2
    python benchmarks/bench_busy_cores.py --busy 1@20-40 --train-args "--size 384 --batch-size 16 --dropout 0"
                                                          # a core taken 20 s in, freed at 40 s; the plan pinned
    python benchmarks/bench_busy_cores.py --quick                            # 15 s runs: about a minute

For each count of busy cores (a pure-Python loop per core, started a second before each run and stopped after it,
or started and stopped at given seconds into it), two fresh `rnnlens train --data D --time-budget B` processes run one after the other with the defaults: the
reference with `--threads T` (torch's own count, what every run took before) and ours without (the run chooses).
Each prints its thread count, the updates it took, updates per second of the budget and its best validation loss
(nats/char); the ratios say what the choice bought. With no core busy the two should take the same threads.
Every process gets torch's default environment (no OMP_NUM_THREADS), as a user's shell does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
BURNER = "while True: pass"


def train(data: str, budget: float, out: Path, threads: int | None, busy: int, busy_from: float,
          busy_until: float | None, extra: list[str]) -> dict:
    """One `rnnlens train` process beside `busy` busy cores from `busy_from` seconds into the run (0: from before
    it) until `busy_until` (None: its end): its thread count at the start, the updates it took, updates per second
    of the budget, its best validation loss and the lines it printed about threads, read from what it prints."""
    cmd = [sys.executable, "-m", "rnnlens", "train", "--data", data, "--time-budget", f"{budget:g}",
           "--out", str(out), "--force", "--quiet"] + (["--threads", str(threads)] if threads else []) + extra
    burners = []
    try:
        if busy_from == 0:
            burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(busy)]
            time.sleep(1.0)
        run = subprocess.Popen(cmd, env=bu.user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if busy_from > 0:
            time.sleep(busy_from)
            burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(busy)]
        if busy_until is not None:
            time.sleep(busy_until - busy_from)
            for b in burners:
                b.kill()
        text, _ = run.communicate()
    finally:
        for b in burners:
            b.kill()
            b.wait()
    if run.returncode != 0:
        raise SystemExit(f"rnnlens train failed ({run.returncode}):\n{text}")
    used = re.search(r"deterministic on (\d+) thread", text)
    stop = re.search(r"at step (\d+) .*best val ([\d.]+)", text)
    notes = [line for line in text.splitlines() if line.startswith(("threads:", "warning:"))]
    model = re.search(r"training an? (\S+ \S+)", text)
    pinned = re.search(r"to make them again: (.*)", text)
    steps = int(stop.group(1))
    return {"threads": int(used.group(1)) if used else None, "steps": steps, "rate": steps / budget,
            "val": float(stop.group(2)), "notes": notes,
            "plan": f"{model.group(1) if model else '?'} {pinned.group(1) if pinned else ''}".strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="a text file (default: ../shared's tiny Shakespeare)")
    ap.add_argument("--budget", type=float, default=60.0, help="--time-budget of every run, seconds (default 60)")
    ap.add_argument("--busy", default="0,1", help="counts of cores kept busy by other processes, each N from before "
                    "the run, N@S from S seconds into it, or N@S-E from S to E seconds (default 0,1)")
    ap.add_argument("--train-args", default="", help="more `rnnlens train` flags for every run, e.g. '--size 512 "
                    "--batch-size 32' to pin what a timed run would choose from its timing")
    ap.add_argument("--quick", action="store_true", help="--budget 15 (to check that it works)")
    args = ap.parse_args()
    if args.quick:
        args.budget = 15.0
    if not Path(args.data).is_file():
        raise SystemExit(f"no text at {args.data}: give one with --data")
    torch_threads = torch.get_num_threads()
    bu.print_header("busy cores: torch's threads against the run's choice, timed runs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnlens-busy-") as tmp:
        for spec in args.busy.split(","):
            busy, _, when = spec.partition("@")
            start, _, end = when.partition("-")
            span = (int(busy), float(start or 0), float(end) if end else None)
            extra = args.train_args.split()
            ref = train(args.data, args.budget, Path(tmp) / "ref", torch_threads, *span, extra)
            ours = train(args.data, args.budget, Path(tmp) / "ours", None, *span, extra)
            print(f"busy {spec}: planned: ref {ref['plan']}; ours {ours['plan']}", flush=True)
            rows.append([spec, ref["threads"], ours["threads"], f"{ref['rate']:.2f}", f"{ours['rate']:.2f}",
                         f"{ours['rate'] / ref['rate']:.2f}x", f"{ref['val']:.4f}", f"{ours['val']:.4f}",
                         f"{ours['val'] - ref['val']:+.4f}"])
            for note in ours["notes"]:
                print(f"busy {spec}: ours printed: {note}")
    print(f"\n{Path(args.data).name}, --time-budget {args.budget:g}, {os.cpu_count()} cores, torch's threads "
          f"{torch_threads}; updates/s = the run's updates over its budget; val = best validation loss, nats/char\n")
    print(bu.markdown_table(["busy cores", "threads at the start: ref", "ours", "updates/s: ref", "ours", "ours/ref",
                             "val: ref", "ours", "ours - ref"], rows))


if __name__ == "__main__":
    main()
