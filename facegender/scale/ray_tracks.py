"""Videos tracked on Ray: `facegender predict --engine ray --track VIDEOS --out DIR`.

A video's faces are linked into tracks across all its frames, so a video is never split: each
is one partition (partitions.plan_videos), tracked whole by one actor holding one Predictor
(infer.video_tracks.track_video, as predict --track does). For the video numbered NNNNN the
actor writes into OUT, each file under a temporary name renamed into place when whole:
  video-NNNNN.frames.parquet  its frame rows (the CSV's columns and the track's columns),
  video-NNNNN.tracks.csv      one row per track (predict --track --tracks-csv's columns),
  video-NNNNN.json            its summary and its timeline (what the tracks are made of),
written last, so its presence marks the video done: a rerun on the same OUT skips it. A video
that cannot be read gets its error row and summary like any other; the others go on. When all
are done the driver rebuilds every video's timeline and writes OUT/summary.json and
OUT/summary.csv (one row per video and a TOTAL row, as --summary / --summary-csv write them).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError, require
from ..infer.tracking import MIN_FRAMES, Detection, Track, TrackLabel
from ..infer.video_summary import (
    N_BOOT,
    SUMMARY_CSV_FIELDS,
    summarize_video,
    summarize_videos,
    summary_csv_rows,
)
from ..infer.video_tracks import (
    TRACK_COLUMNS,
    TRACK_ROW_FIELDS,
    VideoTracks,
    flatten_tracked,
    frame_rows,
    split_videos,
    track_rows,
    track_video,
)
from ..io.progress import progress_bar
from ..io.targets import temp_beside
from ..io.video_stream import VideoInfo
from ..io.writers import RowWriter, write_text
from .partitions import Partition, check_plan, plan_videos
from .ray_predict import rows_on_ray, rss_mb
from .ray_predict import schema as photo_schema

SUMMARY_JSON, SUMMARY_CSV = "summary.json", "summary.csv"
_ROWS_PER_WRITE = 5000  # frame rows held at once while a video's Parquet file is written


def video_stem(index: int) -> str:
    return f"video-{index:05d}"


def done_name(index: int) -> str:
    """The file written last for a video: there means done."""
    return f"{video_stem(index)}.json"


def frame_schema():
    """The frames' Arrow schema: the photo engine's columns, then the track's."""
    pa = require("pyarrow", "scale")
    kinds = {"track_id": pa.int64(), "track_label": pa.string(),
             "track_prob_male": pa.float64(), "track_unsure": pa.bool_()}
    return pa.schema([*photo_schema(), *(pa.field(c, kinds[c]) for c in TRACK_COLUMNS)])


# -- a video's timeline as JSON, and back (what summaries and timelines are computed from)
def timeline_doc(v: VideoTracks) -> dict[str, Any]:
    """A tracked video without its pixels: frames, times, tracks (their detections, label and
    thumbnail), enough to compute its summary and draw its timeline again."""
    def track(t: Track) -> dict[str, Any]:
        return {"id": t.id, "thumbnail": base64.b64encode(t.thumbnail).decode("ascii")
                if t.thumbnail else None,
                "detections": [{k: x for k, x in asdict(d).items() if k != "feature"}
                               for d in t.detections],
                "label": asdict(v.labels[t.id])}

    return {"path": v.path, "info": asdict(v.info) if v.info else None,
            "sampling": v.sampling, "times": v.times, "frames": v.frames, "spans": v.spans,
            "cuts": v.cuts, "frame_errors": v.frame_errors, "error": v.error,
            "period": v.period, "tracks": [track(t) for t in v.tracks]}


def from_timeline(doc: dict[str, Any]) -> VideoTracks:
    """timeline_doc's inverse (without the frames between detections of a detection period)."""
    tracks, labels = [], {}
    for t in doc["tracks"]:
        dets = [Detection(**{**d, "box": tuple(d["box"]), "feature": None})
                for d in t["detections"]]
        thumb = base64.b64decode(t["thumbnail"]) if t["thumbnail"] else None
        tracks.append(Track(t["id"], dets, thumbnail=thumb))
        labels[t["id"]] = TrackLabel(**{f.name: t["label"][f.name] for f in fields(TrackLabel)})
    return VideoTracks(
        doc["path"], info=VideoInfo(**doc["info"]) if doc["info"] else None,
        sampling=doc["sampling"], times=doc["times"], frames=doc["frames"], spans=doc["spans"],
        cuts=doc["cuts"], tracks=tracks, labels=labels, error=doc["error"], period=doc["period"],
        frame_errors={int(k): e for k, e in doc["frame_errors"].items()})


