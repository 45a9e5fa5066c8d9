"""One cell of a grid, in a process of its own: `python -m rnnlens.grid.worker SPEC.json`.

SPEC.json holds the keyword arguments of rnnlens.plan.train (a new run's options and `out`, or
`resume`). The worker trains, then writes SPEC's result file (`result` in the spec): {"status":
"done" | "interrupted" | "failed", "error": one line or null}, so the grid reads what happened from
data, not from a log. Exit status: 0 done, 130 interrupted, 2 failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from rnnlens.errors import RnnlensError
    from rnnlens.fileio import write_json_atomic
    from rnnlens.plan import train
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result_path = spec.pop("result")
    try:
        _, state = train(progress=False, **spec)
    except RnnlensError as e:
        print(f"error: {e}", file=sys.stderr)
        write_json_atomic(result_path, {"status": "failed", "error": f"error: {e}"})
        return 2
    except KeyboardInterrupt:
        write_json_atomic(result_path, {"status": "interrupted", "error": None})
        return 130
    interrupted = bool(state.stop_reason and state.stop_reason.startswith("interrupted"))
    write_json_atomic(result_path, {"status": "interrupted" if interrupted else "done", "error": None,
                                    "stop_reason": state.stop_reason})
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
