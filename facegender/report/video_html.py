"""Tracked videos as one self-contained HTML page: the summary table, and per video a timeline
of who is on screen when (a row per track, its stretches coloured by its label) with each
track's best-seen face beside it. No external files, CSS or JavaScript: it opens offline and
can be mailed. Colours are the annotated photos' (infer.annotate.COLOURS)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..infer.annotate import COLOURS
from ..infer.video_summary import LABELS, summarize_videos
from ..infer.video_tracks import VideoTracks
from ..io.writers import write_text

WIDTH = 900  # px of the time axis
ROW = 34     # px per track row (the thumbnail's height + a margin)


def _rgb(kind: str) -> str:
    return "rgb({},{},{})".format(*COLOURS[kind])


def _kind(v: VideoTracks, track_id: int) -> str:
    lab = v.labels[track_id]
    return "unsure" if lab.unsure or lab.label is None else lab.label


def _ci(s: dict[str, Any], key: str) -> str:
    iv = s.get("intervals", {}).get(key)
    return f" <small>[{iv[0]:g}, {iv[1]:g}]</small>" if iv else ""


def _summary_rows(summary: dict[str, Any]) -> str:
    rows = []
    for s in [*summary["videos"], {**summary["total"], "path": "all videos"}]:
        cells = [html.escape(Path(s["path"]).name if s["path"] != "all videos" else s["path"])]
        cells.append(f"{s['duration']:g}")
        for k in LABELS[:2]:
            cells.append(f"{s['screen_time'][k]:g}{_ci(s, f'screen_time_{k}')}")
        for k in LABELS[:2]:
            cells.append(f"{s['person_seconds'][k]:g}{_ci(s, f'person_seconds_{k}')}")
        cells.append(" / ".join(str(s["tracks"][k]) for k in LABELS))
        cells.append("–" if s["unsure_share"] is None else f"{s['unsure_share']:.1%}")
        cells.append("–" if s["female_share"] is None else
                     f"{s['female_share']:.1%}{_ci(s, 'female_share')}")
        cells.append("–" if s["flip_rate"] is None else f"{s['flip_rate']:.1%}")
        if s.get("error"):
            cells[0] += f"<br><small class=err>{html.escape(str(s['error']))}</small>"
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


def _timeline(v: VideoTracks) -> str:
    """An SVG: a time axis, then one row per track with its stretches on screen."""
    end = max(v.duration, max((v.times[-1] + v.spans[-1]) if v.times else 0.0, 1e-6))
    x0 = 150  # left margin: the thumbnail and the caption

    def x(t: float) -> float:
        return x0 + WIDTH * t / end

    height = 24 + ROW * len(v.tracks)
    out = [f'<svg width="{x0 + WIDTH + 10}" height="{height}" role="img" '
           f'aria-label="timeline of {html.escape(Path(v.path).name)}">']
    step = next(s for s in (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 1e9)
                if end / s <= 12)
    t = 0.0
    while t <= end:
        out.append(f'<line x1="{x(t):.1f}" y1="14" x2="{x(t):.1f}" y2="{height}" '
                   'stroke="#ddd"/>'
                   f'<text x="{x(t):.1f}" y="11" font-size="10" text-anchor="middle">'
                   f'{t:g}s</text>')
        t += step
    for k in v.cuts:
        out.append(f'<line x1="{x(v.times[k]):.1f}" y1="14" x2="{x(v.times[k]):.1f}" '
                   f'y2="{height}" stroke="#000" stroke-dasharray="3,3"><title>cut at '
                   f'{v.times[k]:g} s</title></line>')
    for row, track in enumerate(v.tracks):
        y = 20 + ROW * row
        lab = v.labels[track.id]
        colour = _rgb(_kind(v, track.id))
        if track.thumbnail:
            src = "data:image/jpeg;base64," + base64.b64encode(track.thumbnail).decode()
            out.append(f'<image href="{src}" x="0" y="{y}" width="30" height="30"/>')
        caption = f"#{track.id} {lab.label or 'too short'}" + (" (unsure)" if lab.unsure
                                                               and lab.label else "")
        out.append(f'<text x="36" y="{y + 19}" font-size="12">{html.escape(caption)}</text>')
        for s, e in v.intervals(track):
            out.append(f'<rect x="{x(s):.1f}" y="{y + 6}" width="{max(1.0, x(e) - x(s)):.1f}" '
                       f'height="18" fill="{colour}"><title>#{track.id} {s:g}-{e:g} s, '
                       f'p(male) {lab.prob_male:.2f}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def timeline_html(videos: Sequence[VideoTracks], summary: dict[str, Any] | None = None) -> str:
    """The page as text; `summary` defaults to summarize_videos(videos)."""
    summary = summary or summarize_videos(videos)
    legend = " ".join(f'<span style="background:{_rgb(k)};color:#fff;padding:1px 6px">{k}'
                      "</span>" for k in LABELS)
    parts = ["<!doctype html><html><head><meta charset=utf-8><title>facegender: screen time"
             "</title><style>body{font-family:sans-serif;margin:24px}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child{text-align:left}.err{color:#b00}</style></head><body>",
             "<h1>Screen time by label</h1>",
             f"<p>{legend}. Seconds of video time; a track counts under its own one label. "
             f"Intervals: {html.escape(summary['total']['interval_method'])}.</p>",
             "<table><tr><th>video</th><th>seconds</th><th>women on screen, s</th>"
             "<th>men on screen, s</th><th>women person-s</th><th>men person-s</th>"
             "<th>tracks f / m / unsure</th><th>unsure share</th><th>women's share</th>"
             "<th>frame flip rate</th></tr>", _summary_rows(summary), "</table>"]
    for v in videos:
        parts.append(f"<h2>{html.escape(v.path)}</h2>")
        if not v.times:
            parts.append(f"<p class=err>{html.escape(v.error or 'no frames')}</p>")
            continue
        parts.append(f"<p>{html.escape(v.sampling)}; {len(v.times)} frames classified, "
                     f"{len(v.tracks)} tracks, {len(v.cuts)} cuts (dashed)"
                     + (f"; <span class=err>{html.escape(v.error)}</span>" if v.error else "")
                     + "</p>")
        parts.append(_timeline(v))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_timeline(videos: Sequence[VideoTracks], target: str | Path,
                   summary: dict[str, Any] | None = None) -> Path:
    """Write the page to `target` (whole, through io.writers.write_text)."""
    return write_text(target, timeline_html(videos, summary))
