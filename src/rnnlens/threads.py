"""How many CPU threads a run trains on, and why: torch's one per core, fewer when other processes hold cores.

Why: with OMP_DYNAMIC=FALSE (rnnlens.reproducibility: the thread count must not change under a seeded run) every
parallel region waits at a barrier for all of its threads. When another process keeps a core busy, the thread on
that core runs only in the scheduler's time slices, and every update waits for it: the default 1x512 LSTM at batch
32 took 0.38 updates per second on 2 threads with one of this machine's 2 cores busy, against 3.4 on 1 thread and
6.5 on 2 threads of the quiet machine (docs/benchmarks.md, section 13).

So a run on the CPU that was given no thread count looks at its start how busy the cores are, and again every
WATCH_SECONDS while it trains. A timed run (--time-budget) takes one thread per core the other processes leave
free, and back up to torch's when they free them: its length in updates already follows the machine's speed. A run
counted in updates or epochs keeps torch's threads, so the same command gives the same weights on a busy machine as
on a quiet one (the thread count changes how sums are split), and says once that it is slow and how to make it fast.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

# seconds the start of a run sleeps while it reads how busy the cores are: ~10 of the kernel's 100 Hz ticks per
# core, enough to tell a busy core (~10) from a free one (0-1)
SAMPLE_SECONDS = 0.1
# seconds between two looks while a run trains: a core taken after the start stalls the run at most about this long
# (at 10 s, a core taken 20 s into a 60 s run and freed at 40 s left the run no faster than torch's 2 threads did:
# docs/benchmarks.md, section 13); a look reads two small files
WATCH_SECONDS = 2.0
# a core counts as free when other processes used at most this share of it: a thread sharing a core with a busier
# process waits at every barrier
FREE_CORE_BUSY = 0.25

_TORCH_THREADS = None  # torch's own thread count, as it was before a run first chose one


def torch_default_threads() -> int:
    """torch's thread count as this process started with it (OMP_NUM_THREADS, else one per physical core)."""
    global _TORCH_THREADS
    if _TORCH_THREADS is None:
        import torch
        _TORCH_THREADS = torch.get_num_threads()
    return _TORCH_THREADS


def cpu_times(text: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """Per CPU in `cpus`: (busy ticks, all ticks) from the text of /proc/stat. Busy is everything but idle and
    iowait (steal counts as busy: the hypervisor gave that time to someone else)."""
    times = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times


@dataclass
class CoreReading:
    """The machine's CPU counters at one moment, over the cores this process may run on."""
    busy_ticks: int
    all_ticks: int
    cores: int
    own_seconds: float  # CPU seconds this process has used, all its threads


def read_cores(stat_path: str = "/proc/stat") -> CoreReading | None:
    """The counters now; None where the kernel's cannot be read (not Linux)."""
    try:
        with open(stat_path) as f:
            times = cpu_times(f.read(), set(os.sched_getaffinity(0)))
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    if not times:
        return None
    own = os.times()
    return CoreReading(sum(b for b, _ in times.values()), sum(a for _, a in times.values()), len(times),
                       own.user + own.system)


def others_busy(before: CoreReading, after: CoreReading) -> float | None:
    """How many cores other processes kept busy between two readings: the machine's busy time less this
    process's own, over the time that passed (None if no tick passed)."""
    ticks = after.all_ticks - before.all_ticks
    if ticks <= 0 or after.cores != before.cores:
        return None
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    elapsed = ticks / after.cores * tick_s  # seconds, from the counters' own clock
    busy = (after.busy_ticks - before.busy_ticks) * tick_s - (after.own_seconds - before.own_seconds)
    return min(float(after.cores), max(0.0, busy / elapsed))


def busy_cores(sample_s: float = SAMPLE_SECONDS, stat_path: str = "/proc/stat") -> tuple[float, int] | None:
    """(cores other processes kept busy over `sample_s` seconds, cores this process may run on); None where the
    counters cannot be read."""
    before = read_cores(stat_path)
    if before is None:
        return None
    time.sleep(sample_s)
    after = read_cores(stat_path)
    busy = others_busy(before, after) if after is not None else None
    return None if busy is None else (busy, after.cores)


def free_cores(busy: float, cores: int) -> int:
    """How many of `cores` the other processes leave free when they keep `busy` of them busy: a core they use at
    most FREE_CORE_BUSY of counts as free."""
    return math.floor(cores - busy + FREE_CORE_BUSY + 1e-9)


@dataclass
class ThreadChoice:
    threads: int
    note: str | None = None  # one line for the run's log: why it took fewer threads, or why it will be slow
    watched: bool = False    # whether the run keeps looking at the cores as it trains (ThreadWatch)
    timed: bool = False      # whether the run is timed, and so may change its threads as the cores free or fill


def _held(busy: float, cores: int) -> str:
    return f"other processes keep {busy:.1f} of the {cores} cores busy"


def _slow_warning(busy: float, cores: int, threads: int, free: int) -> str:
    return (f"warning: {_held(busy, cores)}: on {threads} threads every update waits for a busy core and runs many "
            f"times slower; --threads {free} is faster here (and gives other weights than {threads} threads), or "
            "free the cores")


def choose_threads(given: int | None, timed: bool, device_type: str, busy=None) -> ThreadChoice:
    """The thread count of a run on `device_type`: `given` (--threads) as it is; else torch's own, or, when the run
    is `timed` and other processes hold cores, one thread per free core. `busy`: busy_cores (None), or a stand-in."""
    default = torch_default_threads()
    if given is not None:
        return ThreadChoice(given)
    if device_type != "cpu" or default <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(default)
    reading = (busy or busy_cores)()
    if reading is None:
        return ThreadChoice(default)
    free = min(default, max(1, free_cores(*reading)))
    if free >= default:
        return ThreadChoice(default, watched=True, timed=timed)
    if timed:
        return ThreadChoice(free, f"threads: {free} of torch's {default}, because {_held(*reading)}, and a thread on "
                                  f"a busy core stalls every update; --threads {default} to take them all",
                            watched=True, timed=True)
    return ThreadChoice(default, _slow_warning(*reading, default, free), watched=True, timed=False)


class ThreadWatch:
    """Looks at the cores while a run trains (at most every WATCH_SECONDS): a timed run moves to the free cores'
    count, a counted run warns once when they are fewer than its threads."""

    def __init__(self, choice: ThreadChoice, read=read_cores):
        self.timed, self.threads, self.read = choice.timed, choice.threads, read
        self.warned = choice.note is not None and not choice.timed
        self.last = read()
        self.last_t = time.monotonic()

    def look(self, step: int) -> str | None:
        """A line for the log when the run changed its threads or warns; None otherwise, and between looks."""
        if self.last is None or time.monotonic() - self.last_t < WATCH_SECONDS:
            return None
        now = self.read()
        busy = others_busy(self.last, now) if now is not None else None
        self.last, self.last_t = now, time.monotonic()
        if busy is None:
            return None
        default = torch_default_threads()
        free = min(default, max(1, free_cores(busy, now.cores)))
        if not self.timed:
            if free < self.threads and not self.warned:
                self.warned = True
                return f"from step {step}, " + _slow_warning(busy, now.cores, self.threads, free)
            return None
        if free == self.threads:
            return None
        self.threads = free
        apply_threads(ThreadChoice(free))
        why = _held(busy, now.cores) if free < default else "the other processes freed the cores"
        return f"threads: {free} from step {step}, because {why}"


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's thread count of this process to the choice's."""
    import torch
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
