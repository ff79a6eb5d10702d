"""Output targets: what a target is before and after a write (kind and bytes), for a regular
file, a symlink, a FIFO, a character device and stdout; an input named as an output, a folder
where a file is expected and a missing folder refused before any work (exit 2, one line); CSV
cells a spreadsheet would run as formulas neutralised, JSON keeping the raw name."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from facegender.cli import main
from facegender.io.targets import REPLACE, STREAM, TargetError, file_target, folder_target
from facegender.io.writers import RowWriter

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "fairface_0004.jpg"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ROWS = [{"path": "a.jpg", "label": "male"}, {"path": "b.jpg", "label": "female"}]
EXPECTED = b"path,label\r\na.jpg,male\r\nb.jpg,female\r\n"


def _write(target) -> None:
    with RowWriter(target, "csv") as w:
        w.write(ROWS)


def _kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return next(k for k, test in (("link", stat.S_ISLNK), ("fifo", stat.S_ISFIFO),
                                  ("chr", stat.S_ISCHR), ("dir", stat.S_ISDIR),
                                  ("file", stat.S_ISREG)) if test(mode))


def test_regular_file_is_replaced_whole(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old,rows\n")
    before = os.stat(out).st_ino
    assert file_target(out).how == REPLACE
    _write(out)
    assert _kind(out) == "file" and out.read_bytes() == EXPECTED
    assert os.stat(out).st_ino != before  # a new file renamed over it, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def test_symlink_is_resolved_and_stays_a_link(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    _write(link)
    assert _kind(link) == "link" and os.readlink(link) == str(real)
    assert real.read_bytes() == EXPECTED
    dangling = tmp_path / "dangling.csv"  # a link to a file not there yet: the file is made
    dangling.symlink_to(tmp_path / "made.csv")
    _write(dangling)
    assert _kind(dangling) == "link" and (tmp_path / "made.csv").read_bytes() == EXPECTED


def test_fifo_is_streamed_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert file_target(fifo).how == STREAM
    _write(fifo)
    reader.join(10)
    assert got == [EXPECTED]  # the reader got every row (it got 0 bytes when renamed over)
    assert _kind(fifo) == "fifo"


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")
def test_character_devices_are_written_in_place(tmp_path):
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    rdev = os.stat(null).st_rdev
    _write(null)
    assert _kind(null) == "chr" and os.stat(null).st_rdev == rdev
    full = tmp_path / "full"  # a device that refuses every byte: one line, the node kept
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    with pytest.raises(TargetError, match="No space left"):
        _write(full)
    assert _kind(full) == "chr" and os.stat(full).st_rdev == os.makedev(1, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "null"]


def test_dev_stdout_is_the_process_stdout(tmp_path):
    code = ("from facegender.io.writers import RowWriter\n"
            f"w = RowWriter('/dev/stdout', 'csv'); w.write({ROWS!r}); w.close()")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == EXPECTED, r.stderr
    redirected = tmp_path / "shell_redirect.csv"  # `> file`: rows land in that very file
    with open(redirected, "wb") as fh:
        fh.write(b"kept\n")
        fh.flush()
        inode = os.fstat(fh.fileno()).st_ino
        r = subprocess.run([sys.executable, "-c", code], env=ENV, stdout=fh,
                           stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr
    assert os.stat(redirected).st_ino == inode and redirected.read_bytes() == b"kept\n" + EXPECTED
    assert os.path.islink("/dev/stdout")


def test_folder_and_missing_folder_are_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(TargetError, match="is a folder"):
        _write(tmp_path / "d")
    with pytest.raises(TargetError, match="does not exist; create it first"):
        _write(tmp_path / "nowhere" / "out.csv")
    assert not (tmp_path / "nowhere").exists()  # never created silently
    assert (folder_target(tmp_path / "new_folder") == tmp_path / "new_folder")
    with pytest.raises(TargetError, match="is a file, not a folder"):
        folder_target(FACE)


@pytest.mark.parametrize("flag", ["--csv", "--json", "--annotate", "--save-crops"])
def test_an_input_is_never_its_own_output(tmp_path, capsys, flag):
    photo = tmp_path / "v.jpg"
    shutil.copy(FACE, photo)
    before = photo.read_bytes()
    assert main(["predict", str(photo), flag, str(photo)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is also an input" in err and str(photo) in err, err
    assert "Traceback" not in err and photo.read_bytes() == before
    alias = tmp_path / "alias.jpg"  # another name for the same file (a hard link)
    os.link(photo, alias)
    assert main(["predict", str(alias), "--csv", str(photo)]) == 2
    assert photo.read_bytes() == before and _kind(photo) == "file"


def test_other_verbs_refuse_bad_folders_before_work(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "male").mkdir(parents=True)
    shutil.copy(FACE, data / "male" / "a.jpg")
    assert main(["train", str(data), "--out", str(data)]) == 2  # the model over its own data
    assert "is also an input" in capsys.readouterr().err
    assert main(["evaluate", str(data), "--report", str(FACE)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["shard", str(data), "--out", str(data / "male" / "a.jpg")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["predict", str(FACE), "--csv", str(tmp_path / "no" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()


HOSTILE_NAMES = ["=HYPERLINK(\"http://x\",\"y\").jpg", "+1+2.jpg", "-3.jpg", "@SUM(A1).jpg",
                 "\tTAB.jpg", "\rCR.jpg", "plain.jpg"]


def test_csv_formula_cells_neutralised_json_raw(tmp_path):
    rows = [{"path": n, "label": "male"} for n in HOSTILE_NAMES]
    out_csv, out_json = tmp_path / "o.csv", tmp_path / "o.json"
    for target, fmt in ((out_csv, "csv"), (out_json, "json")):
        with RowWriter(target, fmt) as w:
            w.write(rows)
    cells = [r["path"] for r in csv.DictReader(out_csv.open(newline=""))]
    assert cells[:-1] == ["'" + n for n in HOSTILE_NAMES[:-1]] and cells[-1] == "plain.jpg"
    assert [r["path"] for r in json.loads(out_json.read_text())] == HOSTILE_NAMES
    from facegender.infer.records import CSV_FIELDS, unflatten

    back = unflatten({**{k: "" for k in CSV_FIELDS}, "path": cells[0]})
    assert back["path"] == HOSTILE_NAMES[0]  # read back, the apostrophe goes again


def test_cli_csv_of_a_formula_named_photo(tmp_path):
    shutil.copy(FACE, tmp_path / "=1+1.jpg")
    r = subprocess.run([sys.executable, "-m", "facegender", "predict", "=1+1.jpg", "--csv",
                        "o.csv", "--json", "o.json", "-q"], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 image, 1 face, 0 failed" in r.stderr  # counts in the right number
    assert next(csv.DictReader((tmp_path / "o.csv").open(newline="")))["path"] == "'=1+1.jpg"
    assert json.loads((tmp_path / "o.json").read_text())[0]["path"] == "=1+1.jpg"


def test_a_file_inside_an_input_folder_or_both_outputs_in_one_file(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(FACE, photos / "a.jpg")
    (photos / "old.csv").write_text("kept\n")  # read as an input when the folder is
    assert main(["predict", str(photos), "--csv", str(photos / "old.csv")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert (photos / "old.csv").read_text() == "kept\n"
    out = tmp_path / "out.txt"
    assert main(["predict", str(FACE), "--csv", str(out), "--json", str(out)]) == 2
    assert "give each its own name" in capsys.readouterr().err and not out.exists()
