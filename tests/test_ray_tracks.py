"""Videos tracked on Ray (one local Ray session of 2 CPUs for the module), one task per video:
two tiny clips made here from real faces (examples/) and a corrupt one. Each video's tracks and
summary equal single-process tracking's; the corrupt one is one error row while the others
finish; a rerun skips the videos already done; the CLI writes predict --track's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("av")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")

from clips import encode_clip, two_people  # noqa: E402

from facegender.cli import main  # noqa: E402
from facegender.infer.records import CSV_FIELDS  # noqa: E402
from facegender.infer.video_summary import summarize_videos  # noqa: E402
from facegender.infer.video_tracks import TRACK_COLUMNS, frame_rows, track  # noqa: E402
from facegender.scale.ray_tracks import from_timeline, timeline_doc, track_ray  # noqa: E402

EVERY = 0.5


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """a.mp4: a woman and a man for 3 s; b.mp4: the woman alone for 2 s; c.mp4: not a video
    inside; notes.txt: no video at all."""
    folder = tmp_path_factory.mktemp("rayvideos") / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(encode_clip(two_people(3)))
    (folder / "b.mp4").write_bytes(encode_clip(two_people(2, man=False)))
    (folder / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(3000))
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.fixture(scope="module")
def single(videos) -> dict[str, dict]:
    """Single-process tracking's summaries, by file name."""
    done = track([videos / "a.mp4", videos / "b.mp4"], every=EVERY)
    return {Path(s["path"]).name: s for s in summarize_videos(done, n_boot=50)["videos"]}


@pytest.fixture(scope="module")
def first_run(ray_address, videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("rayout") / "out"
    res = track_ray(videos, out, workers=2, every=EVERY, n_boot=50, progress=False)
    return out, res


def _by_name(res) -> dict[str, dict]:
    return {Path(s["path"]).name: s for s in res.summary["videos"]}


def test_each_video_is_one_task_and_equals_single_process(first_run, single):
    out, res = first_run
    assert (res.videos, res.skipped_videos, res.failed) == (3, 0, 1)
    assert sorted(Path(r["path"]).name for r in res.workers) == ["a.mp4", "b.mp4", "c.mp4"]
    (rest,) = res.left_out  # what --track leaves out: the folder's other files
    assert [Path(s.ref).name for s in rest.samples] == ["notes.txt"]
    got = _by_name(res)
    assert got["a.mp4"]["tracks"] == {"total": 2, "female": 1, "male": 1, "unsure": 0}
    assert got["b.mp4"]["tracks"] == {"total": 1, "female": 1, "male": 0, "unsure": 0}
    assert got["a.mp4"]["screen_time"] == {"female": 3.0, "male": 3.0, "unsure": 0.0, "any": 3.0}
    for name in ("a.mp4", "b.mp4"):
        assert got[name] == single[name]
    for i in range(3):  # each video's own files
        for suffix in (".frames.parquet", ".tracks.csv", ".json"):
            assert (out / f"video-{i:05d}{suffix}").is_file()
    assert not list(out.glob(".video-*"))  # no temporary file left


def test_corrupt_video_is_one_error_row_and_the_others_finish(first_run):
    out, res = first_run
    idx = {Path(s["path"]).name: i for i, s in enumerate(res.summary["videos"])}
    bad = pq.read_table(out / f"video-{idx['c.mp4']:05d}.frames.parquet").to_pylist()
    assert len(bad) == 1 and bad[0]["error"].startswith("cannot read the video")
    assert bad[0]["face"] is None and bad[0]["track_id"] is None
    good = pq.read_table(out / f"video-{idx['a.mp4']:05d}.frames.parquet")
    assert good.schema.names == CSV_FIELDS + TRACK_COLUMNS
    rows = good.to_pylist()
    assert len(rows) == 12 and all(r["track_id"] is not None for r in rows)
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in table] == ["a.mp4", "b.mp4", "c.mp4", "TOTAL"]
    assert table[2]["error"].startswith("cannot read the video") and table[2]["tracks_total"] == "0"
    assert float(table[3]["screen_time_female"]) == 5.0 and table[3]["tracks_total"] == "3"
    assert json.loads((out / "summary.json").read_text())["total"]["failed"] == 1


