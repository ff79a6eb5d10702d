"""Tar shards in WebDataset layout: a source for train, evaluate and predict, and a writer.

A shard is a plain tar whose members are grouped by key (the member name up to the first dot
of its basename, as WebDataset reads it): ``000042.jpg`` holds the image bytes and
``000042.json`` its label, split, groups and where it came from (``{"label": "female",
"split": "train", "groups": {"age_group": "60-69"}, "ref": "..."}``). A sample's members are
consecutive, so a shard is read in one pass in archive order, without listing its members
first; an uncompressed shard gives byte ranges (a worker seeks to the image), a compressed one
keeps the bytes. Shard sets are named by a list, a glob, a brace range
(``shards/{000000..000099}.tar``) or a folder of .tar files.

Labels are names (``male``, ``woman``, ...): a bare numeric class code (WebDataset's ``.cls``)
is refused, because its meaning differs between datasets.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, ImageError, require
from ..labels import normalize_label
from .files import byte_cap
from .images import IMAGE_EXTENSIONS, decode_bytes
from .progress import progress_bar
from .sources import READERS, Sample, Skipped, SourceData
from .targets import folder_target

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
LABEL_EXTENSIONS = ("json", "cls", "txt", "label", "gender")  # where a sample's label may be
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_PEEK = 16  # members looked at to tell a shard from a tar of class folders
INDEX_NAME = "shards.json"  # written beside the shards: files, counts, source


def split_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name the way WebDataset splits it: at the first dot of the
    basename, so ``a/b.seg.png`` is key ``a/b``, extension ``seg.png``."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower() if dot else ""


def expand_braces(spec: str) -> list[str]:
    """``shards/{000000..000099}.tar`` -> the 100 names, zero-padded as written; nested and
    several ranges expand left to right. A spec without a range comes back alone."""
    m = _BRACE.search(spec)
    if not m:
        return [spec]
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo:
        raise DataError(f"{spec}: the range {m.group(0)} runs backwards")
    width = len(m.group(1)) if m.group(1).startswith("0") else 0
    out = []
    for i in range(lo, hi + 1):
        out += expand_braces(spec[:m.start()] + str(i).zfill(width) + spec[m.end():])
    return out


def is_shard_tar(path: str | Path) -> bool:
    """A tar in WebDataset layout: among its first members an image shares its key with a
    label/metadata member (a tar of class folders has none)."""
    if not str(path).lower().endswith(SHARD_SUFFIXES):
        return False
    keys: dict[str, set[str]] = {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for n, m in enumerate(tf):
                if n >= _PEEK:
                    break
                if m.isfile():
                    key, ext = split_key(m.name)
                    keys.setdefault(key, set()).add(ext)
    except (OSError, tarfile.TarError):
        return False  # read_source's tar branch names the real problem
    return any(exts & set(LABEL_EXTENSIONS) and any(f".{e}" in IMAGE_EXTENSIONS for e in exts)
               for exts in keys.values())


def shard_files_in(folder: Path) -> list[Path]:
    """The shards of a folder that holds shards (every file a shard tar, bar the index)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    tars = [p for p in files if p.name.lower().endswith(SHARD_SUFFIXES)]
    others = [p for p in files if p not in tars and p.name != INDEX_NAME]
    if not tars or others or not is_shard_tar(tars[0]):
        return []
    return tars