def write_video(out: Path, index: int, v: VideoTracks) -> int:
    """A tracked video's three files in OUT (see the module doc); its number of frame rows."""
    pa = require("pyarrow", "scale")
    pq = require("pyarrow.parquet", "scale")

    stem, schema, n = video_stem(index), frame_schema(), 0
    with temp_beside(out / f"{stem}.frames.parquet") as tmp, pq.ParquetWriter(tmp, schema) as w:
        rows: list[dict[str, Any]] = []
        for r in frame_rows(v):
            rows.append(flatten_tracked(r))
            if len(rows) >= _ROWS_PER_WRITE:
                w.write_table(pa.Table.from_pylist(rows, schema=schema))
                n, rows = n + len(rows), []
        w.write_table(pa.Table.from_pylist(rows, schema=schema))
        n += len(rows)
    with RowWriter(out / f"{stem}.tracks.csv", "csv", TRACK_ROW_FIELDS) as w:
        w.write(list(track_rows(v)))
    write_text(out / done_name(index), json.dumps(
        {"summary": summarize_video(v), "timeline": timeline_doc(v)}) + "\n")
    return n


class VideoTracker:
    """A Ray Data actor: one Predictor per worker process; each call tracks whole videos."""

    def __init__(self, model: str, out: str, options: dict[str, Any],
                 sampling: dict[str, Any], batch_size: int) -> None:
        from ..infer.predictor import Predictor

        self.predictor = Predictor(model, **options)
        self.out, self.sampling, self.batch_size = Path(out), sampling, batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        summary: dict[str, list] = {k: [] for k in ("partition", "path", "frames", "tracks",
                                                    "rows", "failed", "seconds", "pid",
                                                    "rss_mb")}
        for text in batch["partition"]:
            t0 = time.perf_counter()
            part = Partition.from_json(str(text))
            path = str(part.items[0]["path"]) if part.items else ""
            try:
                v = track_video(self.predictor, path, batch_size=self.batch_size,
                                workers=1, **self.sampling)
            except Exception as exc:  # this video's row says why; the job goes on
                v = VideoTracks(path, error=f"tracking failed ({type(exc).__name__}: {exc})")
            rows = write_video(self.out, part.index, v)
            for k, x in (("partition", part.index), ("path", path), ("frames", len(v.times)),
                         ("tracks", len(v.tracks)), ("rows", rows),
                         ("failed", bool(v.error and not v.times)),
                         ("seconds", time.perf_counter() - t0), ("pid", os.getpid()),
                         ("rss_mb", rss_mb())):
                summary[k].append(x)
        return summary


@dataclass
class RayTrackResult:
    out: Path
    videos: int
    skipped_videos: int
    failed: int = 0  # videos of this run that could not be read at all
    seconds: float = 0.0
    left_out: list[Any] = field(default_factory=list)  # inputs that are no videos
    workers: list[dict[str, Any]] = field(default_factory=list)  # one row per video done
    summary: dict[str, Any] = field(default_factory=dict)  # summarize_videos over all videos
    tracked: list[VideoTracks] = field(default_factory=list, repr=False)  # rebuilt timelines