def test_rerun_skips_finished_videos(ray_address, first_run, videos, tmp_path):
    out, res = first_run
    again = track_ray(videos, out, workers=2, every=EVERY, n_boot=50, progress=False)
    assert (again.skipped_videos, again.workers) == (3, [])  # nothing redone, Ray not used
    assert again.summary == res.summary
    # a job killed before b.mp4 was done: only b.mp4 is tracked again
    idx = {Path(s["path"]).name: i for i, s in enumerate(res.summary["videos"])}
    (out / f"video-{idx['b.mp4']:05d}.json").unlink()
    kept = (out / f"video-{idx['a.mp4']:05d}.json").stat().st_mtime_ns
    again = track_ray(videos, out, workers=2, every=EVERY, n_boot=50, progress=False)
    assert again.skipped_videos == 2
    assert [Path(r["path"]).name for r in again.workers] == ["b.mp4"]
    assert (out / f"video-{idx['a.mp4']:05d}.json").stat().st_mtime_ns == kept
    assert again.summary == res.summary
    with pytest.raises(Exception, match="other options"):  # another sampling is another job
        track_ray(videos, out, workers=2, every=1.0, progress=False)


def test_timeline_survives_json(videos):
    (v,) = track(videos / "a.mp4", every=EVERY)
    back = from_timeline(json.loads(json.dumps(timeline_doc(v))))
    assert summarize_videos([back], n_boot=20) == summarize_videos([v], n_boot=20)
    assert list(frame_rows(back)) == list(frame_rows(v))
    assert [t.thumbnail for t in back.tracks] == [t.thumbnail for t in v.tracks]


def test_cli_engine_ray_track(ray_address, videos, tmp_path, capsys):
    out = tmp_path / "out"
    files = {k: tmp_path / k for k in ("frames.csv", "tracks.csv", "summary.csv", "t.html")}
    code = main(["predict", str(videos / "a.mp4"), str(videos / "b.mp4"), "--engine", "ray",
                 "--track", "--every", str(EVERY), "--out", str(out), "-q", "--csv",
                 str(files["frames.csv"]), "--tracks-csv", str(files["tracks.csv"]),
                 "--summary-csv", str(files["summary.csv"]), "--timeline", str(files["t.html"])])
    assert code == 0, capsys.readouterr().err
    with open(files["frames.csv"], newline="") as f:
        frames = list(csv.DictReader(f))
    assert list(frames[0]) == CSV_FIELDS + TRACK_COLUMNS and len(frames) == 12 + 4
    with open(files["tracks.csv"], newline="") as f:
        assert sorted(t["label"] for t in csv.DictReader(f)) == ["female", "female", "male"]
    assert files["summary.csv"].read_text() == (out / "summary.csv").read_text()
    assert "2 videos in" in capsys.readouterr().err
    # the timeline, drawn from the tracks rebuilt from each video's JSON: a face per track
    assert files["t.html"].read_text().count('<image href="data:image/jpeg;base64,') == 3


def test_cli_engine_ray_track_writes_subtitles_and_annotated_videos(ray_address, videos, tmp_path,
                                                                    capsys):
    """--subtitles and --annotate on the Ray engine: the files the local engine writes for the
    same videos, from each video's rebuilt timeline (the subtitles byte for byte; the MP4 with
    every frame of the video)."""
    import av

    args = [str(videos / "a.mp4"), str(videos / "b.mp4"), "--track", "--every", str(EVERY), "-q"]
    local, ray = tmp_path / "local", tmp_path / "ray"
    for where, extra in ((local, []), (ray, ["--engine", "ray", "--out", str(tmp_path / "out")])):
        code = main(["predict", *args, *extra, "--subtitles", str(where / "subs"),
                     "--annotate", str(where / "mp4"), "--format", "json"])
        assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    for name, captions in (("a", 6 * 2), ("b", 4)):  # a caption per track and sampled frame
        ass = (ray / "subs" / f"{name}.ass").read_text()
        assert ass == (local / "subs" / f"{name}.ass").read_text()
        assert ass.count("Dialogue: 1,") == captions and "female" in ass
        with av.open(str(ray / "mp4" / f"{name}.tracks.mp4")) as got, \
                av.open(str(videos / f"{name}.mp4")) as src:
            assert got.streams.video[0].frames == src.streams.video[0].frames > 0
    # photos drawn: still the local engine's
    assert main(["predict", str(videos / "notes.txt"), "--engine", "ray", "--out",
                 str(tmp_path / "o2"), "--annotate", str(tmp_path / "ann")]) != 0
    assert "run with the local engine only" in capsys.readouterr().err
