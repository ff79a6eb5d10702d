"""`facegender predict VIDEO --track`: the CLI's video path (tracks, frame and track rows, the
screen-time summary, ASS subtitles, the annotated MP4), and the Predictor every predict path
builds from the same flags (`predictor_from`). Kept apart from cli.py so the verb module stays
short; its options are declared with predict's in verbs.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import FaceGenderError


def video_every(args: argparse.Namespace) -> float:
    """Seconds between the video frames predict classifies: --fps N is --every 1/N."""
    return 1.0 / args.fps if args.fps else args.every


def predictor_options(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """Predictor's keywords from predict's flags: every flag named like a keyword of
    Predictor.__init__ (derived from its signature, so the two cannot drift); --max-mb is
    max_bytes. `overrides` win (keep_images for --save-crops / --annotate)."""
    import inspect

    from .infer.predictor import Predictor

    names = [p.name for p in inspect.signature(Predictor.__init__).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    kw = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if getattr(args, "max_mb", None) is not None:
        kw["max_bytes"] = int(args.max_mb * 2**20)
    return {**kw, **overrides}


def predictor_from(args: argparse.Namespace, **overrides: Any) -> Any:
    """The Predictor predict's flags describe (predictor_options), loaded from --model."""
    from .infer.predictor import Predictor

    return Predictor(args.model, **predictor_options(args, **overrides))


def _chunks(rows: Any, n: int) -> Any:
    """Lists of at most n rows from an iterator of rows."""
    from itertools import islice

    it = iter(rows)
    while chunk := list(islice(it, n)):
        yield chunk


def _is_ass(spec: str) -> bool:
    return Path(spec).suffix.lower() == ".ass"


def _track_target(spec: str, video: str, n_videos: int) -> Path:
    """Where a per-video export goes: PATH itself for one video, else one file per video."""
    path, stem = Path(spec), Path(video).stem
    if not _is_ass(spec):
        return path / f"{stem}.ass"
    return path if n_videos == 1 else path.with_name(f"{path.stem}_{stem}{path.suffix}")


def export_targets(a: argparse.Namespace) -> None:
    """Check --subtitles / --annotate before any video is tracked: a .ass file that may be
    written, else folders made (io.targets refuses an input, a file in the way)."""
    from .io.targets import file_target, folder_target

    if a.subtitles and _is_ass(a.subtitles):
        file_target(a.subtitles, "--subtitles", a.inputs)
    for folder in (a.annotate, a.subtitles if a.subtitles and not _is_ass(a.subtitles) else None):
        if folder:
            folder_target(folder, inputs=a.inputs).mkdir(parents=True, exist_ok=True)


def export_video(a: argparse.Namespace, v: Any, n_videos: int) -> None:
    """A tracked video's --subtitles (ASS) and --annotate (MP4) files, where asked and it has
    frames: the local engine's and the Ray engine's (from each video's rebuilt timeline)."""
    from .infer.video_export import write_annotated_video, write_ass

    if a.subtitles and v.times:
        write_ass(v, _track_target(a.subtitles, v.path, n_videos))
    if a.annotate and v.times:
        write_annotated_video(v, Path(a.annotate) / f"{Path(v.path).stem}.tracks.mp4")


def frame_writer(target: Any, fmt: str) -> Any:
    """A RowWriter of tracked frame rows: the face record and its track's columns."""
    from .infer.records import CSV_FIELDS, RECORD_FIELDS
    from .infer.video_tracks import TRACK_COLUMNS, flatten_tracked
    from .io.writers import RowWriter

    if fmt == "csv":
        return RowWriter(target, fmt, CSV_FIELDS + TRACK_COLUMNS,
                         csv_row=lambda r: flatten_tracked(r, digits=1))
    return RowWriter(target, fmt, RECORD_FIELDS + TRACK_COLUMNS)


