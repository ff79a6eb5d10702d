"""Data sources -> one stream of Samples, shared by training, evaluation and prediction.

Sources: a folder tree (ROOT/{male,female}/ or ROOT/{train,val,test}/{male,female}/), a .tar of
such a tree read in place, a CSV manifest (path,label + extra columns kept as groups), and a
Hugging Face dataset. Labels are normalised here (man/men/woman/women accepted and reported).
"""

from __future__ import annotations

import csv
import glob
import os
import random
from collections import Counter
from pathlib import Path

from ..errors import DataError, ImageError
from ..labels import is_alias, normalize_label
from .files import MAX_MANIFEST_BYTES, byte_cap, check_file, special_kind, too_large
from .images import IMAGE_EXTENSIONS, is_image_path
from .samples import Sample, Skipped, SourceData
from .tars import MAX_INLINE_ARCHIVE_BYTES, TAR_SUFFIXES, tar_entries

__all__ = ["MAX_INLINE_ARCHIVE_BYTES", "TAR_SUFFIXES", "Sample", "Skipped", "SourceData"]

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
PATH_COLUMNS = ("path", "file", "filename", "image", "img", "filepath")
LABEL_COLUMNS = ("label", "gender", "sex", "class")
HIDDEN_REASON = "hidden (a name starting with '.'); skipped unless include_hidden / --include-hidden"
LINKED_FOLDER_REASON = ("a symlink to a folder, not followed (links can loop); name the folder "
                        "itself to read it")
MACOSX_REASON = ("macOS archive metadata (__MACOSX/), not a photo; skipped unless include_hidden / "
                 "--include-hidden")


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


def tree_entry(rel: str, kwargs: dict | Skipped, labelled: bool, include_hidden: bool = False
               ) -> Sample | Skipped | str:
    """What one entry of a folder or tar tree is: a Sample, a Skipped (`ignored` set when left
    out by policy), or (labelled only) the name of the folder that is not a class."""
    parts = Path(rel).parts
    why = None if include_hidden else _hidden(parts)
    if isinstance(kwargs, Skipped):
        if why is not None:
            return Skipped(kwargs.ref, why, ignored=True)
        return Skipped(kwargs.ref, kwargs.reason, ignored=kwargs.reason == LINKED_FOLDER_REASON)
    if why:
        return Skipped(kwargs.get("ref", rel), why, ignored=True)
    if not labelled and is_document_path(rel):
        return Skipped(kwargs.get("ref", rel), DOCUMENT_REASON, ignored=True)
    if labelled and not is_image_path(rel):
        return Skipped(kwargs.get("ref", rel), "not an image file extension")
    # Unlabelled (prediction): every file is tried, so the decoder can say what it really is.
    label, split, unknown = _label_and_split(list(parts[:-1]))
    if labelled and label is None:
        return unknown or "(top level)"
    return Sample(label=label, split=split, **kwargs)


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
        got = tree_entry(rel, kwargs, labelled, include_hidden)
        if isinstance(got, str):
            unknown_dirs[got] += 1
        elif isinstance(got, Skipped):
            (ignored if got.ignored else skipped).append(got)
        else:
            aliases.update(p for p in Path(rel).parts[:-1] if is_alias(p))
            samples.append(got)
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
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    bad_labels: Counter = Counter()
    rows = iter_csv_manifest(csv_path, images, cap=MAX_MANIFEST_BYTES, strict=True)
    label_col = next(rows)
    for item in rows:
        if isinstance(item, Sample):
            samples.append(item)
        else:
            skipped.append(item)
            if item.reason.startswith("unknown label "):
                bad_labels[item.reason[len("unknown label "):]] += 1
    if not samples and not skipped:
        raise DataError(f"{csv_path}: the manifest has no rows")
    data = SourceData(str(csv_path), samples, skipped)
    if bad_labels and not samples:
        raise DataError(f"{csv_path}: no usable labels in column {label_col!r}; "
                        f"found {dict(bad_labels.most_common(10))}")
    return data


