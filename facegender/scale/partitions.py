"""The work of a batch-prediction job, cut into partitions that are written whole or not at all.

A shard is one partition (its worker reads it in one pass); any other source is listed here
and cut into runs of `partition_size` images; a video to track is one partition of its own
(`plan_videos`). Each partition's result is one Parquet file,
``part-NNNNN.parquet``, renamed into place only when complete, and ``_plan.json`` records
what each partition holds (a digest of its inputs) and the options that shape the rows. A job
restarted on the same folder checks that the plan is the same, skips the partitions whose file
is there and does the rest: no row lost, none twice. No Ray here: the plan is plain Python.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, FaceGenderError
from ..io.shards import iter_shard, resolve_shards
from ..io.sources import Sample, Skipped, SourceData, read_source

PLAN_NAME = "_plan.json"
DONE_NAME = "_SUCCESS.json"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass
class Partition:
    """One unit of work: a whole shard, or a list of inputs (sample refs or failures)."""

    index: int
    digest: str
    shard: str | None = None
    items: list[dict[str, Any]] | None = None

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "digest": self.digest, "shard": self.shard,
                           "items": self.items})

    @classmethod
    def from_json(cls, text: str) -> Partition:
        return cls(**json.loads(text))

    def source_data(self) -> SourceData:
        """The partition's inputs as predict takes them: its images, the inputs that failed at
        listing and those left out by policy (hidden files), each to get its row; a shard is
        streamed."""
        data = SourceData(f"partition {self.index}", [], [])
        if self.shard is not None:
            for x in iter_shard(self.shard, labelled=False):
                (data.skipped if isinstance(x, Skipped) else data.samples).append(x)
            return data
        for it in self.items or []:
            if "error" in it:
                (data.ignored if it.get("ignored") else data.skipped).append(
                    Skipped(it["ref"], it["error"]))
            else:
                raw = base64.b64decode(it["data"]) if it.get("data") is not None else None
                data.samples.append(Sample(ref=it["ref"], path=it.get("path"),
                                           offset=it.get("offset"), size=it.get("size"),
                                           data=raw))
        return data


def _item(s: Sample) -> dict[str, Any]:
    d: dict[str, Any] = {"ref": s.ref}
    if s.data is not None:  # inline bytes (HF datasets, compressed tars) travel with the plan
        d["data"] = base64.b64encode(s.data).decode("ascii")
    else:
        d.update(path=s.path, offset=s.offset, size=s.size)
    return d


def _digest(parts: Sequence[Any]) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def _shard_files(spec: Any) -> list[Path] | None:
    """The shards a spec names, or None when it is not a shard set."""
    from ..io.shards import is_shard_spec, is_shard_tar, shard_files_in

    s = str(spec)
    p = Path(s)
    if is_shard_spec(s) and not p.exists():
        return resolve_shards(s)
    if p.is_file() and is_shard_tar(p):
        return [p]
    if p.is_dir() and shard_files_in(p):
        return shard_files_in(p)
    if any(ch in s for ch in "*?[") and not p.exists():
        found = resolve_shards(s)
        if found and all(is_shard_tar(f) for f in found):
            return found
    return None


def plan_partitions(inputs: Any, partition_size: int = 1000) -> list[Partition]:
    """Partitions for `inputs` (one source or a list), in input order. Inputs that cannot be
    read at all become failure items, so they get an error row as in single-process predict."""
    if partition_size < 1:
        raise FaceGenderError(f"partition size must be >= 1, got {partition_size}")
    specs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    parts: list[Partition] = []
    pending: list[dict[str, Any]] = []

    def cut(final: bool = False) -> None:
        while len(pending) >= partition_size or (final and pending):
            chunk = pending[:partition_size]
            del pending[:partition_size]
            parts.append(Partition(len(parts), _digest(chunk), items=chunk))

    for spec in specs:
        try:
            shards = _shard_files(spec)
            data = None if shards else read_source(spec, labelled=False)
        except FaceGenderError as exc:  # one error row for it, as single-process predict gives
            pending.append({"ref": str(spec), "error": str(exc).split(": ", 1)[-1]})
            cut()
            continue
        if shards:
            cut(final=True)  # a shard starts its own partition
            for f in shards:
                st = f.stat()
                parts.append(Partition(len(parts), _digest([str(f), st.st_size]), shard=str(f)))
        else:
            pending += [_item(s) for s in data.samples]
            pending += [{"ref": sk.ref, "error": sk.reason} for sk in data.skipped]
            pending += [{"ref": sk.ref, "error": sk.reason, "ignored": True}
                        for sk in data.ignored]
        cut()
    cut(final=True)
    if not parts:
        raise DataError(f"{inputs}: nothing to predict")
    return parts


def plan_videos(videos: Sequence[str]) -> list[Partition]:
    """One partition per video file, in order: a video's frames are linked into tracks, so
    one task must see all of them. The digest notes the file's size and time of change, so a
    rerun over a video replaced since is refused as another job."""
    parts = []
    for path in videos:
        try:
            st = Path(path).stat()
            stamp: list[Any] = [str(path), st.st_size, st.st_mtime_ns]
        except OSError:  # gone since it was listed: its task gives its error row
            stamp = [str(path), None, None]
        parts.append(Partition(len(parts), _digest(stamp), items=[{"ref": str(path),
                                                                   "path": str(path)}]))
    if not parts:
        raise DataError("--track: no video file among the inputs")
    return parts


def check_plan(out: Path, parts: list[Partition], options: dict[str, Any],
               done_name: Callable[[int], str] = part_name) -> list[Partition]:
    """Write OUT/_plan.json, or check it against an earlier run's; the partitions still to do
    (those whose file `done_name(index)`, written last, is not in OUT yet)."""
    plan = {"options": options, "partitions": [[p.index, p.digest] for p in parts]}
    path = out / PLAN_NAME
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("options") != options:
            changed = sorted(k for k in set(options) | set(old.get("options", {}))
                             if options.get(k) != old.get("options", {}).get(k))
            raise FaceGenderError(f"{out} holds a run with other options ({', '.join(changed)}); "
                                  "use the same ones to finish it, or another --out")
        if old.get("partitions") != plan["partitions"]:
            raise FaceGenderError(f"{out} holds a run over other inputs (the source changed since, "
                                  "or another source); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        tmp.replace(path)
    return [p for p in parts if not (out / done_name(p.index)).exists()]
