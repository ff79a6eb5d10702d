"""The aligned table of face records that predict and explain print on a terminal.

Columns are as wide as their widest cell, so the table is printed once every row is known. The
rows wait in a `Table`: in memory up to `HOLD` rows, then in a temporary file (as formatted
cells, one line each), so printing a million rows takes the memory of a few thousand.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from typing import IO, Any

from ..io.files import display_name
from .records import TABLE_COLUMNS

PATH_WIDTH = 60  # longer paths keep their end: "…" + the last 59 characters
HOLD = 5000  # rows kept in memory before the rest wait in a temporary file
_SEP = "\x1f"  # between the cells of a waiting row (display_name escapes control characters)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):  # a box
        return ",".join(f"{x:.0f}" for x in v.values())
    return str(v)


def table_cells(r: dict) -> list[str]:
    """One record's cells, in TABLE_COLUMNS order, safe to print on one line."""
    cells = []
    for key, _ in TABLE_COLUMNS:
        v = _fmt(r.get(key))
        if key == "label" and r.get("unsure"):
            v = f"unsure ({v})"  # the same mark --annotate and the web page show
        if key == "path" and r.get("timestamp") is not None:
            v = f"{v} @{r['timestamp']:.2f}s"
        cells.append(display_name(v))
    return cells


class Table:
    """Rows to print as one aligned table: `add` as they come, `print` at the end."""

    def __init__(self, hold: int = HOLD) -> None:
        self.hold = hold
        self.width = [len(h) for _, h in TABLE_COLUMNS]
        self._rows: list[list[str]] = []
        self._spill: IO[str] | None = None

    def add(self, records: Iterable[dict]) -> None:
        for r in records:
            cells = table_cells(r)
            self.width = [max(w, len(c)) for w, c in zip(self.width, cells, strict=True)]
            if len(self._rows) < self.hold:
                self._rows.append(cells)
                continue
            if self._spill is None:
                self._spill = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")
            self._spill.write(_SEP.join(cells) + "\n")

    def _all(self) -> Iterable[list[str]]:
        yield from self._rows
        if self._spill is not None:
            self._spill.seek(0)
            for line in self._spill:
                yield line.rstrip("\n").split(_SEP)

    def print(self, stream: IO[str] | None = None) -> None:
        out = stream or sys.stdout
        width = list(self.width)
        width[0] = min(width[0], PATH_WIDTH)
        cols = [h for _, h in TABLE_COLUMNS]
        print("  ".join(c.ljust(w) for c, w in zip(cols, width, strict=True)).rstrip(), file=out)
        for x in self._all():
            x[0] = x[0] if len(x[0]) <= PATH_WIDTH else "…" + x[0][-(PATH_WIDTH - 1):]
            print("  ".join(v.ljust(w) for v, w in zip(x, width, strict=True)).rstrip(), file=out)
        if self._spill is not None:
            self._spill.close()
            self._spill = None


def print_table(records: Iterable[dict], stream: IO[str] | None = None) -> None:
    """Print records as one aligned table (see Table)."""
    table = Table()
    table.add(records)
    table.print(stream)
