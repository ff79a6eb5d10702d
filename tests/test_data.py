"""Data sources -> Samples: layouts, aliases, manifests, HF datasets, and every bad-input error."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender.errors import DataError
from facegender.io.sources import read_source, require_both_classes, stratified_limit, stratified_split


def _jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _tree(root: Path, layout: dict[str, int]) -> Path:
    for folder, n in layout.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{i}.jpg").write_bytes(_jpeg(i))
    return root


def test_flat_tree(tmp_path):
    data = read_source(_tree(tmp_path, {"male": 3, "female": 2}))
    assert data.counts() == {"male": 3, "female": 2}
    assert data.splits() == []


def test_split_tree_case_insensitive_and_aliases(tmp_path):
    data = read_source(_tree(tmp_path, {"Train/Men": 3, "Train/WOMEN": 2, "val/man": 1,
                                        "val/woman": 1}))
    assert data.counts("train") == {"male": 3, "female": 2}
    assert data.counts("val") == {"male": 1, "female": 1}
    assert any("alias" in n for n in data.notes)  # aliases are reported, not silent


def test_tar_read_in_place(tmp_path):
    tar_path = tmp_path / "faces.tar"
    with tarfile.open(tar_path, "w") as tf:
        for name in ("train/male/a.jpg", "train/female/b.jpg", "val/male/c.jpg"):
            payload = _jpeg(len(name))
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    data = read_source(tar_path)
    assert len(data.samples) == 3
    s = next(x for x in data.samples if x.ref.endswith("a.jpg"))
    assert s.label == "male" and s.split == "train" and s.ref == f"{tar_path}::train/male/a.jpg"
    assert s.read_bytes() == _jpeg(len("train/male/a.jpg"))


def test_csv_manifest_keeps_groups(tmp_path):
    _tree(tmp_path / "img", {"x": 3})
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "gender", "age_group", "skin"])
        w.writerow(["img/x/0.jpg", "Male", "20-29", "light"])
        w.writerow(["img/x/1.jpg", "woman", "30-39", "dark"])
        w.writerow(["img/x/2.jpg", "robot", "40-49", "dark"])
    data = read_source(tmp_path / "m.csv")
    assert [s.label for s in data.samples] == ["male", "female"]
    assert data.samples[0].groups == {"age_group": "20-29", "skin": "light"}
    assert len(data.skipped) == 1 and "robot" in data.skipped[0].reason


def test_real_manifest_reads_from_tar_beside_it(fairface):
    data = read_source(fairface / "labels.csv")
    assert data.counts() == {"male": 270, "female": 270}
    assert len({s.groups["age_group"] for s in data.samples}) == 9
    assert data.samples[0].read_bytes()[:2] == b"\xff\xd8"  # a JPEG, read from the tar


def test_hf_local_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    _tree(tmp_path / "hf" / "train", {"male": 3, "female": 3})
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "hf"))
    ds.save_to_disk(str(tmp_path / "saved"))
    data = read_source(tmp_path / "saved")
    assert data.counts("train") == {"male": 3, "female": 3}
    assert all(s.read_bytes()[:2] == b"\xff\xd8" for s in data.samples)


def test_empty_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_source(tmp_path / "empty")


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_source(tmp_path / "nope")


def test_unknown_folder_names_are_listed(tmp_path):
    _tree(tmp_path, {"cats": 2, "dogs": 1})
    with pytest.raises(DataError) as exc:
        read_source(tmp_path)
    assert "'cats' (2 images)" in str(exc.value) and "'dogs'" in str(exc.value)


def test_stray_folder_next_to_classes(tmp_path):
    _tree(tmp_path, {"male": 2, "female": 2, "unsorted": 1})
    with pytest.raises(DataError, match="unsorted"):
        read_source(tmp_path)


def test_empty_class_folder(tmp_path):
    _tree(tmp_path, {"male": 2})
    (tmp_path / "female").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_source(tmp_path)


def test_single_class_refused_for_training(tmp_path):
    data = read_source(_tree(tmp_path, {"male": 4}))
    with pytest.raises(DataError, match="no 'female' images.*male=4"):
        require_both_classes(data.samples, "train")


def test_non_image_files_are_reported(tmp_path):
    _tree(tmp_path, {"male": 2, "female": 2})
    (tmp_path / "male" / "notes.txt").write_text("hi")
    data = read_source(tmp_path)
    assert len(data.samples) == 4
    assert [s.reason for s in data.skipped] == ["not an image file extension"]


def test_unlabelled_folder_for_prediction(tmp_path):
    _tree(tmp_path, {"holiday": 2})
    assert len(read_source(tmp_path, labelled=False).samples) == 2


def test_glob_and_list(tmp_path):
    _tree(tmp_path, {"a": 2, "b": 1})
    assert len(read_source(str(tmp_path / "*" / "*.jpg"), labelled=False).samples) == 3
    assert len(read_source([tmp_path / "a", tmp_path / "b"], labelled=False).samples) == 3


def test_stratified_split_and_limit_are_seeded_and_balanced(tmp_path):
    data = read_source(_tree(tmp_path, {"male": 40, "female": 10}))
    keep, held = stratified_split(data.samples, 0.2, seed=1)
    assert sorted(s.label for s in held).count("female") == 2 and len(held) == 10
    assert [s.ref for s in stratified_split(data.samples, 0.2, seed=1)[1]] == [s.ref for s in held]
    small = stratified_limit(data.samples, 10, seed=0)
    assert len(small) == 10 and sum(s.label == "female" for s in small) == 2
