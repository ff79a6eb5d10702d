"""Where output goes, decided before any work: no user file is replaced by mistake.

`file_target` classifies a path that a file of results will be written to:

- missing, or a regular file: written through a temporary file beside it, renamed over it at
  the end (a reader never sees half a file; `writers.RowWriter` does this);
- a named pipe (FIFO), a character device (/dev/null, a terminal) or the process's own
  stdout/stderr (/dev/stdout, /proc/self/fd/1): streamed into directly, never replaced;
- a symlink: resolved, and the same rules applied to what it points at;
- a directory, a block device, a socket, a file in a folder that does not exist, or the very
  file of an input (same device and inode): refused with a `TargetError` naming it.

`folder_target` does the same for a folder that files are written into (--annotate,
--save-crops, report and model folders): a missing folder is created when written; a file, or
a folder that is also an input, is refused. `check_targets` applies both to a parsed command
line, so the CLI refuses a bad target (exit 2) before a model is loaded.
"""

from __future__ import annotations

import glob
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError

STDOUT_REF = "-"
REPLACE, STREAM = "replace", "stream"


class TargetError(FaceGenderError):
    """An output target that must not be written (the CLI exits 2 with this one line)."""


@dataclass(frozen=True)
class Target:
    """Where to write: `path` (symlinks resolved for `replace`, as given for `stream`) and
    how: REPLACE (temporary file + rename) or STREAM (opened and written in place)."""

    path: Path
    how: str


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _input_paths(inputs: Iterable[Any]) -> list[str]:
    """The paths on disk that the inputs name (a glob pattern expanded, at most 10,000)."""
    out: list[str] = []
    for spec in inputs:
        if not isinstance(spec, (str, os.PathLike)):
            continue
        s = os.fspath(spec)
        if s == STDOUT_REF or "://" in s or s.startswith("hf:"):
            continue
        s = s.split("@", 1)[0] if not os.path.exists(s) and "@" in s else s  # PATH@WEIGHT
        paths = [s]
        if not os.path.lexists(s) and any(ch in s for ch in "*?["):
            paths = list(islice(glob.iglob(s, recursive=True), 10_000))
        out += paths
    return out


def input_identities(inputs: Iterable[Any]) -> set[tuple[int, int]]:
    """(device, inode) of every file or folder on disk that an input names."""
    ids: set[tuple[int, int]] = set()
    for p in _input_paths(inputs):
        try:
            ids.add(_identity(os.stat(p)))
        except OSError:
            continue
    return ids


def _inside_input_folder(path: str, inputs: Iterable[Any]) -> str | None:
    """The input folder that an existing file at `path` lies in (so it would be read as an
    input too), or None."""
    real = os.path.realpath(path)
    for p in _input_paths(inputs):
        if os.path.isdir(p) and real.startswith(os.path.join(os.path.realpath(p), "")):
            return p
    return None


def _is_std_stream(st: os.stat_result) -> bool:
    """Is this the file our own stdout or stderr is (a shell's `> file`, /dev/stdout)?"""
    for fd in (1, 2):
        try:
            if _identity(os.fstat(fd)) == _identity(st):
                return True
        except OSError:
            continue
    return False


def _through_proc(path: str) -> bool:
    """Does the chain of links from `path` pass through /proc or /dev/fd (a descriptor's
    alias, such as /dev/stdout)? Renaming over such a name would never reach the reader."""
    seen = 0
    cur = os.path.abspath(path)
    while seen < 40:
        if cur.startswith(("/proc/", "/dev/fd/")):
            return True
        if not os.path.islink(cur):
            return False
        cur = os.path.join(os.path.dirname(cur), os.readlink(cur))
        seen += 1
    return False


def file_target(path: str | os.PathLike, what: str = "output",
                inputs: Iterable[Any] = ()) -> Target:
    """How a results file at `path` is written (see the module doc); TargetError if never."""
    given = os.fspath(path)
    shown = f"{what} {given}"
    try:
        st = os.stat(given)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # a loop of links, permissions, a name too long
        raise TargetError(f"{shown}: cannot be written ({exc.strerror or exc})") from None
    if st is None:
        resolved = Path(os.path.realpath(given))  # a dangling link: its target is created
        folder = resolved.parent
        if not folder.is_dir():
            raise TargetError(f"{shown}: the folder {folder} does not exist; create it first")
        return Target(resolved, REPLACE)
    if _identity(st) in input_identities(inputs):
        raise TargetError(f"{shown}: is also an input; writing there would destroy it (choose "
                          "another name)")
    if stat.S_ISDIR(st.st_mode):
        raise TargetError(f"{shown}: is a folder; give a file name")
    if stat.S_ISREG(st.st_mode) and (folder := _inside_input_folder(given, inputs)):
        raise TargetError(f"{shown}: is inside the input folder {folder}, so it is also an "
                          "input; writing there would replace it (choose another name)")
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or _is_std_stream(st) \
            or _through_proc(given):
        return Target(Path(given), STREAM)
    if not stat.S_ISREG(st.st_mode):
        raise TargetError(f"{shown}: is a block device or socket, not a file; refused")
    return Target(Path(os.path.realpath(given)), REPLACE)


