"""Tar archives read member by member, in place: a plain .tar gives byte ranges (read later with
one seek), a compressed one its members' bytes. A damaged or cut archive loses only what is
damaged: every intact member before the damage (and, in a plain .tar, after it) is yielded."""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path

from ..errors import DataError
from .files import byte_cap, too_large
from .samples import Skipped

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# Bytes of a compressed archive's members kept in memory at most (a .tar.gz has no byte ranges
# to read later); past it the archive is refused: extract it, or use a plain .tar.
MAX_INLINE_ARCHIVE_BYTES = 2 * 1024**3

def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issym() or m.islnk():
        return f"a link inside the archive (to {m.linkname!r}), not followed"
    if m.isfifo() or m.ischr() or m.isblk():
        return "a device or named pipe inside the archive, not a file"
    return "not a regular file inside the archive"


def tar_entries(tar_path: Path, cap: int | None = None,
                 inline_cap: int | None = MAX_INLINE_ARCHIVE_BYTES):
    """(member name, Sample kwargs) per file member, read member by member; (name, Skipped) for
    members that are not files or are over the byte cap, so they are listed rather than lost.
    A damaged or cut archive yields every intact member and one Skipped for the damage (a
    member cut short keeps its own row: reading it says the file ends early); a plain .tar is
    read on past a damaged header to the next intact one. `inline_cap`: most bytes of a
    compressed archive's members kept in memory in all (None: no limit, for a stream)."""
    cap = byte_cap() if cap is None else cap
    compressed = not str(tar_path).endswith(".tar")
    try:
        end = os.path.getsize(tar_path)
        # A compressed archive is read as one stream (r|*): everything before a cut decompresses,
        # where the random-access reader's read-ahead would lose the last few KB before it.
        tf = tarfile.open(tar_path, "r|*" if compressed else "r", ignore_zeros=True)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{tar_path}: cannot read tar archive ({exc})") from None
    last, expect, inline = None, 0, 0
    with tf:
        while True:
            try:
                m = tf.next()
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                if last is None or last.offset_data + last.size <= end or compressed:
                    yield _damage(tar_path, last, f"{exc}")
                return  # (a plain member cut short says so itself when read)
            if m is None:
                break
            tf.members.clear()  # tarfile keeps every member it read; memory stays flat
            if not compressed and expect is not None and m.offset > expect \
                    and not _all_zero(tar_path, expect, m.offset):
                yield _damage(tar_path, last, f"damaged bytes {expect:,} to {m.offset:,} "
                                               "skipped; the members after them were read")
            expect = None if m.issparse() else m.offset_data + -(-m.size // 512) * 512
            last = m
            ref = f"{tar_path}::{m.name}"
            if m.isdir():
                continue
            if not m.isfile():
                yield m.name, Skipped(ref, _tar_kind(m))
                continue
            if m.size > cap:  # the header says so: not a byte of it is read
                yield m.name, Skipped(ref, too_large(m.size, cap))
                continue
            if not compressed:
                yield m.name, {"ref": ref, "path": str(tar_path), "offset": m.offset_data,
                               "size": m.size}
                continue
            inline += m.size  # no byte ranges inside a compressed stream: keep the bytes
            if inline_cap is not None and inline > inline_cap:
                raise DataError(f"{tar_path}: a compressed archive of more than "
                                f"{inline_cap / 1024**3:.0f} GB of images is not read into "
                                "memory; use an uncompressed .tar")
            try:
                fh = tf.extractfile(m)
                data = fh.read(m.size) if fh else b""
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                yield m.name, Skipped(ref, f"cannot read this member: the archive is damaged "
                                           f"or cut inside it ({exc})")
                return
            yield m.name, {"ref": ref, "data": data}
        if compressed:
            return
        if tf.offset < end and not _all_zero(tar_path, tf.offset, end):
            yield _damage(tar_path, last, f"the archive ends in a cut or damaged header at "
                                          f"byte {tf.offset:,}")
        elif last is not None and expect is not None and end - expect < 1024:
            # A whole archive ends in two zero blocks: without them it was cut at a member's
            # edge, and whatever came after is gone.
            yield _damage(tar_path, last, "it ends without the end-of-archive marker")


def _damage(tar_path: Path, last: tarfile.TarInfo | None, why: str) -> tuple[str, Skipped]:
    """The one row that stands for damage in an archive, placed after its last good member."""
    where = f"after {last.name}" if last is not None else "at its start"
    return f"<damage {where}>", Skipped(f"{tar_path}::<{where}>",
                                        f"the archive is damaged or cut {where} ({why})")


def _all_zero(path: Path, start: int, stop: int, most: int = 64 * 2**20) -> bool:
    """Are bytes start..stop of a file all zero (tar padding), looking at `most` at most?"""
    if stop - start > most:
        return False
    with open(path, "rb") as fh:
        fh.seek(start)
        return not fh.read(stop - start).strip(b"\0")
