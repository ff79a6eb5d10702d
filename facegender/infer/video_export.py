"""Tracked faces laid over the video, to check by eye: ASS subtitles and an annotated MP4.

`write_ass`: Advanced SubStation Alpha subtitles (as inaFaceAnalyzer exports them) that VLC,
mpv or ELAN show over the original video: per track and sampled frame, a box drawn as a vector
shape and a caption "#id label p", moving linearly to the track's next box (\\move) until the
next sampled frame. Colours are the annotated photos' (annotate.COLOURS).

`write_annotated_video`: the video decoded again, every frame drawn with the boxes, labels and
track ids on screen at that time (the same boxes the frame rows give), encoded as H.264 MP4
(MPEG-4 Part 2 where this PyAV has no libx264). Both write through io.writers.replacing: a temp
file beside the target, renamed over it only when complete.
"""

from __future__ import annotations

import bisect
from fractions import Fraction
from pathlib import Path

from PIL import ImageDraw

from ..errors import require
from ..io.writers import replacing, write_text
from .annotate import COLOURS, _font
from .tracking import Track, TrackLabel
from .video_tracks import VideoTracks, box_at, on_screen


def _caption(t: Track, lab: TrackLabel) -> str:
    if lab.label is None:
        return f"#{t.id} unsure (short)"
    p = lab.prob_male if lab.label == "male" else 1 - lab.prob_male
    return f"#{t.id} {'unsure ' if lab.unsure else ''}{lab.label} {p:.0%}"


def _kind(lab: TrackLabel) -> str:
    return "unsure" if lab.unsure or lab.label is None else lab.label


def _ass_time(s: float) -> str:
    cs = max(0, round(s * 100))
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def _ass_colour(rgb: tuple[int, int, int]) -> str:
    return f"&H{rgb[2]:02X}{rgb[1]:02X}{rgb[0]:02X}&"


def ass_text(v: VideoTracks) -> str:
    """The subtitles of a tracked video as ASS text (play resolution = the video's size)."""
    w, h = (v.info.width, v.info.height) if v.info else (1280, 720)
    size = max(12, h // 30)
    head = [
        "[Script Info]", f"Title: facegender tracks of {Path(v.path).name}",
        "ScriptType: v4.00+", f"PlayResX: {w}", f"PlayResY: {h}", "WrapStyle: 2",
        "ScaledBorderAndShadow: yes", "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        f"Style: Face,Arial,{size},&H00FFFFFF,&H00FFFFFF,&H00000000,&H80000000,1,0,0,0,100,100,"
        "0,0,1,1,0,1,0,0,0,1", "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text"]
    events = []
    bord = max(1, h // 300)
    for k, on in sorted(on_screen(v).items()):
        start, end = v.times[k], v.times[k] + v.spans[k]
        for t, d, nxt in on:
            lab = v.labels[t.id]
            colour = _ass_colour(COLOURS[_kind(lab)])
            x0, y0, bw, bh = box_at(v, d, nxt, start)
            x1, y1, _, _ = box_at(v, d, nxt, end)
            move = (f"\\move({x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f})" if (x0, y0) != (x1, y1)
                    else f"\\pos({x0:.0f},{y0:.0f})")
            times = f"{_ass_time(start)},{_ass_time(end)}"
            shape = f"m 0 0 l {bw:.0f} 0 {bw:.0f} {bh:.0f} 0 {bh:.0f}"
            events.append(f"Dialogue: 0,{times},Face,track{t.id},0,0,0,,{{\\an7{move}\\p1"
                          f"\\bord{bord}\\shad0\\1a&HFF&\\3c{colour}}}{shape}{{\\p0}}")
            events.append(f"Dialogue: 1,{times},Face,track{t.id},0,0,0,,{{\\an1{move}"
                          f"\\3c{colour}\\bord2}}{_caption(t, lab)}")
    return "\n".join(head + events) + "\n"


def write_ass(v: VideoTracks, target: str | Path) -> Path:
    """Write the ASS subtitles of a tracked video to `target`."""
    return write_text(target, ass_text(v))


def write_annotated_video(v: VideoTracks, target: str | Path) -> Path:
    """Decode the video again and write it with every on-screen track drawn, as MP4."""
    av = require("av", "video")
    shown = on_screen(v)
    width = max(2, min(v.info.width, v.info.height) // 250)
    font = _font(max(12, v.info.height // 40))
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    rate = Fraction(v.info.rate).limit_denominator(1001)
    with replacing(target) as tmp, av.open(v.path) as src, av.open(str(tmp), "w",
                                                                   format="mp4") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = v.info.width // 2 * 2, v.info.height // 2 * 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"} if codec == "libx264" else {
            "qscale": "4"}
        for n, frame in enumerate(src.decode(src.streams.video[0])):
            ts = frame.time if frame.time is not None else n / v.info.rate
            img = frame.to_image()
            k = bisect.bisect_right(v.times, ts + 1e-6) - 1
            if k >= 0 and ts < v.times[k] + v.spans[k] + 1e-6:
                _draw(img, v, shown.get(k, []), ts, width, font)
            if img.size != (stream.width, stream.height):
                img = img.crop((0, 0, stream.width, stream.height))
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(target)


def _draw(img, v: VideoTracks, on: list, ts: float, width: int, font) -> None:
    draw = ImageDraw.Draw(img)
    for t, d, nxt in on:
        lab = v.labels[t.id]
        colour = COLOURS[_kind(lab)]
        x, y, w, h = box_at(v, d, nxt, ts)
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        text = _caption(t, lab)
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y - th - 2 * width if y - th - 2 * width >= 0 else y + h
        draw.rectangle([x, ty, x + tw + 2 * width, ty + th + 2 * width], fill=colour)
        draw.text((x + width, ty + width - tb[1]), text, fill=(255, 255, 255), font=font)
