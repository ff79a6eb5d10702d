"""Data sources -> one stream of Samples, shared by training, evaluation and prediction.

Sources: a folder tree (ROOT/{male,female}/ or ROOT/{train,val,test}/{male,female}/), a .tar of
such a tree read in place, a CSV manifest (path,label + extra columns kept as groups), and a
Hugging Face dataset. Labels are normalised here (man/men/woman/women accepted and reported).
"""

from __future__ import annotations

import csv
import glob
import io
import os
import random
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, ImageError
from ..labels import is_alias, normalize_label
from .files import MAX_MANIFEST_BYTES, byte_cap, read_file, too_large
from .images import IMAGE_EXTENSIONS, is_image_path

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
PATH_COLUMNS = ("path", "file", "filename", "image", "img", "filepath")
LABEL_COLUMNS = ("label", "gender", "sex", "class")
# Bytes of a compressed archive's members kept in memory at most (a .tar.gz has no byte ranges
# to read later); past it the archive is refused: extract it, or use a plain .tar.
MAX_INLINE_ARCHIVE_BYTES = 2 * 1024**3
HIDDEN_REASON = "hidden (a name starting with '.'); skipped unless include_hidden / --include-hidden"
LINKED_FOLDER_REASON = ("a symlink to a folder, not followed (links can loop); name the folder "
                        "itself to read it")
MACOSX_REASON = ("macOS archive metadata (__MACOSX/), not a photo; skipped unless include_hidden / "
                 "--include-hidden")


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
        """The encoded image through the one door (io.files.read_file): regular files only,
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


@dataclass
class Skipped:
    ref: str
    reason: str


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


def _label_and_split(parts: list[str]) -> tuple[str | None, str | None, str | None]:
    """From a relative path's directory parts: (label, split, unknown class folder name)."""
    label = split = None
    for part in parts:
        low = part.lower()
        if low in SPLIT_ALIASES:
            split = SPLIT_ALIASES[low]
        elif normalize_label(part) is not None and len(low) > 1:  # 'm'/'f' too easy to misread as dirs
            label = normalize_label(part)
    unknown = parts[-1] if parts and label is None else None
    return label, split, unknown


def _hidden(parts: tuple[str, ...]) -> str | None:
    """Why a path is left out by default (hidden or macOS metadata), or None."""
    if "__MACOSX" in parts:
        return MACOSX_REASON
    if any(p.startswith(".") and p not in (".", "..") for p in parts):
        return HIDDEN_REASON
    return None


# Documentation that sits beside photos in folders and archives (a README, a licence, credits):
# left out when predicting on a folder, listed as ignored, never counted as a failed image. Any
# other file is tried, so a data file or a mislabelled photo still gets its own reason.
DOCUMENT_EXTENSIONS = {".md", ".markdown", ".rst"}
DOCUMENT_NAMES = {"readme", "license", "licence", "copying", "notice", "authors", "attribution",
                  "credits"}
DOCUMENT_REASON = "documentation, not an image"