def _open_manifest(csv_path: Path, cap: int | None):
    """The manifest as a text stream, through the one door's checks (a regular file, at most
    `cap` bytes when given; names that are not UTF-8 kept as surrogate escapes)."""
    check_file(csv_path, str(csv_path), cap)
    try:
        fd = os.open(csv_path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(str(csv_path), f"cannot read file ({exc.strerror or exc})") from None
    kind = special_kind(os.fstat(fd).st_mode)
    if kind:
        os.close(fd)
        raise ImageError(str(csv_path), kind)
    return open(fd, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115


def iter_csv_manifest(csv_path: Path, images: str | Path | None = None, *,
                      cap: int | None = None, strict: bool = False):
    """A manifest's rows one at a time, read as a stream (memory flat in its length): first
    the name of its label column (a str, or None), then a Sample or Skipped per row. A row
    the CSV parser refuses is one Skipped and the rest is read; with `strict`, a DataError."""
    csv_path = Path(csv_path)
    try:
        fh = _open_manifest(csv_path, cap)
    except ImageError as exc:
        raise DataError(f"{csv_path}: cannot read CSV: {exc.reason}") from None
    with fh:
        reader = csv.DictReader(fh)
        try:
            cols = list(reader.fieldnames or [])
        except csv.Error as exc:
            raise DataError(f"{csv_path}: cannot read CSV ({exc})") from None
        if not cols:
            raise DataError(f"{csv_path}: the manifest has no rows")
        lower = {c.lower().strip(): c for c in cols if c}
        path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
        label_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
        if path_col is None:
            raise DataError(f"{csv_path}: no path column; expected one of {PATH_COLUMNS}, "
                            f"found {cols}")
        yield label_col
        group_cols = [c for c in cols if c not in (path_col, label_col) and c.lower() != "split"]
        split_col = lower.get("split")
        base = Path(images) if images else csv_path.parent
        folder = "" if str(base) == "." else str(base)
        tar_index: dict[str, dict | Skipped] | None = None
        rows = iter(reader)
        i = 1
        while True:
            i += 1
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                if strict:
                    raise DataError(f"{csv_path}: cannot read CSV ({exc})") from None
                yield Skipped(f"{csv_path}:{reader.line_num}", f"cannot read this CSV row ({exc})")
                continue
            rel = (row.get(path_col) or "").strip()
            if i == 2:  # the first row tells whether the paths are inside archives
                tar_index = _manifest_tar_index(csv_path, images, base, rel)
            if not rel:
                yield Skipped(f"{csv_path}:{i}", "empty path")
                continue
            label = None
            if label_col is not None:
                raw = (row.get(label_col) or "").strip()
                label = normalize_label(raw)
                if label is None:
                    yield Skipped(f"{csv_path}:{i} ({rel})", f"unknown label {raw!r}")
                    continue
            groups = {c: row[c] for c in group_cols if row.get(c) not in (None, "")}
            split = SPLIT_ALIASES.get((row.get(split_col) or "").lower()) if split_col else None
            if tar_index is not None:
                kw = tar_index.get(rel) or tar_index.get(rel.lstrip("./"))
                if kw is None:
                    yield Skipped(rel, "listed in the manifest but not in the archive")
                elif isinstance(kw, Skipped):
                    yield kw
                else:
                    yield Sample(label=label, groups=groups, split=split, **kw)
            else:
                p = _join(folder, rel)
                yield Sample(ref=p, path=p, label=label, groups=groups, split=split)


def _join(folder: str, rel: str) -> str:
    """str(Path(folder) / rel), without building Paths for the plain case (a row per call)."""
    if "//" in rel or "./" in rel or rel.endswith(("/", "/.")) or rel == ".":
        return str(Path(folder) / rel)
    return rel if os.path.isabs(rel) else os.path.join(folder, rel) if folder else rel


def _manifest_tar_index(csv_path: Path, images: str | Path | None, base: Path, first: str
                        ) -> dict[str, dict | Skipped] | None:
    """Member name -> Sample kwargs when a manifest's paths are inside archives: `images` is a
    .tar, or (no `images`) the first path is not on disk and archives sit beside the CSV."""
    if base.is_file() and str(base).endswith(TAR_SUFFIXES):
        return dict(tar_entries(base))
    if images is not None:
        return None
    # Paths not on disk: read them from the archives beside the CSV (e.g. celeba-gender's
    # train.tar + val.tar with one attributes.csv); a path in two archives is ambiguous.
    tars = sorted(p for p in csv_path.parent.iterdir() if str(p).endswith(TAR_SUFFIXES))
    if not tars or (base / first).exists():
        return None
    index: dict[str, dict | Skipped] = {}
    for tar in tars:
        for rel, kw in tar_entries(tar):
            if rel in index and isinstance(kw, Skipped):
                continue
            if rel in index and not isinstance(index[rel], Skipped):
                raise DataError(f"{csv_path}: {rel} is in both {index[rel]['path']} "
                                f"and {tar}; pass --images to say which to read")
            index[rel] = kw
    return index


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
    if not p.exists() and os.path.lexists(p):  # a broken or looping link: read_file says which
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
        data = _tree_samples(tar_entries(p), str(p), labelled=labelled,
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