def as_inputs(data: Any) -> list[Any]:
    """The inputs a call named, as a list (one path or several), for the checks above."""
    return list(data) if isinstance(data, (list, tuple)) else [data] if data else []


def folder_target(path: str | os.PathLike, what: str = "output folder",
                  inputs: Iterable[Any] = ()) -> Path:
    """A folder that output files go into: returned as given if it is a folder or does not
    exist yet (it is created when written); TargetError for a file, or an input folder."""
    given = os.fspath(path)
    shown = f"{what} {given}"
    try:
        st = os.stat(given)
    except FileNotFoundError:
        if os.path.lexists(given):
            raise TargetError(f"{shown}: is a broken link; refused") from None
        return Path(given)
    except OSError as exc:
        raise TargetError(f"{shown}: cannot be written ({exc.strerror or exc})") from None
    if _identity(st) in input_identities(inputs):
        raise TargetError(f"{shown}: is also an input; output files would be written among "
                          "(or over) the inputs (choose another folder)")
    if not stat.S_ISDIR(st.st_mode):
        raise TargetError(f"{shown}: is a file, not a folder; give a folder name")
    return Path(given)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file over `path`, with the mode open() would have given it
    (mkstemp makes files 0600): the one last step of every temp-file-then-rename output."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextmanager
def temp_beside(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, published over it when the block ends without error and
    removed otherwise, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def replace_file(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Write one output file inside an output folder: `write(temp_path)` fills a temporary file
    beside `path`, which is then renamed over it, so a link or a FIFO planted at that name is
    replaced, never followed or blocked on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_beside(path) as tmp:
        write(str(tmp))
    return path


# The command line's output options (argparse dest -> file or folder) and its input options.
CLI_FILES = {"csv_out": "--csv", "json_out": "--json", "tracks_csv": "--tracks-csv",
             "summary": "--summary", "summary_csv": "--summary-csv", "timeline": "--timeline"}
CLI_FOLDERS = {"annotate": "--annotate", "save_crops": "--save-crops", "out": "--out",
               "report": "--report"}
CLI_INPUTS = ("inputs", "data", "images", "val", "unlabelled", "calib_data", "parity_data")


def check_targets(args: Any) -> None:
    """Refuse (TargetError) every output option of a parsed command line that must not be
    written: run before any work, so a bad target costs nothing."""
    inputs: list[Any] = []
    for name in CLI_INPUTS:
        v = getattr(args, name, None)
        inputs += v if isinstance(v, (list, tuple)) else [v] if v else []
    files: dict[Path, str] = {}
    for name, flag in CLI_FILES.items():
        v = getattr(args, name, None)
        if v and v != STDOUT_REF:
            where = file_target(v, flag, inputs).path
            if where in files and not str(where).startswith(("/dev/", "/proc/")):
                raise TargetError(f"{flag} {v}: is also the {files[where]} file; give each "
                                  "its own name")
            files[where] = flag
    for name, flag in CLI_FOLDERS.items():
        v = getattr(args, name, None)
        if isinstance(v, (str, os.PathLike)) and v:
            folder_target(v, flag, inputs)


def open_stream(target: Target) -> Any:
    """A text stream that writes into a STREAM target in place (stdout itself when it is)."""
    try:
        st = os.stat(target.path)
        if _identity(os.fstat(sys.stdout.fileno())) == _identity(st):
            return sys.stdout
    except (OSError, ValueError, AttributeError):
        pass
    try:  # a regular file here is our stderr's: add to it, never truncate it
        mode = "a" if stat.S_ISREG(os.stat(target.path).st_mode) else "w"
        return open(target.path, mode, encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise TargetError(f"{target.path}: cannot be written ({exc.strerror or exc})") from None
