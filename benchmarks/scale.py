"""Scaling out on this machine, measured in one run: prediction faces/s in one process vs Ray
with 1 and 2 workers, training img/s with 1 vs 2 torchrun processes, and each Ray worker's RSS
partition by partition over a long run (does it stay flat?).

    python benchmarks/scale.py [--faces 2000] [--rss-faces 20000] [--train-faces 2000]

Faces are celeba val crops (../shared/data) written once as WebDataset shards of 500. Every
figure is wall-clock for the whole job, start-up included, and also without it (Ray: from
the first finished partition; torchrun: the epoch's own img/s), so each engine's overhead is
stated rather than hidden. With 2 cores the second worker can at best double throughput; what
a cluster gives is projected from the per-worker rate (see docs/performance.md, "Scaling out").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "celeba-gender"


def make_shards(n: int, folder: Path) -> str:
    from facegender.io.shards import write_shards
    from facegender.io.sources import read_source, stratified_limit

    faces = read_source(DATA / "val.tar").samples
    if n > len(faces):  # the long RSS run goes round the val set again (train faces too)
        faces += read_source(DATA / "train.tar").samples
    faces = stratified_limit(faces, n, 0)
    return write_shards(faces, folder, maxcount=500).pattern


def single_process(pattern: str) -> dict:
    from facegender import Predictor

    t0 = time.perf_counter()
    pred = Predictor(threads=1)
    t_load = time.perf_counter() - t0
    n = 0
    for _ in pred.iter_predict(pattern, workers=1):
        n += 1
    total = time.perf_counter() - t0
    return {"images": n, "seconds": total, "faces_per_s": n / total,
            "faces_per_s_no_startup": n / (total - t_load)}


def ray_run(pattern: str, workers: int, out: Path) -> dict:
    import ray

    from facegender import predict_ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=300 * 2**20)
    t_init = time.perf_counter() - t0
    try:
        res = predict_ray(pattern, out, workers=workers, partition_size=500, progress=False)
    finally:
        ray.shutdown()
    total = time.perf_counter() - t0
    # Without start-up: the images over the busiest worker's time inside its partitions
    # (Ray's start, the actors' start and the model loads left out).
    pids = dict.fromkeys(w["pid"] for w in res.workers)
    busy = max(sum(w["seconds"] for w in res.workers if w["pid"] == pid) for pid in pids)
    return {"workers": workers, "images": res.images, "seconds": total, "ray_init_s": t_init,
            "faces_per_s": res.images / total, "faces_per_s_no_startup": res.images / busy,
            "partitions": res.workers}


def torchrun(pattern: str, procs: int, out: Path, faces: int) -> dict:
    recipe = dict(arch="mobilenetv3_small", input_size=64, epochs=1, batch_size=64, lr=3e-3,
                  augment="light", workers=0, threads=1, progress=False, limit=faces)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(procs)] if procs > 1 else [sys.executable]) + [
        str(ROOT / "tests" / "ddp_worker.py"), pattern, str(out / "model"), json.dumps(recipe)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    hist = (out / "model" / "history.csv").read_text().splitlines()
    row = dict(zip(hist[0].split(","), hist[1].split(","), strict=True))
    return {"procs": procs, "seconds": total, "img_per_s_epoch": float(row["train_img_per_s"]),
            "epoch_seconds": float(row["epoch_seconds"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=2000)
    ap.add_argument("--rss-faces", type=int, default=20000)
    ap.add_argument("--train-faces", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fg-scale-"))
    try:
        pattern = make_shards(a.faces, tmp / "shards")
        print(f"{a.faces} celeba val faces in shards of 500; fast model, face detection on, "
              f"1 thread per worker; {os.cpu_count()} CPUs\n")
        rows = []
        for rep in range(a.repeats):
            rows.append(("single process", single_process(pattern)))
            for w in (1, 2):
                rows.append((f"Ray, {w} worker{'s' * (w > 1)}",
                             ray_run(pattern, w, tmp / f"ray{w}-{rep}")))
        print(f"median of {a.repeats} runs (each run's figure in brackets)\n")
        print("| engine | images | wall s | faces/s (whole job) | faces/s (without start-up) |")
        print("| --- | --- | --- | --- | --- |")

        def cell(rs: list[dict], key: str, fmt: str) -> str:
            vals = [r[key] for r in rs]
            runs = ", ".join(format(v, fmt) for v in vals)
            return f"{statistics.median(vals):{fmt}}" + (f" ({runs})" if len(vals) > 1 else "")

        for name in dict.fromkeys(n for n, _ in rows):
            rs = [r for n, r in rows if n == name]
            print(f"| {name} | {rs[0]['images']} | {cell(rs, 'seconds', '.1f')} | "
                  f"{cell(rs, 'faces_per_s', '.0f')} | {cell(rs, 'faces_per_s_no_startup', '.0f')} |")
        ray1 = [r for n, r in rows if n.startswith("Ray, 1")]
        print(f"\nRay start-up (ray.init, local): {statistics.median(r['ray_init_s'] for r in ray1):.1f} s")

        print("\n| training | wall s | epoch img/s |")
        print("| --- | --- | --- |")
        for procs in (1, 2):
            rs = [torchrun(pattern, procs, tmp / f"train{procs}-{rep}", a.train_faces)
                  for rep in range(a.repeats)]
            print(f"| {procs} process{'es' * (procs > 1)} ({a.train_faces} faces, 64 px, batch "
                  f"64) | {cell(rs, 'seconds', '.1f')} | {cell(rs, 'img_per_s_epoch', '.0f')} |")

        if a.rss_faces:
            big = make_shards(a.rss_faces, tmp / "big")
            r = ray_run(big, 2, tmp / "raybig")
            print(f"\nRay, 2 workers, {r['images']} faces: {r['faces_per_s']:.0f} faces/s whole "
                  "job; RSS of each worker (MB) after each of its partitions:")
            for pid in dict.fromkeys(w["pid"] for w in r["partitions"]):
                series = [w["rss_mb"] for w in r["partitions"] if w["pid"] == pid]
                print(f"  worker {pid}: {len(series)} partitions, first {series[0]:.0f}, "
                      f"last {series[-1]:.0f}, max {max(series):.0f}; "
                      + " ".join(f"{x:.0f}" for x in series))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
