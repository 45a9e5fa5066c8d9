"""Bit-reproducible training on the CPU: the settings, where they are made, and how a run reports them.

Why: with more than one thread, a seeded run could end with other weights than the same command run
again (issue #17), so `--resume` after a kill was not exact either. The fused kernels run on Intel
MKL (sgemm) and oneDNN (the LSTM); MKL picks its code path at run time (by CPU, by the alignment
of each buffer) and may change how many threads it uses, and each choice sums in another order.

What fixes it (docs/training.md, "Reproducibility"):
* MKL_CBWR=AVX2,STRICT  MKL's Conditional Numerical Reproducibility: one code path (AVX2's, on an Intel
                        CPU that has it; AUTO,STRICT, the CPU's own, on any other, where MKL would run
                        AUTO whatever branch is named), and STRICT makes results independent of the
                        buffers' alignment;
* MKL_DYNAMIC=FALSE     MKL always uses the threads it was given (not fewer on a busy machine);
* OMP_DYNAMIC=FALSE     the same for the OpenMP runtime;
* torch.use_deterministic_algorithms(True) and, on GPUs, cuDNN's deterministic mode with
  CUBLAS_WORKSPACE_CONFIG=:4096:8 (`--deterministic`, the default).

MKL and OpenMP read their variables once, when torch loads them, so `apply_env` runs before anything
imports torch: at the top of rnnlens/__init__.py (which the CLI and `python -m rnnlens` also go
through) and again in `distributed.launch` for the ranks. Every variable is only a default
(os.environ.setdefault): a user's own value wins. When torch was imported before rnnlens,
`enforce` sets what it still can through MKL's own functions, and `check` says honestly what is
not in effect, so the trainer can warn in one line.
"""

from __future__ import annotations

import ctypes
import os
import sys