def track_ray(inputs: Any, out: str | Path, model: str | Path | None = None, *,
              workers: int = 2, ray_address: str | None = None, batch_size: int = 64,
              threads: int = 1, every: float | None = None, period: int | None = None,
              keyframes: bool = False, min_frames: int = MIN_FRAMES, n_boot: int = N_BOOT,
              progress: bool = True, **options: Any) -> RayTrackResult:
    """Track every video of `inputs` (files, folders, globs; other inputs are left out) on
    `workers` Ray actors, one video per task, into OUT (see the module doc). Frames as for
    facegender.track: every `every` seconds (default 1), every `period`-th frame, or the
    keyframes. `options` go to each actor's Predictor. Rerun on the same `out` to finish a
    killed job: the videos already done are skipped."""
    from ..models import modelfile

    require("pyarrow", "scale")
    if workers < 1:
        raise FaceGenderError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    model_dir = str(modelfile.resolve_model_dir(model))
    videos, others = split_videos(inputs if isinstance(inputs, (list, tuple)) else [inputs],
                                  bool(options.get("include_hidden")))
    parts = plan_videos(videos)
    sampling = {"every": every, "period": period, "keyframes": keyframes,
                "min_frames": min_frames}
    options = {**options, "threads": threads}
    # What shapes the outputs must match on a restart; threads only change the speed.
    todo = check_plan(out, parts, {"model": model_dir, "track": sampling,
                                   **{k: v for k, v in options.items() if k != "threads"}},
                      done_name)
    res = RayTrackResult(out, len(parts), len(parts) - len(todo), left_out=others)
    if progress:
        print(f"{len(parts)} videos, {res.skipped_videos} already tracked in {out}; "
              f"{len(todo)} to do on {workers} Ray workers", file=sys.stderr)
    for stale in out.glob(".video-*"):  # half-written by a killed job: never read
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if todo:
        for row in rows_on_ray(ray_address, workers, threads, lambda ray: _run(
                ray, todo, model_dir, out, options, sampling, workers, batch_size, progress)):
            res.workers.append(row)
            res.failed += bool(row["failed"])
    res.seconds = time.perf_counter() - t0
    missing = [p.index for p in parts if not (out / done_name(p.index)).exists()]
    if missing:
        raise FaceGenderError(f"{len(missing)} videos were not tracked (e.g. "
                              f"{done_name(missing[0])}); run the same command again to finish")
    res.tracked = [from_timeline(json.loads((out / done_name(p.index)).read_text())["timeline"])
                   for p in parts]
    res.summary = summarize_videos(res.tracked, n_boot)
    write_text(out / SUMMARY_JSON, json.dumps(res.summary, indent=2) + "\n")
    with RowWriter(out / SUMMARY_CSV, "csv", SUMMARY_CSV_FIELDS) as w:
        w.write(summary_csv_rows(res.summary))
    return res


def _run(ray, todo: list[Partition], model_dir: str, out: Path, options: dict[str, Any],
         sampling: dict[str, Any], workers: int, batch_size: int, progress: bool
         ) -> Iterator[dict]:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"partition": p.to_json()} for p in todo],
                             override_num_blocks=len(todo))
    arenas = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}  # see ray_predict
    ds = ds.map_batches(VideoTracker, batch_size=1, num_cpus=options["threads"],
                        runtime_env={"env_vars": arenas},
                        compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
                        fn_constructor_kwargs={"model": model_dir, "out": str(out),
                                               "options": options, "sampling": sampling,
                                               "batch_size": batch_size})
    with progress_bar(len(todo), progress, "track", unit="video") as bar:
        for row in ds.iter_rows():
            bar.update()
            yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def read_frames(out: str | Path) -> Iterator[dict[str, Any]]:
    """The frame rows of a finished run, video by video (box back as a dict): the records of
    predict --track's --csv / --json."""
    pq = require("pyarrow.parquet", "scale")
    from ..infer.records import BOX_KEYS, RECORD_FIELDS

    for f in sorted(Path(out).glob("video-*.frames.parquet")):
        for row in pq.read_table(f).to_pylist():
            box = [row.pop(f"box_{k}") for k in BOX_KEYS]
            row["box"] = None if box[0] is None else dict(zip(BOX_KEYS, box, strict=True))
            yield {k: row[k] for k in RECORD_FIELDS + TRACK_COLUMNS}


def read_tracks(out: str | Path) -> Iterator[dict[str, Any]]:
    """The track rows of a finished run, video by video (as --tracks-csv has them)."""
    import csv

    for f in sorted(Path(out).glob("video-*.tracks.csv")):
        with open(f, newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
