"""A video through the Predictor and the Tracker: tracks with one label each, and their rows.

`track_video` decodes the video once (io.video_stream), classifies the chosen frames with the
Predictor (decode in its own thread, detection in the Predictor's pool, faces batched across
frames) and links the faces into tracks (tracking.py). The result, `VideoTracks`, holds the
timeline of sampled frames (time and the seconds each stands for), the tracks and their labels;
it gives the per-frame rows (`frame_rows`: the face record plus the track's id and label) and
the per-track rows (`track_rows`). With `period` N (detection on every N-th frame), the frames
in between get rows too, the box moved linearly between the track's two detections: the cheap
tracker between detections.

A track is on screen from its first to its last detection, across sampled frames where it was
missed if it was linked again by motion (same shot, within tracking.MOTION_GAP frames); each
sampled frame stands for the time until the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError
from ..io.sources import read_source
from ..io.video import has_video_suffix, is_video_path
from ..io.video_stream import VideoInfo, VideoStream
from .predictor import Predictor
from .records import face_record
from .tracking import (
    MAX_GAP,
    MIN_FRAMES,
    Detection,
    Track,
    Tracker,
    TrackLabel,
    appearance,
    frame_signature,
    is_cut,
    label_track,
)

# Columns a frame row adds to the face record when tracking (infer/records.py RECORD_FIELDS).
TRACK_COLUMNS = ["track_id", "track_label", "track_prob_male", "track_unsure"]


@dataclass
class VideoTracks:
    """One video's tracks. `times[k]`, `frames[k]`, `spans[k]`: the k-th sampled frame's time,
    number and the seconds it stands for; `cuts`: sampled frames that start a new shot."""

    path: str
    info: VideoInfo | None = None
    sampling: str = ""
    times: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    spans: list[float] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    labels: dict[int, TrackLabel] = field(default_factory=dict)
    frame_errors: dict[int, str] = field(default_factory=dict)  # sampled frame -> reason
    error: str | None = None  # the video could not be read, or decoding stopped early
    period: int | None = None
    all_times: dict[int, float] = field(default_factory=dict, repr=False)  # with period only

    @property
    def duration(self) -> float:
        return sum(self.spans)

    def segments(self, track: Track) -> list[tuple[int, int]]:
        """(first, last) sampled-frame indices of each stretch the track is on screen."""
        out: list[tuple[int, int]] = []
        for d in track.detections:
            if out and d.linked_by == "motion":
                out[-1] = (out[-1][0], d.sample)
            else:
                out.append((d.sample, d.sample))
        return out

    def intervals(self, track: Track) -> list[tuple[float, float]]:
        """The track's time on screen as (start, end) seconds."""
        return [(self.times[a], self.times[b] + self.spans[b]) for a, b in self.segments(track)]

    def seconds(self, track: Track) -> float:
        return sum(e - s for s, e in self.intervals(track))


def _sampling(every: float | None, period: int | None, keyframes: bool) -> str:
    if keyframes:
        return "keyframes"
    return f"every {period} frames (tracked between)" if period else f"every {every:g} s"


def track_video(predictor: Predictor, path: str | Path, *, every: float | None = None,
                period: int | None = None, keyframes: bool = False,
                min_frames: int = MIN_FRAMES, batch_size: int = 64,
                workers: int | None = None, data: bytes | None = None) -> VideoTracks:
    """Detect, classify and track the faces of one video. Frames: one every `every` seconds
    (default 1), or every `period`-th frame (rows for all frames, tracked between), or the
    keyframes only. A video that cannot be read comes back with `error` set, not raised.
    `data`: the video's bytes in memory (an upload; `path` then only names it)."""
    path = str(path)
    if every is None and period is None and not keyframes:
        every = 1.0
    out = VideoTracks(path, sampling=_sampling(every, period, keyframes), period=period)
    try:
        stream = VideoStream(path, every=every, period=period, keyframes=keyframes, data=data)
    except FaceGenderError as exc:
        out.error = str(exc).split(": ", 1)[-1] if str(exc).startswith(path) else str(exc)
        return out
    out.info = stream.info
    rate = stream.info.rate
    spacing = every if every else (period / rate if period else None)
    tracker = Tracker(max_gap_samples=MAX_GAP / spacing if spacing else MAX_GAP * rate)
    prev_sig = None
    results = predictor.iter_predict(iter(stream), batch_size=batch_size, workers=workers,
                                     processes=1, keep_images=True)
    for k, res in enumerate(results):
        out.frames.append(int(res.sample.groups["frame"]))
        out.times.append(float(res.sample.groups["timestamp"]))
        if res.error:
            out.frame_errors[k] = res.error
            continue
        sig = frame_signature(res.image)
        cut = is_cut(prev_sig, sig)
        if cut:
            out.cuts.append(k)
        prev_sig = sig
        dets = [Detection(k, tuple(f.box), f.det_score, f.prob_male, f.label, appearance(c),
                          face=f.index, unsure=f.unsure)
                for f, c in zip(res.faces, res.crops, strict=True)]
        for t, d, crop in zip(tracker.update(k, dets, cut), dets, res.crops, strict=True):
            t.offer_thumbnail(d, crop)
        res.image, res.crops = None, []
    if stream.error:
        out.error = stream.error
    elif not out.times:
        out.error = "no frames could be decoded"
    if period:
        out.all_times = stream.times
    out.spans = _spans(out.times, spacing, stream)
    out.tracks = tracker.tracks
    for t in out.tracks:  # the appearance signatures served linking only: free them
        t.feature = None
        for d in t.detections:
            d.feature = None
    thr, band = predictor.config.threshold, predictor.options.unsure_band
    out.labels = {t.id: label_track(t, thr, band, min_frames) for t in out.tracks}
    return out


