"""Tables of plain rows written atomically as CSV (a reader never sees half a file)."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """Write `rows` (dicts) to `path` as CSV with a header; None becomes an empty cell."""
    from rnnlens.fileio import atomic_write
    path = Path(path)
    fields = fieldnames or (list(rows[0]) if rows else [])

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)
    return path
