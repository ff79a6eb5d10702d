"""The records every source yields: a Sample (one image reference), a Skipped input with its
reason, and SourceData (all of one source). Bytes are read through the one door (files.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImageError
from .files import byte_cap, read_file, too_large


@dataclass
class Sample:
    """One image reference, with its label and group attributes when known.

    `ref` is what reports and errors call it. Bytes come from `data` (inline), a byte range of a
    tar (`path` + `offset` + `size`, read with one seek so DataLoader workers need no tar handle),
    or the file at `path`.
    """

    ref: str
    label: str | None = None
    groups: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    path: str | None = None
    offset: int | None = None
    size: int | None = None
    data: bytes | None = None

    def read_bytes(self, cap: int | None = None) -> bytes:
        """The encoded image, read by io.files.read_file: regular files only,
        at most `cap` bytes (default: io.files.byte_cap()). Raises ImageError naming ref."""
        cap = byte_cap() if cap is None else int(cap)
        if self.data is not None:
            if len(self.data) > cap:
                raise ImageError(self.ref, too_large(len(self.data), cap))
            return self.data
        if self.path is None:
            raise ImageError(self.ref, "sample has no path and no data")
        return read_file(self.path, self.ref, cap=cap, offset=self.offset,
                         size=self.size if self.offset is not None else None)

    def read_image(self, max_pixels: int | None = None) -> Any:
        """The decoded upright RGB image (a PIL image) where the source holds pixels rather
        than encoded bytes (a video frame: no encoding and decoding again), else None: read
        `read_bytes`. Raises ImageError naming ref, as read_bytes."""
        return None

    def scaled(self, width: int, height: int) -> Any:
        """After read_image: the image resized to width x height by the source's own, faster
        scaler (a video decoder's), or None (then the caller resizes)."""
        return None

    def release(self) -> None:
        """Drop what read_image kept for `scaled` (called once the image is detected)."""


@dataclass
class Skipped:
    ref: str
    reason: str
    ignored: bool = False  # left out by policy (hidden, __MACOSX, documentation), not broken


@dataclass
class SourceData:
    """Everything a source yielded: samples plus what was skipped and how names were read."""

    name: str
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Left out by policy, not broken: hidden files, __MACOSX, links to folders (listed, counted).
    ignored: list[Skipped] = field(default_factory=list)

    def counts(self, split: str | None = None) -> Counter:
        return Counter(s.label for s in self.samples if split is None or s.split == split)

    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split})

    def summary(self) -> str:
        parts = [f"{self.name}: {len(self.samples)} images"]
        by_split = Counter((s.split or "-", s.label or "unlabelled") for s in self.samples)
        if by_split:
            parts.append(", ".join(f"{sp}/{lb}={n}" for (sp, lb), n in sorted(by_split.items())))
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.ignored:
            parts.append(f"{len(self.ignored)} ignored (hidden, __MACOSX or links to folders)")
        return "; ".join(parts)