def _label_from(meta: dict[str, bytes], ref: str) -> tuple[str | None, dict[str, Any],
                                                             str | None, str | None]:
    """(label, groups, split, why the label is unusable) from a sample's metadata members."""
    groups: dict[str, Any] = {}
    split = raw = None
    if "json" in meta:
        try:
            doc = json.loads(meta["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, {}, None, f"{ref}.json is not valid JSON ({exc})"
        if not isinstance(doc, dict):
            return None, {}, None, f"{ref}.json is not an object"
        raw = doc.get("label", doc.get("gender"))
        split = doc.get("split")
        groups = {k: v for k, v in (doc.get("groups") or {}).items()
                  if isinstance(v, (str, int, float))}
    for ext in ("label", "gender", "txt", "cls"):
        if raw is None and ext in meta:
            raw = meta[ext].decode("utf-8", "replace").strip()
    if raw is None:
        return None, groups, split, None
    label = normalize_label(str(raw))
    if label is None:
        why = ("a numeric class code, whose meaning differs between datasets; write the label "
               "name (male/female) in KEY.json") if str(raw).lstrip("-").isdigit() \
            else f"unknown label {raw!r}"
        return None, groups, split, why
    return label, groups, split, None


def iter_shard(path: str | Path, labelled: bool = True) -> Iterator[Sample | Skipped]:
    """Samples of one shard in archive order, one pass, nothing listed first. A sample without
    an image, or (labelled) without a usable label, comes out as Skipped with the reason."""
    path = str(path)
    compressed = not path.lower().endswith(".tar")
    key: str | None = None
    image: tuple[str, dict] | None = None
    meta: dict[str, bytes] = {}
    others: list[str] = []

    def flush() -> Sample | Skipped | None:
        if key is None:
            return None
        ref = f"{path}::{key}"
        if image is None:
            return Skipped(ref, "no image in this sample (members: "
                                f"{', '.join(sorted(meta) + others) or 'none'})")
        label, groups, split, why = _label_from(meta, ref)
        if labelled and label is None:
            return Skipped(image[1]["ref"], why or "no label (expected KEY.json with a 'label')")
        return Sample(label=label, groups=groups, split=split, **image[1])

    try:
        end = Path(path).stat().st_size
        with tarfile.open(path, "r|*" if compressed else "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                if not compressed and m.offset_data + m.size > end:
                    raise DataError(f"{path}: cannot read shard (truncated inside {m.name})")
                k, ext = split_key(m.name)
                if Path(m.name).name.startswith("."):
                    continue
                if k != key:
                    done = flush()
                    if done is not None:
                        yield done
                    key, image, meta, others = k, None, {}, []
                if image is None and f".{ext}" in IMAGE_EXTENSIONS:
                    kw: dict[str, Any] = {"ref": f"{path}::{m.name}"}
                    if compressed:  # no byte ranges inside a compressed stream
                        fh = tf.extractfile(m)
                        # At most the byte cap + 1: a bigger member is refused when read.
                        kw["data"] = fh.read(byte_cap() + 1) if fh else b""
                    else:
                        kw.update(path=path, offset=m.offset_data, size=m.size)
                    image = (ext, kw)
                elif ext in LABEL_EXTENSIONS and m.size <= 1 << 20:
                    fh = tf.extractfile(m)
                    meta[ext] = fh.read() if fh else b""
                else:
                    others.append(ext)
            if not compressed:
                # tarfile stops quietly at a damaged header: a whole shard ends in two zero
                # blocks, so a missing end marker means the rest of the shard was lost.
                with open(path, "rb") as fh:
                    fh.seek(tf.offset)
                    tail = fh.read(1024)
                if len(tail) < 1024 or tail.count(0) != 1024:
                    raise DataError(f"{path}: cannot read shard (it ends without the tar end "
                                    f"marker after byte {tf.offset}: truncated or damaged)")
            done = flush()
            if done is not None:
                yield done
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"{path}: cannot read shard ({exc})") from None


def resolve_shards(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard files named by a brace range, a glob, a folder of shards, a path, or a list."""
    import glob

    if isinstance(spec, (list, tuple)):
        return [p for s in spec for p in resolve_shards(s)]
    p = Path(spec)
    if p.is_dir():
        found = shard_files_in(p)
        if not found:
            raise DataError(f"{p}: not a folder of tar shards")
        return found
    names = expand_braces(str(spec))
    out = []
    for n in names:
        if any(ch in n for ch in "*?[") and not Path(n).exists():
            out += [Path(x) for x in sorted(glob.glob(n))]
        else:
            out.append(Path(n))
    missing = [str(x) for x in out if not x.is_file()]
    if missing:
        raise DataError(f"{spec}: {len(missing)} shard(s) missing, e.g. {missing[0]}")
    if not out:
        raise DataError(f"{spec}: names no shards")
    return out


def read_shards(spec: str | Path | Sequence[str | Path], labelled: bool = True) -> SourceData:
    """Every sample of a shard set, shard by shard in the order given, as one SourceData."""
    files = resolve_shards(spec)
    data = SourceData(str(spec) if not isinstance(spec, (list, tuple)) else
                      f"{len(files)} shards", [], [])
    for f in files:
        for item in iter_shard(f, labelled):
            (data.samples if isinstance(item, Sample) else data.skipped).append(item)
    if not data.samples:
        detail = f" ({len(data.skipped)} skipped: {data.skipped[0].reason})" if data.skipped else ""
        raise DataError(f"{spec}: no images in the shards{detail}")
    return data


def is_shard_spec(spec: str) -> bool:
    """A brace range of shards (``{000000..000099}``); other forms are told by their files."""
    return bool(_BRACE.search(spec))


# ---------------------------------------------------------------------------------- writing
@dataclass
class ShardResult:
    """What write_shards wrote: the shard files, the pattern that names them, counts."""

    out: Path
    files: list[Path]
    pattern: str
    samples: int
    labels: dict[str, int]
    skipped: list[Skipped] = field(default_factory=list)


_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tiff",
        "PPM": "ppm"}


def _image_ext(data: bytes, ref: str) -> str:
    """The extension the bytes really are (header only); ImageError with the reason if none."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except Exception:
        decode_bytes(data, ref)  # raises ImageError naming what the bytes are
        raise ImageError(ref, "not a recognised image format") from None
    if fmt not in _EXT:
        raise ImageError(ref, f"{fmt} images are not read by facegender")
    return _EXT[fmt]


def write_shards(source: Any, out: str | Path, *, maxcount: int = 10_000,
                 maxsize: float = 1e9, shuffle: int | None = None,
                 progress: bool = False) -> ShardResult:
    """Write any source (folder tree, tar, manifest, HF dataset, shards, list) as WebDataset
    tar shards ``OUT/000000.tar, ...``: the image bytes unchanged, under the extension they
    really are, plus KEY.json (label, split, groups, original ref); at most `maxcount` samples
    or `maxsize` bytes a shard. `shuffle=SEED` writes them in a seeded random order (streaming
    readers then see mixed batches); otherwise the source's order is kept. Files that are not
    images are skipped and listed, the rest go on. Writes OUT/shards.json (files, counts)."""
    import random

    from .sources import read_source

    wds = require("webdataset", "scale")
    out = folder_target(out, "shard folder", source if isinstance(source, list) else [source])
    if out.exists() and any(out.glob("*.tar")):
        raise DataError(f"{out} already holds shards; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    data = read_source(source, labelled=False)
    samples = list(data.samples)
    if shuffle is not None:
        random.Random(shuffle).shuffle(samples)
    skipped = list(data.skipped)
    labels: Counter = Counter()
    written = 0
    bar = progress_bar(len(samples), progress, "shard", leave=False)
    with wds.ShardWriter(str(out / "%06d.tar"), maxcount=maxcount, maxsize=maxsize,
                         verbose=0) as sink:
        for s in samples:
            if bar is not None:
                bar.update()
            try:
                raw = s.read_bytes()
                ext = _image_ext(raw, s.ref)
            except ImageError as exc:
                skipped.append(Skipped(s.ref, exc.reason))
                continue
            except OSError as exc:
                skipped.append(Skipped(s.ref, f"cannot read ({exc.strerror or exc})"))
                continue
            meta: dict[str, Any] = {"ref": s.ref}
            if s.label:
                meta["label"] = s.label
                labels[s.label] += 1
            if s.split:
                meta["split"] = s.split
            if s.groups:
                meta["groups"] = {k: v for k, v in s.groups.items()
                                  if isinstance(v, (str, int, float, bool))}
            sink.write({"__key__": f"{written:09d}", ext: raw, "json": meta})
            written += 1
    if bar is not None:
        bar.close()
    files = sorted(out.glob("*.tar"))
    if not written:
        raise DataError(f"{source}: no image could be written ({len(skipped)} skipped"
                        + (f": {skipped[0].ref}: {skipped[0].reason})" if skipped else ")"))
    pattern = str(out / f"{{{files[0].stem}..{files[-1].stem}}}.tar") if len(files) > 1 \
        else str(files[0])
    index = {"source": str(source), "pattern": pattern, "samples": written,
             "labels": dict(labels), "shuffle": shuffle, "maxcount": maxcount,
             "files": [f.name for f in files], "skipped": len(skipped)}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return ShardResult(out, files, pattern, written, dict(labels), skipped)


def _reader(spec: str, labelled: bool) -> SourceData | None:
    """read_source's hook: brace ranges, shard tars and folders of shards; None otherwise."""
    p = Path(spec)
    if is_shard_spec(spec) and not p.exists():
        return read_shards(spec, labelled)
    if p.is_file() and is_shard_tar(p):
        return read_shards([p], labelled)
    if p.is_dir() and shard_files_in(p):
        return read_shards(p, labelled)
    return None


READERS.append(_reader)
