"""What a media study reads off tracked videos: screen time, person-seconds and people by label.

Per video (`summarize_video`) and over many (`summarize_videos`):
- screen_time: seconds with at least one face of that label on screen (a track's label, not a
  frame's: the smoothed one), and with any face at all;
- person_seconds: the tracks' time on screen added up, by label (two women for 3 s: 6 s);
- tracks: distinct tracks by label (a person who leaves the picture for longer than the
  tracker bridges, or is not recognised after a cut, counts again);
- unsure_share: the share of person-seconds whose track is unsure (too short, or inside the
  model's unsure band); `female_share`: women's share of the labelled person-seconds;
- flip_rate: how often consecutive frames of a track had different labels of their own, the
  flicker the one-label-per-track rule removes;
- intervals: 95% percentile bootstrap over tracks (tracks drawn with replacement, within each
  video, `n_boot` times, seeded), for every figure above that tracks add up to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .video_tracks import VideoTracks

LABELS = ("female", "male", "unsure")
N_BOOT = 1000
# One CSV row per video: these keys of the summary, nested ones joined with "_".
SUMMARY_CSV_FIELDS = ["path", "error", "sampling", "duration", "sampled_frames", "tracks_total",
                      *(f"tracks_{k}" for k in LABELS),
                      *(f"screen_time_{k}" for k in (*LABELS, "any")),
                      *(f"person_seconds_{k}" for k in LABELS), "unsure_share", "female_share",
                      "flip_rate", "screen_time_female_lo", "screen_time_female_hi",
                      "screen_time_male_lo", "screen_time_male_hi", "female_share_lo",
                      "female_share_hi"]


def _kind(label: str | None, unsure: bool) -> str:
    return "unsure" if unsure or label is None else label


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


class _Tracks:
    """Flat per-track arrays over one or more videos, for figures and their bootstrap."""

    def __init__(self, videos: Sequence[VideoTracks]) -> None:
        self.video, self.kind, self.seconds, self.intervals = [], [], [], []
        self.flips, self.pairs = 0, 0
        for vi, v in enumerate(videos):
            for t in v.tracks:
                lab = v.labels[t.id]
                self.video.append(vi)
                self.kind.append(_kind(lab.label, lab.unsure))
                iv = v.intervals(t)
                self.intervals.append(iv)
                self.seconds.append(sum(e - s for s, e in iv))
                self.flips += lab.flips
                self.pairs += max(0, lab.frames - 1)
        self.video = np.array(self.video, int)
        self.n_videos = len(videos)

    def figures(self, idx: np.ndarray) -> dict[str, float]:
        """The additive figures for the tracks `idx` (with repeats, as a bootstrap draws)."""
        out: dict[str, float] = {f"{f}_{k}": 0.0 for f in ("tracks", "person_seconds",
                                                           "screen_time") for k in LABELS}
        out["screen_time_any"] = 0.0
        by_video: dict[int, set[int]] = {}
        for i in idx:
            k = self.kind[i]
            out[f"tracks_{k}"] += 1
            out[f"person_seconds_{k}"] += self.seconds[i]
            by_video.setdefault(int(self.video[i]), set()).add(int(i))
        # screen time: the union within each video (a track drawn twice adds nothing), summed
        for chosen in by_video.values():
            for k in LABELS:
                out[f"screen_time_{k}"] += _union([iv for i in chosen if self.kind[i] == k
                                                   for iv in self.intervals[i]])
            out["screen_time_any"] += _union([iv for i in chosen for iv in self.intervals[i]])
        ps = sum(out[f"person_seconds_{k}"] for k in LABELS)
        labelled = out["person_seconds_female"] + out["person_seconds_male"]
        out["unsure_share"] = out["person_seconds_unsure"] / ps if ps else float("nan")
        out["female_share"] = out["person_seconds_female"] / labelled if labelled else float("nan")
        return out

    def bootstrap(self, n_boot: int, seed: int) -> dict[str, list[float]]:
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(self.video == vi) for vi in range(self.n_videos)]
        groups = [g for g in groups if len(g)]
        if not groups:
            return {}
        draws = [self.figures(np.concatenate([rng.choice(g, len(g)) for g in groups]))
                 for _ in range(n_boot)]
        out = {}
        for key in draws[0]:
            vals = np.array([d[key] for d in draws], float)
            vals = vals[~np.isnan(vals)]
            if len(vals):
                out[key] = [round(float(np.percentile(vals, 2.5)), 3),
                            round(float(np.percentile(vals, 97.5)), 3)]
        return out


def _summary(videos: Sequence[VideoTracks], n_boot: int, seed: int) -> dict[str, Any]:
    tr = _Tracks(videos)
    fig = tr.figures(np.arange(len(tr.kind)))
    r = {k: (None if v != v else round(v, 4 if "share" in k else 3)) for k, v in fig.items()}
    return {
        "duration": round(sum(v.duration for v in videos), 3),
        "sampled_frames": sum(len(v.times) for v in videos),
        "tracks": {"total": len(tr.kind), **{k: int(r[f"tracks_{k}"]) for k in LABELS}},
        "screen_time": {k: r[f"screen_time_{k}"] for k in (*LABELS, "any")},
        "person_seconds": {k: r[f"person_seconds_{k}"] for k in LABELS},
        "unsure_share": r["unsure_share"], "female_share": r["female_share"],
        "flip_rate": round(tr.flips / tr.pairs, 4) if tr.pairs else None,
        "intervals": tr.bootstrap(n_boot, seed) if n_boot else {},
        "interval_method": f"95% percentile bootstrap over tracks within each video, {n_boot} "
                           f"draws, seed {seed}",
    }


def summarize_video(v: VideoTracks, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """One video's figures (see the module's docstring); seconds of video time."""
    return {"path": v.path, "error": v.error, "sampling": v.sampling,
            **_summary([v], n_boot, seed)}


def summarize_videos(videos: Sequence[VideoTracks], n_boot: int = N_BOOT, seed: int = 0
                     ) -> dict[str, Any]:
    """Every video's summary and the total over all of them (`total`: figures added up over
    the videos, intervals from tracks drawn within each video)."""
    return {"videos": [summarize_video(v, n_boot, seed) for v in videos],
            "total": {"videos": len(videos), "failed": sum(v.error is not None and not v.times
                                                           for v in videos),
                      **_summary(videos, n_boot, seed)}}


def summary_csv_row(s: dict[str, Any]) -> dict[str, Any]:
    """A video's summary as one CSV row (SUMMARY_CSV_FIELDS)."""
    flat: dict[str, Any] = {}
    for key, val in s.items():
        if isinstance(val, dict) and key != "intervals":
            flat.update({f"{key}_{k}": v for k, v in val.items()})
        elif key != "intervals":
            flat[key] = val
    for key in ("screen_time_female", "screen_time_male", "female_share"):
        lo_hi = s.get("intervals", {}).get(key)
        flat[f"{key}_lo"], flat[f"{key}_hi"] = lo_hi if lo_hi else (None, None)
    return {k: flat.get(k) for k in SUMMARY_CSV_FIELDS}


def summary_csv_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """summarize_videos' result as CSV rows: one per video, then the TOTAL row."""
    return ([summary_csv_row(s) for s in summary["videos"]]
            + [summary_csv_row({**summary["total"], "path": "TOTAL"})])


summarize_tracks = summarize_videos  # the public API's name (facegender.summarize_tracks)
