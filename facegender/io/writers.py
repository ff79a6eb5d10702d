"""Result files that survive: rows streamed as they come, the file swapped in whole at the end.

`RowWriter` writes CSV or JSON rows (whatever dicts it is given) to a temporary file beside the
target, flushed after every `write`, and renames it over the target on `close`: a reader never
sees half a file, and a run that stops early never leaves an older file at the same path looking
current. A FIFO, a character device or stdout named as a path is written into in place, never
replaced; a folder or an input is refused (io.targets decides, before the first row).
`close(partial=reason)` (Ctrl-C, an error) still renames it, ending with one marker row whose
`error` says the output is partial. Any text, including file names that are not valid UTF-8, is
written as valid UTF-8 (io.files.safe_text). A CSV cell that a spreadsheet would run as a
formula (one starting with =, +, -, @, a tab or a carriage return) gets a leading apostrophe;
JSON keeps the text.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .files import safe_text
from .targets import STREAM, TargetError, file_target, open_stream, publish, temp_beside

PARTIAL_PREFIX = "PARTIAL OUTPUT"


def _clean(v: Any) -> Any:
    """Values with every string made valid UTF-8 (for JSON)."""
    if isinstance(v, str):
        return safe_text(v)
    if isinstance(v, dict):
        return {safe_text(str(k)): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    return v


def csv_cell(key: str, v: Any) -> Any:
    """One CSV cell: boxes as 'x y w h' (1 decimal), other lists/dicts as JSON, text made safe."""
    if v is None:
        return ""
    if key == "box" and isinstance(v, (list, tuple)):
        return " ".join(f"{x:.1f}" for x in v)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(_clean(v), ensure_ascii=False)
    if isinstance(v, str):
        return neutralise_formula(safe_text(v))
    return v


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(text: str) -> str:
    """`text` with a leading apostrophe when a spreadsheet would read it as a formula
    (CSV injection: a file named '=HYPERLINK(...).jpg'); other text unchanged."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def partial_row(fields: list[str], reason: str) -> dict[str, Any]:
    """The last row of a partial file: every field empty but `error`."""
    row: dict[str, Any] = {f: None for f in fields}
    row["error"] = f"{PARTIAL_PREFIX}: {reason}"
    return row


