"""The timing before a time-budgeted run: how many updates the plan counts, against what the run then takes.

A run given only `--time-budget` chooses its width, batch and dropout from the number of updates it
will get (rnnlens.plan), counted from a short timing of the model before the run starts
(rnnlens.trainer.measure_updates_per_second). This script puts that count beside its reference, the one
rnnlens made up to the tenth session: two untimed updates, then the mean over at least a second (and three
updates), times the budget. rnnlens now warms up for a second, takes the median update, and takes off the
time of the run's validations. Each trial is a fresh process, as a `rnnlens train` is: it times the 1x512 LSTM at
batch 16 (the shape and batch the plan counts at) with one of the two methods, then trains that same model
(dropout 0, batch 16) on generated text for the budget and counts the steps it took.

Printed per method: the planned updates of each trial, the steps its run took, planned / taken (1 is a
plan that foresaw its run; the machine's own speed moves over minutes, which no timing before a run can
see), its median and the worst miss.

With --plans TEXT it trains nothing: each trial plans `rnnlens train --data TEXT --time-budget BUDGET` in a
fresh process by either timing and prints the width, batch and dropout it chose; the same command should
choose the same run.

    python benchmarks/bench_planning.py                      # 4 trials per method, 60 s runs: ~10 min
    python benchmarks/bench_planning.py --trials 6           # ~15 min
    python benchmarks/bench_planning.py --quick              # 1 trial per method, 10 s runs: ~40 s
    python benchmarks/bench_planning.py --plans my.txt --budget 300 --trials 5   # what the same command chooses
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu

SIZE, BATCH = 512, 16


def reference_updates_per_second(model_cfg, cfg, batch_size: int, seconds: float = 1.0, min_steps: int = 3) -> float:
    """The timing of rnnlens up to the tenth session: two untimed updates, then the mean over >= `seconds`."""
    import torch

    from rnnlens import reproducibility
    from rnnlens.model import CharRNN
    from rnnlens.trainer import make_optimizer, resolve_device, update
    device = resolve_device(cfg.device)
    reproducibility.configure(cfg.deterministic, device.type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = CharRNN(model_cfg).to(device)
        optimizer = make_optimizer(model, cfg)
        x = torch.randint(model_cfg.vocab_size, (batch_size, cfg.seq_len + 1), device=device)
        hidden = None
        for _ in range(2):
            _, _, hidden = update(model, model, optimizer, cfg, device, x[:, :-1], x[:, 1:], hidden)
        t0, steps, elapsed = time.perf_counter(), 0, 0.0
        while steps < min_steps or elapsed < seconds:
            _, _, hidden = update(model, model, optimizer, cfg, device, x[:, :-1], x[:, 1:], hidden)
            steps, elapsed = steps + 1, time.perf_counter() - t0
    return steps / max(elapsed, 1e-9)


def trial(method: str, text: str, budget: float, out: str) -> dict:
    """In a fresh process: the planned updates in `budget` seconds by `method`, then the steps a run takes."""
    from rnnlens.corpus import load_corpus
    from rnnlens.model import ModelConfig
    from rnnlens.plan import start_run, updates_in_budget
    from rnnlens.trainer import TrainConfig, measure_updates_per_second
    corpus = load_corpus(text)
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), size=SIZE, dropout=0.0)
    cfg = TrainConfig(data=text, time_budget=budget, batch_size=BATCH)
    t = time.perf_counter()
    if method == "rnnlens":  # the plan as rnnlens counts it: the median update, less the run's validations
        windows = (len(corpus.split("train")) - 1) // BATCH // cfg.seq_len
        planned = updates_in_budget(cfg, 1 / measure_updates_per_second(model_cfg, cfg, BATCH), BATCH, windows,
                                    val_chars=len(corpus.split("val")))
    else:
        planned = reference_updates_per_second(model_cfg, cfg, BATCH) * budget
    timing_s = time.perf_counter() - t
    state = start_run(out, data=text, time_budget=budget, size=SIZE, batch_size=BATCH, dropout=0.0, progress=False,
                      log=lambda line: None).run()
    return {"planned": planned, "taken": state.step, "timing_s": timing_s}


def plan_trial(method: str, text: str, budget: float) -> dict:
    """In a fresh process: what `rnnlens train --data TEXT --time-budget BUDGET` chooses, timed by `method`."""
    import re

    from rnnlens import plan
    if method == "reference":  # the plan before the eleventh session: the mean timing x the budget
        plan.measure_updates_per_second = reference_updates_per_second
        plan.updates_in_budget = lambda train, update_s, *args, **kwargs: math.ceil(train.time_budget / update_s)
    run = plan.plan_run(text, time_budget=budget)
    updates = re.search(r"~([\d,]+) updates at batch 16", run.defaults)
    dropout = f"dropout {run.model.dropout:g}" + (" on plateau" if run.train.dropout_on_plateau else "")
    if run.train.wide_gap_dropout is not None:
        dropout += f" ({run.train.wide_gap_dropout:g} on a wide gap)"
    return {"choice": f"1x{run.model.size}, batch {run.train.batch_size}, {dropout}",
            "planned": int(updates.group(1).replace(",", ""))}


def plans(text: str, budget: float, trials: int) -> None:
    """The choices of `trials` fresh plans of the same command by each method, interleaved."""
    choices = {"reference": [], "rnnlens": []}
    for i in range(trials):
        for method in (("reference", "rnnlens") if i % 2 == 0 else ("rnnlens", "reference")):
            line = subprocess.run([sys.executable, __file__, "--plan-worker", method, text, str(budget)], check=True,
                                  capture_output=True, text=True).stdout
            r = json.loads(line.strip().splitlines()[-1])
            choices[method].append(r)
            print(f"plan {i + 1} {method}: {r['choice']} (~{r['planned']:,} updates at batch 16)", flush=True)
    rows = []
    for method, rs in choices.items():
        planned = [r["planned"] for r in rs]
        distinct = sorted({r["choice"] for r in rs})
        rows.append([method, f"{min(planned):,}-{max(planned):,}", f"{max(planned) / min(planned):.2f}x",
                     len(distinct), "; ".join(f"{c} ({sum(r['choice'] == c for r in rs)})" for c in distinct)])
    print()
    print(bu.markdown_table([f"{Path(text).name}, {budget:g} s: timing", "planned updates", "spread",
                             "distinct choices", "choices (times)"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4, help="fresh processes per method (default 4)")
    ap.add_argument("--budget", type=float, default=60, help="seconds of each run (default 60)")
    ap.add_argument("--chars", type=int, default=1_000_000, help="generated characters (default 1M)")
    ap.add_argument("--quick", action="store_true", help="1 trial per method, 10 s runs on 200K characters")
    ap.add_argument("--plans", metavar="TEXT", help="instead: plan `rnnlens train --data TEXT --time-budget "
                    "BUDGET` in --trials fresh processes per method and print what each chose (no training)")
    ap.add_argument("--plan-worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "TEXT", "BUDGET", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.trials, args.budget, args.chars = 1, 10.0, 200_000
    if args.plan_worker:
        method, text, budget = args.plan_worker
        print(json.dumps(plan_trial(method, text, float(budget))))
        return
    if args.plans:
        bu.print_header(f"bench_planning: the choices of {args.trials} fresh plans per method of a {args.budget:g} s "
                        f"run on {args.plans}")
        plans(args.plans, args.budget, args.trials)
        return
    if args.worker:
        method, text, budget, out = args.worker
        print(json.dumps(trial(method, text, float(budget), out)))
        return
    bu.print_header(f"bench_planning: the timing before a run, {args.trials} fresh processes per method, "
                    f"{args.budget:g} s runs of a 1x{SIZE} LSTM at batch {BATCH}")
    bu.sgemm_probe("before")
    results = {"reference": [], "rnnlens": []}
    with tempfile.TemporaryDirectory() as tmp:
        text = bu.write_generated_text(Path(tmp) / "text.txt", args.chars)
        for i in range(args.trials):
            # interleaved, and the first method alternates: neither always follows the other's warm machine
            order = ("reference", "rnnlens") if i % 2 == 0 else ("rnnlens", "reference")
            for method in order:
                out = Path(tmp) / f"run-{method}-{i}"
                line = subprocess.run([sys.executable, __file__, "--worker", method, str(text), str(args.budget),
                                       str(out)], check=True, capture_output=True, text=True).stdout
                r = json.loads(line.strip().splitlines()[-1])
                results[method].append(r)
                print(f"trial {i + 1} {method}: planned {r['planned']:,.0f} updates (timed in {r['timing_s']:.1f} s), "
                      f"took {r['taken']:,}", flush=True)
    bu.sgemm_probe("after")
    rows = []
    for method, rs in results.items():
        ratios = [r["planned"] / r["taken"] for r in rs]
        rows.append([method, " / ".join(f"{r['planned']:,.0f}" for r in rs), " / ".join(f"{r['taken']:,}" for r in rs),
                     " / ".join(f"{x:.2f}" for x in ratios), f"{bu.median(ratios):.2f}",
                     f"{max(abs(x - 1) for x in ratios):.0%}", f"{bu.median([r['timing_s'] for r in rs]):.1f}"])
    print()
    print(bu.markdown_table(["timing", "planned updates", "taken", "planned / taken", "median", "worst miss",
                             "timing s (median)"], rows))

if __name__ == "__main__":
    main()