def write_summaries(a: argparse.Namespace, videos: list[Any],
                    summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """--summary, --summary-csv and --timeline of tracked videos (their summary is computed
    unless given); the summary."""
    from .infer.video_summary import SUMMARY_CSV_FIELDS, summarize_videos, summary_csv_rows
    from .io.writers import RowWriter, write_text

    summary = summarize_videos(videos) if summary is None else summary
    if a.summary:
        write_text(a.summary, json.dumps(summary, indent=2) + "\n")
    if a.timeline:
        from .report.video_html import write_timeline

        write_timeline(videos, a.timeline, summary)
    if a.summary_csv:
        with RowWriter(a.summary_csv, "csv", SUMMARY_CSV_FIELDS) as w:
            w.write(summary_csv_rows(summary))
    return summary


def say_left_out(others: list[Any]) -> None:
    """Name (on stderr, the first 20) the inputs --track leaves out: they are no videos."""
    from .io.files import display_name

    left = [str(x) if isinstance(x, (str, Path)) else s.ref for x in others
            for s in ([x] if isinstance(x, (str, Path)) else x.samples)]
    for x in left[:20]:
        print(f"  not a video, left out by --track: {display_name(str(x))}", file=sys.stderr)


def predict_tracks(a: argparse.Namespace) -> int:
    """`predict --track`: each video's faces as tracks, with their rows, summary and exports."""
    import signal

    from .infer.video_tracks import (
        TRACK_ROW_FIELDS,
        frame_rows,
        split_videos,
        track_rows,
        track_video,
    )
    from .io.files import display_name
    from .io.writers import RowWriter, close_all, raise_interrupt

    if a.keyframes and a.detect_period:
        raise FaceGenderError("--keyframes and --detect-period choose frames differently: "
                              "give one")
    videos, others = split_videos(a.inputs, a.include_hidden)
    if not videos:
        raise FaceGenderError("--track: no video file among the inputs")
    # (check_targets has refused every other output file that is an input or cannot be written)
    export_targets(a)
    pred = predictor_from(a)
    every = None if a.keyframes or a.detect_period else video_every(a)
    to_stdout = "-" in (a.csv_out, a.json_out)

    writers = [frame_writer(sys.stdout, a.format)] if a.format in ("csv", "json") \
        and not to_stdout else []
    writers += [frame_writer(sys.stdout if p == "-" else p, f)
                for p, f in ((a.csv_out, "csv"), (a.json_out, "json")) if p]
    tracks_out = RowWriter(a.tracks_csv, "csv", TRACK_ROW_FIELDS) if a.tracks_csv else None
    done, stopped = [], None
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        for path in videos:
            v = track_video(pred, path, every=every, period=a.detect_period,
                            keyframes=a.keyframes, min_frames=a.min_track,
                            batch_size=a.batch_size)
            done.append(v)
            for chunk in _chunks(frame_rows(v), 1000):  # a long video's rows never all in memory
                for w in writers:
                    w.write(chunk)
            if tracks_out:
                tracks_out.write(list(track_rows(v)))
            export_video(a, v, len(videos))
            labels = [v.labels[t.id] for t in v.tracks]
            print(f"{display_name(path)}: " + (f"failed: {v.error}" if v.error and not v.times
                  else f"{len(v.times)} frames, {len(v.tracks)} tracks ("
                  + ", ".join(f"{sum((lb.label == k and not lb.unsure) for lb in labels)} {k}"
                              for k in ("female", "male"))
                  + f", {sum(lb.unsure for lb in labels)} unsure)"
                  + (f"; {v.error}" if v.error else "")), file=sys.stderr)
    except KeyboardInterrupt:
        stopped = f"interrupted after {len(done)} videos"
    finally:
        signal.signal(signal.SIGTERM, old_term)
    close_all(writers + ([tracks_out] if tracks_out else []), stopped)
    summary = write_summaries(a, done)
    if a.format == "table" and not to_stdout:
        print(json.dumps(summary["total"] if len(done) > 1 else summary["videos"][0]
                         if done else {}, indent=2))
    say_left_out(others)
    if stopped:
        return 130
    return 1 if any(v.error and not v.times for v in done) else 0