class RowWriter:
    """Stream rows to `target` (a path, or an open text stream such as sys.stdout) as CSV or
    JSON. For a path, rows go to a hidden temporary file in the same folder that replaces the
    target on close. `fields`: the preferred column order (of the CSV row for CSV); keys of
    the first row that it does not name follow it (default: the first row's keys). `csv_row`
    turns a row into its CSV form (e.g. a box spread over four columns)."""

    def __init__(self, target: str | os.PathLike | IO[str], fmt: str,
                 fields: list[str] | None = None,
                 csv_row: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if fmt not in ("csv", "json"):
            raise ValueError(f"format must be csv or json, not {fmt!r}")
        self.fmt = fmt
        self.fields = list(fields) if fields else None
        self.csv_row = csv_row
        self._keys: list[str] = []  # keys of the rows given (before csv_row)
        self.rows = 0
        self.closed = False
        self._csv: csv.DictWriter | None = None
        self._tmp: str | None = None
        self._failed = False
        self._owned = False  # a stream opened here (a FIFO, a device), closed here
        if isinstance(target, (str, os.PathLike)):
            where = file_target(target)
            self.path: Path | None = where.path
            if where.how == STREAM:
                self._fh: IO[str] = open_stream(where)
                self._owned = self._fh is not sys.stdout
            else:
                fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                                 dir=self.path.parent)
                self._fh = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
        else:
            self.path = None
            self._fh = target
        if fmt == "json":
            self._guarded(lambda: self._fh.write("["))

    @property
    def temp_path(self) -> str | None:
        """Where rows are being written until close (None for a stream)."""
        return self._tmp

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write rows and flush them to the OS (they survive the process being killed)."""
        def write_all() -> None:
            for row in rows:
                self._write_one(row)

        self._guarded(write_all)

    def _guarded(self, write: Callable[[], Any]) -> None:
        """Run `write` and flush; an OS error (a full disk, /dev/full) becomes one line."""
        try:
            write()
            self._fh.flush()
        except BrokenPipeError:  # the reader of a pipe left (| head): the caller decides
            raise
        except OSError as exc:
            self._failed = True
            raise TargetError(f"{self.path or 'output'}: cannot be written "
                              f"({exc.strerror or exc})") from None

    def _write_one(self, row: dict[str, Any]) -> None:
        if not self._keys:
            self._keys = list(row)
        if self.fmt == "csv" and self.csv_row is not None:
            row = self.csv_row(row)
        if self._csv is None:
            self.fields = list(self.fields or []) + [k for k in row if k not in (self.fields or [])]
        if self.fmt == "json":
            self._fh.write(("\n  " if self.rows == 0 else ",\n  ")
                           + json.dumps(_clean(row), ensure_ascii=False))
        else:
            if self._csv is None:
                self._csv = csv.DictWriter(self._fh, fieldnames=self.fields,
                                           extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerow({k: csv_cell(k, row.get(k)) for k in self.fields})
        self.rows += 1

    def close(self, partial: str | None = None) -> Path | None:
        """Finish the file; with `partial` (why it stopped), end it with a marker row first.
        The temporary file then replaces the target. Returns the target path."""
        if self.closed:
            return self.path
        self.closed = True
        if self._failed:  # nothing more can be written; drop what the temporary file holds
            self._drop()
            return self.path
        def finish() -> None:
            if partial is not None:
                keys = self._keys or ([] if self.csv_row else self.fields) or ["path", "error"]
                self._write_one(partial_row(keys, partial))
            if self.fmt == "json":
                self._fh.write("\n]\n" if self.rows else "]\n")
            elif self._csv is None and self.fields:  # no rows at all: still a header
                csv.DictWriter(self._fh, fieldnames=self.fields).writeheader()

        if self.path is None:  # a stream the caller owns: its errors are the caller's
            finish()
            self._fh.flush()
            return None
        try:
            self._guarded(finish)
        except (TargetError, BrokenPipeError):
            self._drop()  # the target is left as it was (a reader that left gets no more)
            if self._tmp is None:
                return self.path
            raise
        if self._tmp is None:  # streamed in place: nothing to rename
            if self._owned:
                self._fh.close()
            return self.path
        os.fsync(self._fh.fileno())
        self._fh.close()
        publish(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Drop the temporary file without touching the target."""
        if self.path is not None and not self.closed:
            self.closed = True
            self._drop()

    def _drop(self) -> None:
        if self._owned or self._tmp is not None:
            try:
                self._fh.close()
            except OSError:  # unflushed rows a full device refused again
                pass
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close(partial=f"interrupted after {self.rows} rows")
        else:
            self.close(partial=f"stopped by an error after {self.rows} rows ({exc_type.__name__})")


@contextmanager
def replacing(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `target` to write a whole file to (subtitles, a video); renamed
    over the target when the block ends without error, removed otherwise, so a reader never sees
    half a file. The output-target rule (targets.file_target) applies first: a symlink is
    resolved, and an input, a folder, a missing folder or a pipe / device (a file written whole
    cannot be streamed) is refused before anything is written."""
    where = file_target(target)
    if where.how == STREAM:
        raise TargetError(f"{target}: is a pipe or a device; this output is written whole, "
                          "give a file name")
    with temp_beside(where.path) as tmp:
        yield tmp


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write a whole text file (UTF-8): into a pipe or device in place, else through
    `replacing` (the output-target rule decides which)."""
    where = file_target(target)
    if where.how == STREAM:
        stream = open_stream(where)
        try:
            stream.write(safe_text(text))
        finally:
            if stream is not sys.stdout:
                stream.close()
            else:
                stream.flush()
        return Path(target)
    with replacing(target) as tmp:
        tmp.write_text(safe_text(text), encoding="utf-8")
    return Path(target)


def close_all(writers: list, partial: str | None) -> list[Path | None]:
    """Close every writer; a closed stdout (| head) must not keep the files from closing."""
    out = []
    for w in writers:
        try:
            out.append(w.close(partial=partial))
        except OSError:
            if w.path is not None:
                raise
            out.append(None)
    return out


def raise_interrupt(signum: int, frame: Any) -> None:
    """A SIGTERM handler: a scheduler's stop ends a run as Ctrl-C does (finished rows kept)."""
    raise KeyboardInterrupt