def _spans(times: list[float], spacing: float | None, stream: VideoStream) -> list[float]:
    """Seconds each sampled frame stands for: until the next one; the last one its spacing,
    cut at the end of the video (the last decoded frame's end)."""
    if not times:
        return []
    spans = [b - a for a, b in zip(times, times[1:], strict=False)]
    step = 1.0 / stream.info.rate
    if spacing is None:  # keyframes: their typical spacing
        spacing = sorted(spans)[len(spans) // 2] if spans else step
    end = max(stream.info.duration, max(stream.times.values(), default=0.0) + step)
    spans.append(max(step, min(spacing, end - times[-1])) if end > times[-1] else spacing)
    return spans


def split_videos(inputs: Iterable[Any], include_hidden: bool = False
                 ) -> tuple[list[str], list[Any]]:
    """(video files, everything else) of prediction inputs: a video given directly, or found
    in a folder or glob (read_source lists it), is tracked; the rest is predicted as photos."""
    videos, others = [], []
    for spec in inputs:
        if is_video_path(spec):
            videos.append(str(spec))
            continue
        if not isinstance(spec, (str, Path)) or not (Path(spec).is_dir() or any(
                c in str(spec) for c in "*?[")):
            others.append(spec)
            continue
        try:
            data = read_source(spec, labelled=False, include_hidden=include_hidden)
        except FaceGenderError:
            others.append(spec)  # the ordinary path reports why
            continue
        found = [s.path for s in data.samples if s.data is None and s.path is not None
                 and s.offset is None and has_video_suffix(s.ref)]
        videos += found
        if len(found) < len(data.samples) or data.skipped:
            rest = [s for s in data.samples if s.path not in set(found)]
            data.samples = rest
            others.append(data)
    return videos, others


def track_videos(predictor: Predictor, inputs: Any, **kwargs: Any) -> Iterator[VideoTracks]:
    """track_video over every video in `inputs` (files, folders, globs), one after another;
    a video that fails is a VideoTracks with its error, and the rest goes on."""
    videos, _ = split_videos([inputs] if isinstance(inputs, (str, Path)) else inputs)
    for v in videos:
        yield track_video(predictor, v, **kwargs)


# -- rows

def track(inputs: Any, model: Any = None, *, every: float | None = None,
          period: int | None = None, keyframes: bool = False, min_frames: int = 3,
          batch_size: int = 64, **options: Any) -> list[VideoTracks]:
    """Faces of every video in `inputs` (files, folders, globs) linked into tracks, one label
    per track: a list of VideoTracks (`frame_rows`, `track_rows` give the rows;
    `summarize_tracks` the screen time). Frames: every `every` seconds (default 1), every
    `period`-th frame (rows for all frames), or the keyframes. `options` go to Predictor."""
    pred = Predictor(model, **options)
    return list(track_videos(pred, inputs, every=every, period=period, keyframes=keyframes,
                             min_frames=min_frames, batch_size=batch_size))


def _track_fields(t: Track | None, lab: TrackLabel | None) -> dict[str, Any]:
    if t is None or lab is None:
        return dict.fromkeys(TRACK_COLUMNS)
    return {"track_id": t.id, "track_label": lab.label, "track_prob_male": lab.prob_male,
            "track_unsure": lab.unsure}


def flatten_tracked(row: dict[str, Any], digits: int | None = None) -> dict[str, Any]:
    """A frame row as one flat row: the face record's CSV columns (records.flatten), then its
    track's (TRACK_COLUMNS)."""
    from .records import flatten

    return {**flatten(row, digits=digits), **{k: row[k] for k in TRACK_COLUMNS}}


def frame_rows(v: VideoTracks) -> Iterator[dict[str, Any]]:
    """Face records of every sampled frame, in frame order, each with its track's id and label
    (TRACK_COLUMNS); a frame without a face is one no_face row; a failed one its error row.
    With a detection period, the frames in between follow each sampled frame, one row per
    track on screen there (face_source "tracked", the track's label, the box interpolated)."""
    if v.error and not v.times:
        yield {**face_record(v.path, error=v.error), **_track_fields(None, None)}
        return
    by_sample: dict[int, list[tuple[Track, Detection]]] = {}
    for t in v.tracks:
        for d in t.detections:
            by_sample.setdefault(d.sample, []).append((t, d))
    fills = on_screen(v) if v.period else {}
    for k, (frame, ts) in enumerate(zip(v.frames, v.times, strict=True)):
        where = {"frame": frame, "timestamp": ts}
        if k in v.frame_errors:
            yield {**face_record(v.path, error=v.frame_errors[k], **where),
                   **_track_fields(None, None)}
        elif k not in by_sample:
            yield {**face_record(v.path, label="no_face", **where), **_track_fields(None, None)}
        for t, d in sorted(by_sample.get(k, []), key=lambda td: td[1].face):
            yield {**face_record(v.path, face=d.face, box=d.box, det_score=d.det_score,
                                 label=d.label, prob_male=d.prob_male,
                                 unsure=d.unsure,
                                 face_source="detector", **where),
                   **_track_fields(t, v.labels[t.id])}
        yield from _between(v, k, fills.get(k, []))


def on_screen(v: VideoTracks) -> dict[int, list[tuple[Track, Detection, Detection | None]]]:
    """For each sampled frame k, the tracks on screen from k until the next sampled frame:
    (track, its detection at or before k, its next detection in the same stretch or None)."""
    out: dict[int, list] = {}
    for t in v.tracks:
        ds = t.detections
        for i, d in enumerate(ds):
            nxt = ds[i + 1] if i + 1 < len(ds) and ds[i + 1].linked_by == "motion" else None
            for k in range(d.sample, min(nxt.sample if nxt else d.sample + 1, len(v.times))):
                out.setdefault(k, []).append((t, d, nxt))
    return out


def box_at(v: VideoTracks, d: Detection, nxt: Detection | None, ts: float
           ) -> tuple[float, float, float, float]:
    """A track's box at time `ts`: moved linearly from detection `d` to `nxt` (held without)."""
    if nxt is None:
        return d.box
    a = (ts - v.times[d.sample]) / max(1e-9, v.times[nxt.sample] - v.times[d.sample])
    a = min(1.0, max(0.0, a))
    return tuple(p + (q - p) * a for p, q in zip(d.box, nxt.box, strict=True))


def _between(v: VideoTracks, k: int, on: list) -> Iterator[dict[str, Any]]:
    if not on:
        return
    start = v.frames[k]
    stop = v.frames[k + 1] if k + 1 < len(v.frames) else max(v.all_times, default=start) + 1
    for frame in range(start + 1, stop):
        ts = v.all_times.get(frame)
        if ts is None:
            continue
        for face, (t, d, nxt) in enumerate(on):
            lab = v.labels[t.id]
            yield {**face_record(v.path, face=face, box=box_at(v, d, nxt, ts), label=lab.label,
                                 prob_male=lab.prob_male, unsure=lab.unsure,
                                 face_source="tracked", frame=frame, timestamp=ts),
                   **_track_fields(t, lab)}


TRACK_ROW_FIELDS = ["path", "track_id", "label", "score", "prob_male", "unsure", "frames",
                    "first_frame", "last_frame", "start", "end", "seconds", "segments",
                    "face_px", "det_score", "flips", "flip_rate"]


def track_rows(v: VideoTracks) -> Iterator[dict[str, Any]]:
    """One row per track (TRACK_ROW_FIELDS): its label, probability, frames, time on screen
    and how often its frames' own labels flipped."""
    for t in v.tracks:
        lab = v.labels[t.id]
        ds = t.detections
        iv = v.intervals(t)
        yield {"path": v.path, "track_id": t.id, "label": lab.label,
               "score": None if lab.label is None else round(
                   lab.prob_male if lab.label == "male" else 1 - lab.prob_male, 6),
               "prob_male": round(lab.prob_male, 6), "unsure": lab.unsure, "frames": lab.frames,
               "first_frame": v.frames[ds[0].sample], "last_frame": v.frames[ds[-1].sample],
               "start": round(iv[0][0], 3), "end": round(iv[-1][1], 3),
               "seconds": round(v.seconds(t), 3), "segments": len(iv),
               "face_px": round(sum((d.box[2] * d.box[3]) ** 0.5 for d in ds) / len(ds), 1),
               "det_score": round(sum(d.det_score or 0 for d in ds) / len(ds), 4),
               "flips": lab.flips,
               "flip_rate": round(lab.flips / (len(ds) - 1), 4) if len(ds) > 1 else 0.0}
