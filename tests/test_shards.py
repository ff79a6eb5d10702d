"""Tar shards in WebDataset layout: written from any source, read back by train / evaluate /
predict (and by webdataset itself), streamed in archive order, bad members named."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from conftest import extract_members, first_members

from facegender.cli import main
from facegender.errors import DataError
from facegender.io.shards import expand_braces, is_shard_tar, iter_shard, split_key, write_shards
from facegender.io.sources import Sample, read_source


@pytest.fixture
def tree(celeba, tmp_path) -> Path:
    """12 real val faces in male/ and female/, plus an HTML page saved as a .jpg."""
    names = first_members(celeba / "val.tar", 6, ("val/male/", "val/female/"))
    extract_members(celeba / "val.tar", names, tmp_path / "src")
    (tmp_path / "src" / "val" / "female" / "broken.jpg").write_bytes(b"<!DOCTYPE html><html>")
    return tmp_path / "src"


def test_write_then_read_back_every_face(tree, tmp_path):
    res = write_shards(tree, tmp_path / "shards", maxcount=5)
    assert res.samples == 12 and res.labels == {"male": 6, "female": 6}
    assert [sk.ref.endswith("broken.jpg") and "HTML" in sk.reason for sk in res.skipped] == [True]
    assert [f.name for f in res.files] == ["000000.tar", "000001.tar", "000002.tar"]
    assert res.pattern.endswith("{000000..000002}.tar")
    original = {s.ref: s for s in read_source(tree).samples}
    for spec in (res.pattern, tmp_path / "shards", str(tmp_path / "shards" / "*.tar"),
                 [str(f) for f in res.files]):
        back = read_source(spec)
        assert len(back.samples) == 12 and back.splits() == ["val"]
        for s in back.samples:
            with tarfile.open(s.path) as tf:  # the ref names the shard member
                key = split_key(s.ref.split("::")[1])[0]
                meta = json.loads(tf.extractfile(f"{key}.json").read())
            src = original[meta["ref"]]
            assert s.label == src.label and s.read_bytes() == src.read_bytes()
    index = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert index["samples"] == 12 and index["files"] == ["000000.tar", "000001.tar", "000002.tar"]


def test_webdataset_reads_our_shards_and_we_read_its(tree, tmp_path):
    res = write_shards(tree, tmp_path / "ours", maxcount=100, shuffle=1)
    got = list(wds.WebDataset(res.pattern, shardshuffle=False))
    assert len(got) == 12 and all({"jpg", "json"} <= set(x) for x in got)
    assert sorted(json.loads(x["json"])["label"] for x in got) == ["female"] * 6 + ["male"] * 6

    face = read_source(tree).samples[0].read_bytes()
    theirs = tmp_path / "theirs.tar"
    with wds.TarWriter(str(theirs)) as sink:
        sink.write({"__key__": "a", "jpg": face, "json": {"label": "woman", "groups": {"age": 30}}})
        sink.write({"__key__": "b", "jpg": face, "gender": "male"})
        sink.write({"__key__": "c", "jpg": face, "cls": 1})
        sink.write({"__key__": "d", "json": {"label": "male"}})
        sink.write({"__key__": "e", "jpg": face})
    assert is_shard_tar(theirs)
    items = {(x.ref.split("::")[1]): x for x in iter_shard(theirs)}
    assert items["a.jpg"].label == "female" and items["a.jpg"].groups == {"age": 30}
    assert items["b.jpg"].label == "male"
    assert "numeric class code" in items["c.jpg"].reason
    assert "no image in this sample" in items["d"].reason
    assert "no label" in items["e.jpg"].reason
    unlabelled = [x for x in iter_shard(theirs, labelled=False) if isinstance(x, Sample)]
    assert len(unlabelled) == 4  # prediction takes every sample that has an image
    # gzip-compressed shards: read in one pass too, bytes kept
    gz = tmp_path / "theirs.tar.gz"
    with tarfile.open(gz, "w:gz") as tf:
        for name, data in (("k.jpg", face), ("k.json", b'{"label": "female"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    [s] = read_source(gz).samples
    assert s.label == "female" and s.data == face


def test_shards_stream_in_archive_order(tree, tmp_path):
    """A shard is read as a stream: its first samples come out before a damaged tail is met."""
    res = write_shards(tree, tmp_path / "s", maxcount=100)
    whole = res.files[0].read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: len(whole) // 2])
    it = iter_shard(cut)
    first = next(it)
    assert isinstance(first, Sample) and first.ref.endswith("000000000.jpg")
    with pytest.raises(DataError, match="cut.tar: cannot read shard"):
        list(it)
    assert [s.ref.rsplit("::", 1)[1] for s in read_source(res.files[0]).samples][:3] == [
        "000000000.jpg", "000000001.jpg", "000000002.jpg"]


def test_brace_ranges_and_class_tree_tars():
    assert expand_braces("s/{008..011}.tar") == ["s/008.tar", "s/009.tar", "s/010.tar", "s/011.tar"]
    assert expand_braces("a{1..2}b{0..1}") == ["a1b0", "a1b1", "a2b0", "a2b1"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(DataError, match="backwards"):
        expand_braces("{5..1}.tar")
    with pytest.raises(DataError, match="missing"):
        read_source("/nonexistent/{000000..000001}.tar")
    assert split_key("x/y.seg.png") == ("x/y", "seg.png")


def test_tar_of_class_folders_is_not_a_shard(celeba):
    assert not is_shard_tar(celeba / "val.tar")


def test_predict_and_evaluate_read_shards(tree, tmp_path):
    from facegender import Predictor, evaluate

    res = write_shards(tree, tmp_path / "s", maxcount=5)
    pred = Predictor("fast", detect=False)
    direct = pred.predict(str(tree))
    via = pred.predict(res.pattern)
    assert [r.ok for r in direct].count(False) == 1  # the HTML page, named
    assert len(via) == 12 and all(r.ok for r in via)
    p_direct = sorted(r.faces[0].prob_male for r in direct if r.ok)
    p_via = sorted(r.faces[0].prob_male for r in via)
    assert p_direct == pytest.approx(p_via, abs=1e-6)
    report = evaluate(res.pattern, "fast", detect=False)
    assert report.metrics["n"] == 12


def test_cli_shard_verb(tree, tmp_path, capsys):
    code = main(["shard", str(tree), "--out", str(tmp_path / "c"), "--maxcount", "7",
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1  # one file skipped, and named
    assert "12 images (female=6, male=6) in 2 shards" in out and "{000000..000001}.tar" in out
    assert "broken.jpg" in err and "HTML" in err
    assert main(["shard", str(tree), "--out", str(tmp_path / "c")]) == 2  # refuses to overwrite