def is_document_path(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix.lower() in DOCUMENT_EXTENSIONS or p.stem.lower() in DOCUMENT_NAMES


def _tree_samples(entries, root_name: str, labelled: bool, include_hidden: bool = False
                  ) -> SourceData:
    """entries: iterable of (relative path, Sample factory kwargs), or (relative path,
    Skipped) for what the walk itself refused. Shared by folder and tar trees."""
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    ignored: list[Skipped] = []
    unknown_dirs: Counter = Counter()
    aliases: set[str] = set()
    for rel, kwargs in entries:
        parts = Path(rel).parts
        why = None if include_hidden else _hidden(parts)
        if isinstance(kwargs, Skipped):
            (ignored if kwargs.reason == LINKED_FOLDER_REASON else skipped).append(
                kwargs if why is None else Skipped(kwargs.ref, why))
            continue
        if why:
            ignored.append(Skipped(kwargs.get("ref", rel), why))
            continue
        if not labelled and is_document_path(rel):
            ignored.append(Skipped(kwargs.get("ref", rel), DOCUMENT_REASON))
            continue
        if labelled and not is_image_path(rel):
            skipped.append(Skipped(kwargs.get("ref", rel), "not an image file extension"))
            continue
        # Unlabelled (prediction): every file is tried, so the decoder can say what it really is.
        label, split, unknown = _label_and_split(list(parts[:-1]))
        if labelled and label is None:
            unknown_dirs[unknown or "(top level)"] += 1
            continue
        for p in parts[:-1]:
            if is_alias(p):
                aliases.add(p)
        samples.append(Sample(label=label, split=split, **kwargs))
    data = SourceData(root_name, samples, skipped, ignored=ignored)
    if aliases:
        data.notes.append(f"class folders read as aliases: {', '.join(sorted(aliases))}")
    if unknown_dirs:
        found = ", ".join(f"{d!r} ({n} images)" for d, n in unknown_dirs.most_common(10))
        if not samples:
            raise DataError(
                f"{root_name}: no class folders found. Expected ROOT/male/ and ROOT/female/ "
                f"(or man/men/woman/women, optionally under train/val/test/); found {found}"
            )
        raise DataError(
            f"{root_name}: images in folders that are not a class: {found}. "
            "Rename them to male/female, or move them out of the source."
        )
    return data


def _folder_entries(root: Path):
    """Every file under root, in sorted order (hidden ones too: _tree_samples lists them).
    Links to folders are not followed (they can loop); they are listed instead."""
    def refuse(exc: OSError) -> None:
        raise DataError(f"{exc.filename}: cannot list folder ({exc.strerror or exc})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=refuse):
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if full.is_symlink():
                yield str(full.relative_to(root)), Skipped(str(full), LINKED_FOLDER_REASON)
        dirnames.sort()
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            yield str(full.relative_to(root)), {"ref": str(full), "path": str(full)}


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issym() or m.islnk():
        return f"a link inside the archive (to {m.linkname!r}), not followed"
    if m.isfifo() or m.ischr() or m.isblk():
        return "a device or named pipe inside the archive, not a file"
    return "not a regular file inside the archive"


def _tar_entries(tar_path: Path, cap: int | None = None):
    """(member name, Sample kwargs) per file member; (name, Skipped) for members that are not
    files or are over the byte cap, so they are listed rather than lost."""
    cap = byte_cap() if cap is None else cap
    try:
        with tarfile.open(tar_path) as tf:
            compressed = not str(tar_path).endswith(".tar")
            inline = 0
            for m in tf:
                ref = f"{tar_path}::{m.name}"
                if m.isdir():
                    continue
                if not m.isfile():
                    yield m.name, Skipped(ref, _tar_kind(m))
                    continue
                if m.size > cap:  # the header says so: not a byte of it is read
                    yield m.name, Skipped(ref, too_large(m.size, cap))
                    continue
                if compressed:  # no byte ranges inside a compressed stream: keep the bytes
                    inline += m.size
                    if inline > MAX_INLINE_ARCHIVE_BYTES:
                        raise DataError(f"{tar_path}: a compressed archive of more than "
                                        f"{MAX_INLINE_ARCHIVE_BYTES / 1024**3:.0f} GB of images "
                                        "is not read into memory; use an uncompressed .tar")
                    fh = tf.extractfile(m)
                    yield m.name, {"ref": ref, "data": fh.read(m.size) if fh else b""}
                else:
                    yield m.name, {"ref": ref, "path": str(tar_path), "offset": m.offset_data,
                                   "size": m.size}
    except (tarfile.TarError, EOFError, OSError) as exc:  # truncated or damaged archives
        raise DataError(f"{tar_path}: cannot read tar archive ({exc})") from None


def _check_folder_classes(root: Path, data: SourceData) -> None:
    """A class folder that exists but holds no images is an error, not a silent skip."""
    for dirpath, dirnames, filenames in os.walk(root):
        name = Path(dirpath).name
        if normalize_label(name) and len(name) > 1 and not any(is_image_path(f) for f in filenames) \
                and not dirnames:
            raise DataError(f"{root}: class folder {dirpath} holds no images")


def read_csv_manifest(csv_path: Path, images: str | Path | None = None) -> SourceData:
    """CSV with a path column and a label column; every other column is kept as a group attribute.

    Paths are resolved against `images` (a folder or a .tar), else the CSV's folder; when they are
    not on disk and one .tar sits beside the CSV, they are read from inside it.
    """
    try:
        text = read_file(csv_path, str(csv_path), cap=MAX_MANIFEST_BYTES).decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except ImageError as exc:
        raise DataError(f"{csv_path}: cannot read CSV: {exc.reason}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read CSV ({exc})") from None
    if not rows:
        raise DataError(f"{csv_path}: the manifest has no rows")
    cols = list(rows[0].keys())
    lower = {c.lower().strip(): c for c in cols if c}
    path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    label_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    if path_col is None:
        raise DataError(f"{csv_path}: no path column; expected one of {PATH_COLUMNS}, found {cols}")
    group_cols = [c for c in cols if c not in (path_col, label_col) and c.lower() != "split"]
    split_col = lower.get("split")

    base = Path(images) if images else csv_path.parent
    tar_index: dict[str, dict] | None = None
    if base.is_file() and str(base).endswith(TAR_SUFFIXES):
        tar_index = dict(_tar_entries(base))
    elif images is None:
        # Paths not on disk: read them from the archives beside the CSV (e.g. celeba-gender's
        # train.tar + val.tar with one attributes.csv); a path in two archives is ambiguous.
        tars = sorted(p for p in csv_path.parent.iterdir() if str(p).endswith(TAR_SUFFIXES))
        first = rows[0][path_col]
        if tars and not (base / first).exists():
            tar_index = {}
            for tar in tars:
                for rel, kw in _tar_entries(tar):
                    if rel in tar_index and isinstance(kw, Skipped):
                        continue
                    if rel in tar_index and not isinstance(tar_index[rel], Skipped):
                        raise DataError(f"{csv_path}: {rel} is in both {tar_index[rel]['path']} "
                                        f"and {tar}; pass --images to say which to read")
                    tar_index[rel] = kw

    samples, skipped, bad_labels = [], [], Counter()
    for i, row in enumerate(rows, start=2):
        rel = (row.get(path_col) or "").strip()
        if not rel:
            skipped.append(Skipped(f"{csv_path}:{i}", "empty path"))
            continue
        label = None
        if label_col is not None:
            raw = (row.get(label_col) or "").strip()
            label = normalize_label(raw)
            if label is None:
                bad_labels[raw] += 1
                skipped.append(Skipped(f"{csv_path}:{i} ({rel})", f"unknown label {raw!r}"))
                continue
        groups = {c: row[c] for c in group_cols if row.get(c) not in (None, "")}
        split = SPLIT_ALIASES.get((row.get(split_col) or "").lower()) if split_col else None
        if tar_index is not None:
            kw = tar_index.get(rel) or tar_index.get(rel.lstrip("./"))
            if kw is None:
                skipped.append(Skipped(rel, "listed in the manifest but not in the archive"))
                continue
            if isinstance(kw, Skipped):
                skipped.append(kw)
                continue
            samples.append(Sample(label=label, groups=groups, split=split, **kw))
        else:
            p = Path(rel) if os.path.isabs(rel) else base / rel
            samples.append(Sample(ref=str(p), path=str(p), label=label, groups=groups, split=split))
    data = SourceData(str(csv_path), samples, skipped)
    if bad_labels and not samples:
        raise DataError(f"{csv_path}: no usable labels in column {label_col!r}; "
                        f"found {dict(bad_labels.most_common(10))}")
    return data


def read_hf_dataset(spec: str, split: str | None = None) -> SourceData:
    """A Hugging Face dataset: `hf:NAME` from the Hub, or a local save_to_disk / imagefolder /
    parquet directory. Needs an image column and a label column (ClassLabel names or strings)."""
    from ..errors import require

    datasets = require("datasets", "hf")
    target = spec[3:] if spec.startswith("hf:") else spec
    p = Path(target)
    try:
        if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists()):
            ds = datasets.load_from_disk(str(p))
        elif p.is_dir():
            parquet = sorted(p.rglob("*.parquet"))
            ds = (datasets.load_dataset("parquet", data_dir=str(p)) if parquet
                  else datasets.load_dataset("imagefolder", data_dir=str(p)))
        else:
            ds = datasets.load_dataset(target)
    except Exception as exc:
        raise DataError(f"{spec}: cannot load Hugging Face dataset ({exc})") from None
    dsets = ds if isinstance(ds, datasets.DatasetDict) else {split or "train": ds}
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    cap = byte_cap()
    for split_name, d in dsets.items():
        if split and split_name != split:
            continue
        feats = d.features
        img_col = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
        lab_col = next((c for c in feats if c.lower() in LABEL_COLUMNS), None)
        if img_col is None:
            raise DataError(f"{spec}: no image column (features: {list(feats)})")
        d = d.cast_column(img_col, datasets.Image(decode=False))
        names = feats[lab_col].names if lab_col and isinstance(
            feats[lab_col], datasets.ClassLabel) else None
        group_cols = [c for c in feats if c not in (img_col, lab_col)]
        for i, row in enumerate(d):
            img = row[img_col] or {}
            ref = img.get("path") or f"{spec}[{split_name}][{i}]"
            label = None
            if lab_col is not None:
                raw = row[lab_col]
                raw = names[raw] if names is not None and isinstance(raw, int) else raw
                label = normalize_label(str(raw))
                if label is None:
                    skipped.append(Skipped(ref, f"unknown label {raw!r}"))
                    continue
            groups = {c: row[c] for c in group_cols if isinstance(row[c], (str, int, float))}
            sp = SPLIT_ALIASES.get(split_name.lower(), split_name)
            if img.get("bytes") and len(img["bytes"]) > cap:
                skipped.append(Skipped(ref, too_large(len(img["bytes"]), cap)))
            elif img.get("bytes"):
                samples.append(Sample(ref=ref, label=label, groups=groups, split=sp,
                                      data=img["bytes"]))
            else:
                samples.append(Sample(ref=ref, label=label, groups=groups, split=sp,
                                      path=img.get("path")))
    return SourceData(spec, samples, skipped)


# Readers of further layouts, tried before the built-in ones: each takes (spec, labelled) and
# returns SourceData, or None when the spec is not its kind. io/shards.py registers the
# WebDataset tar-shard reader (io/__init__.py imports it), so this module need not import it.
READERS: list = []


def read_source(spec: str | Path | list | SourceData, *, labelled: bool = True,
                images: str | Path | None = None, include_hidden: bool = False) -> SourceData:
    """Open any supported source. `labelled=False` accepts images without class folders
    (prediction); a list of sources or a glob pattern is read as one. Hidden files and
    __MACOSX/ inside folders and archives are listed in `ignored` unless `include_hidden`."""
    if isinstance(spec, SourceData):
        return spec
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(x, Sample) for x in spec):
        return SourceData(f"{len(spec)} samples", list(spec))
    if isinstance(spec, (list, tuple)):
        parts = [read_source(s, labelled=labelled, images=images, include_hidden=include_hidden)
                 for s in spec]
        merged = SourceData(", ".join(p.name for p in parts), [], [])
        for p in parts:
            merged.samples += p.samples
            merged.skipped += p.skipped
            merged.notes += p.notes
            merged.ignored += p.ignored
        return merged
    s = str(spec)
    if s.startswith("hf:"):
        return read_hf_dataset(s)
    for reader in READERS:
        found = reader(s, labelled)
        if found is not None:
            return found
    p = Path(s)
    if not p.exists() and os.path.lexists(p):  # a broken or looping link: the door says which
        return SourceData(str(p), [Sample(ref=str(p), path=str(p))])
    if not p.exists():
        if any(ch in s for ch in "*?["):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise DataError(f"{s}: the pattern matches no files")
            return read_source(matches, labelled=labelled, images=images,
                               include_hidden=include_hidden)
        raise DataError(f"{s}: no such file or folder")
    if p.is_dir():
        if (p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists() \
                or any(p.glob("*.parquet")) or any(p.glob("*/*.parquet")):
            return read_hf_dataset(s)
        entries = list(_folder_entries(p))
        if not entries:
            raise DataError(f"{p}: the folder is empty")
        data = _tree_samples(entries, str(p), labelled=labelled, include_hidden=include_hidden)
        if labelled:
            _check_folder_classes(p, data)
    elif s.lower().endswith(".csv"):
        data = read_csv_manifest(p, images)
    elif s.lower().endswith(TAR_SUFFIXES):
        data = _tree_samples(_tar_entries(p), str(p), labelled=labelled,
                             include_hidden=include_hidden)
    else:
        # A single file: an image to predict on (its decoding errors surface later, per file).
        data = SourceData(str(p), [Sample(ref=str(p), path=str(p))])
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            data.notes.append(f"{p}: unusual extension; trying to decode it anyway")
    if not data.samples and (labelled or not (data.skipped or data.ignored)):
        gone = data.skipped or data.ignored
        detail = f" ({len(gone)} files skipped: {gone[0].reason}, ...)" if gone else ""
        raise DataError(f"{s}: no images found{detail}")
    return data


def require_both_classes(samples: list[Sample], what: str) -> Counter:
    counts = Counter(s.label for s in samples)
    missing = [c for c in ("female", "male") if counts.get(c, 0) == 0]
    if missing:
        found = ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=str)) or "nothing"
        raise DataError(f"{what}: no '{missing[0]}' images; training needs both classes "
                        f"(found {found})")
    return counts