def _mkl_branch(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The code path MKL_CBWR asks for: "AVX2" on an Intel CPU that lists AVX2 among its flags, else "AUTO"
    (the CPU's own; also where /proc/cpuinfo cannot be read)."""
    try:
        with open(cpuinfo_path) as cpuinfo:
            lines = cpuinfo.read().splitlines()
    except OSError:
        return "AUTO"
    intel = any(line.startswith("vendor_id") and line.split(":", 1)[-1].strip() == "GenuineIntel" for line in lines)
    avx2 = any(line.startswith("flags") and "avx2" in line.split() for line in lines)
    return "AVX2" if intel and avx2 else "AUTO"


# the environment a reproducible run needs; set before torch loads MKL and OpenMP.
# MKL_CBWR names AVX2's branch rather than AUTO on an Intel CPU with AVX2: on an AVX-512 Xeon (avx512_bf16/fp16)
# the test's seeded 2-layer RNN with dropout, killed at step 18 and resumed, differed from the uninterrupted
# run in 7 of 16 tries under AUTO,STRICT and in 0 of 12 under AVX2,STRICT, at the same speed (6.5-6.7 updates
# per second of the 1x512 at batch 32 under both); one branch also sums alike on every such machine.
# MKL takes a named branch on Intel CPUs only: on an AMD EPYC with AVX2 and AVX-512, MKL_CBWR=AVX2,STRICT ran
# as AUTO,STRICT (mkl_serv_cbwr_get: 0x10002), so there we ask for the mode that runs
ENV_DEFAULTS = {
    "MKL_CBWR": f"{_mkl_branch()},STRICT",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",   # cuBLAS's deterministic mode (GPU; read at CUDA start)
}

# MKL's CNR constants (mkl_service.h)
_CBWR_ALL = ~0
_CBWR_STRICT = 0x10000
_CBWR_BRANCHES = {"AUTO": 2, "COMPATIBLE": 3, "SSE2": 4, "SSSE3": 6, "SSE4_1": 7, "SSE4_2": 8, "AVX": 9,
                  "AVX2": 10, "AVX512_MIC": 11, "AVX512": 12, "AVX512_MIC_E1": 13}

_TORCH_WAS_IMPORTED = None   # whether torch was already loaded when apply_env first ran
_ENFORCED = None


def apply_env() -> None:
    """Set the variables of ENV_DEFAULTS that the user has not set. Call before `import torch`."""
    global _TORCH_WAS_IMPORTED
    if _TORCH_WAS_IMPORTED is None:
        _TORCH_WAS_IMPORTED = "torch" in sys.modules
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _libtorch():
    """libtorch_cpu, which carries MKL statically and exports its service functions; None if not found."""
    try:
        import torch
        path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
        return ctypes.CDLL(path) if os.path.exists(path) else None
    except OSError:
        return None


def _mkl_cbwr_get():
    lib = _libtorch()
    fn = getattr(lib, "mkl_serv_cbwr_get", None) if lib is not None else None
    if fn is None:
        return None
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
    return int(fn(_CBWR_ALL))


def enforce() -> None:
    """What the environment could not do because torch was loaded first: set MKL's CNR mode and
    its thread policy through MKL itself (works until MKL's first computation), once per process."""
    global _ENFORCED
    if _ENFORCED is not None:
        return
    _ENFORCED = True
    lib = _libtorch()
    if lib is None:
        return
    if os.environ.get("MKL_DYNAMIC", "").upper() in ("FALSE", "0", "NO") and hasattr(lib, "mkl_set_dynamic"):
        lib.mkl_set_dynamic(ctypes.byref(ctypes.c_int(0)))  # the exported symbol is the Fortran one: by reference
    cbwr = _mkl_cbwr_get()
    wanted = cbwr_mode(os.environ.get("MKL_CBWR", ""))
    if cbwr is not None and wanted & _CBWR_STRICT and not cbwr & _CBWR_STRICT and hasattr(lib, "mkl_serv_cbwr_set"):
        lib.mkl_serv_cbwr_set.restype = ctypes.c_int
        lib.mkl_serv_cbwr_set(ctypes.c_int(wanted))  # fails (-8) once MKL has computed


def cbwr_mode(setting: str) -> int:
    """MKL's CNR mode for an MKL_CBWR value such as "AVX2,STRICT" (the branch MKL would read from the
    environment, AUTO where it names none MKL knows, plus the STRICT bit)."""
    words = [w.strip() for w in setting.upper().split(",")]
    branch = next((_CBWR_BRANCHES[w] for w in words if w in _CBWR_BRANCHES), _CBWR_BRANCHES["AUTO"])
    return branch | (_CBWR_STRICT if "STRICT" in words else 0)


def check() -> list[str]:
    """What stands between this process and a bit-reproducible CPU run, as short phrases ([] = nothing)."""
    problems = []
    import torch
    if torch.backends.mkl.is_available():
        cbwr = _mkl_cbwr_get()
        if cbwr is not None and not cbwr & _CBWR_STRICT:
            problems.append(f"MKL's reproducible mode is off (MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')})")
    if os.environ.get("OMP_DYNAMIC", "").upper() in ("TRUE", "1", "YES"):
        problems.append("OMP_DYNAMIC=TRUE lets OpenMP change the thread count")
    if os.environ.get("MKL_DYNAMIC", "").upper() in ("TRUE", "1", "YES"):
        problems.append("MKL_DYNAMIC=TRUE lets MKL change the thread count")
    return problems


def configure(deterministic: bool, device_type: str = "cpu") -> None:
    """Switch torch's deterministic algorithms (and cuDNN's) on or off for this process."""
    import torch
    if deterministic:
        enforce()
    # warn_only: an op without a deterministic version must not stop a run; torch warns instead
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device_type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def mode(deterministic: bool, device_type: str = "cpu") -> dict:
    """What decides whether a run can be repeated bit for bit; stored in a checkpoint's meta."""
    import torch
    return {"deterministic": bool(deterministic), "threads": torch.get_num_threads(), "device": device_type,
            "torch": torch.__version__}


def start_line(deterministic: bool, device_type: str = "cpu", world: int = 1) -> str:
    """The one line a run prints at its start about reproducibility."""
    import torch
    threads = torch.get_num_threads()
    where = f"{threads} thread{'s' if threads != 1 else ''}" + (f" x {world} ranks" if world > 1 else "")
    if device_type == "cuda":
        where = "GPU" + (f" x {world} ranks" if world > 1 else "")
    if not deterministic:
        return (f"mode: --no-deterministic on {where}: faster kernels, but the same seed may not give the same "
                "weights twice and --resume is not bit-exact")
    problems = check() if device_type == "cpu" else []
    if problems:
        return (f"warning: this run may not be bit-reproducible: {'; '.join(problems)}; torch was imported before "
                "rnnlens with other settings: import rnnlens first or run `rnnlens train` from the shell")
    return (f"mode: deterministic on {where}: the same command gives the same weights, and --resume is "
            f"bit-exact at {threads} thread{'s' if threads != 1 else ''}")


def resume_note(saved: dict | None, now: dict, world_then: int | None, world_now: int) -> str | None:
    """Why a resumed run will not be bit-identical to one that was never stopped (None: it will be)."""
    reasons = []
    if not saved:
        return None
    if not saved.get("deterministic") or not now.get("deterministic"):
        reasons.append("the run is not in --deterministic mode")
    if saved.get("threads") != now.get("threads") and now.get("device") == "cpu":
        reasons.append(f"it was trained on {saved.get('threads')} threads and now runs on {now.get('threads')} "
                       f"(give --threads {saved.get('threads')} to match)")
    if saved.get("device") != now.get("device"):
        reasons.append(f"it moves from {saved.get('device')} to {now.get('device')}")
    if world_then is not None and world_then != world_now:
        reasons.append(f"it was saved by {world_then} rank(s) and resumes on {world_now}")
    if saved.get("torch") and saved.get("torch") != now.get("torch"):
        reasons.append(f"torch changed ({saved.get('torch')} -> {now.get('torch')})")
    if not reasons:
        return None
    return "note: this resume continues the run but is not bit-exact: " + "; ".join(reasons)