IDENTITY_COLUMN = "identity"  # manifest column naming the person (kinfacew, fiw): never split


def stratified_split(samples: list[Sample], fraction: float, seed: int
                     ) -> tuple[list[Sample], list[Sample]]:
    """Seeded split that keeps the class ratio in both parts. Faces whose manifest names their
    person (an ``identity`` column) keep that person on one side: validation drawn this way is
    identity-disjoint from training."""
    if any(IDENTITY_COLUMN in s.groups for s in samples):
        return _identity_split(samples, fraction, seed)
    return _face_split(samples, fraction, seed)


def _face_split(samples: list[Sample], fraction: float, seed: int
                ) -> tuple[list[Sample], list[Sample]]:
    rng = random.Random(seed)
    by_label: dict[str | None, list[Sample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    keep, held = [], []
    for label in sorted(by_label, key=str):
        group = by_label[label][:]
        rng.shuffle(group)
        n = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        held += group[:n]
        keep += group[n:]
    return keep, held


def _identity_split(samples: list[Sample], fraction: float, seed: int
                    ) -> tuple[list[Sample], list[Sample]]:
    """Whole persons, drawn per class (a person's majority label) until the class's share of
    faces is held out; a face without an identity is a person of its own."""
    rng = random.Random(seed)
    persons: dict[str, list[Sample]] = {}
    for i, s in enumerate(samples):
        persons.setdefault(str(s.groups.get(IDENTITY_COLUMN, f"\0{i}")), []).append(s)
    by_label: dict[str | None, list[list[Sample]]] = {}
    for faces in persons.values():
        label = Counter(s.label for s in faces).most_common(1)[0][0]
        by_label.setdefault(label, []).append(faces)
    keep, held = [], []
    for label in sorted(by_label, key=str):
        group = by_label[label][:]
        rng.shuffle(group)
        target = round(sum(len(f) for f in group) * fraction)
        taken = 0
        for faces in group:
            if taken < target and len(group) > 1:
                held += faces
                taken += len(faces)
            else:
                keep += faces
    return keep, held


def stratified_limit(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    """At most `limit` samples, seeded, with the class ratio kept."""
    if not limit or limit >= len(samples):
        return samples
    _, chosen = _face_split(samples, limit / len(samples), seed)
    return chosen
