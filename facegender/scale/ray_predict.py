"""Batch prediction on Ray: `facegender predict --engine ray SOURCE --out DIR`.

The driver cuts the source into partitions (partitions.py: a shard each, or runs of images);
Ray Data streams them through `map_batches` to a pool of actors, each holding one Predictor
(ONNX Runtime, the model loaded once per worker). A worker reads its partition's bytes itself,
finds and classifies the faces, and writes the rows as ``part-NNNNN.parquet`` (the columns of
the single-process CSV), renamed into place only when whole; the driver sees one small summary
row per partition. A restarted job skips the partitions already written. Ray is started
locally unless `ray_address` names a running cluster, whose workers must see the same paths.
"""

from __future__ import annotations

import os
import sys
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError, require
from ..io.progress import progress_bar
from .partitions import DONE_NAME, Partition, check_plan, part_name, plan_partitions


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _columns() -> list[tuple[str, str]]:
    """(column, arrow type name) of a flattened face record: the single-process CSV's columns,
    typed from the record's own field annotations."""
    from ..infer.records import BOX_KEYS, CSV_FIELDS, RECORD

    kinds = {}
    for f in RECORD:
        name = f.name
        args = [a for a in typing.get_args(f.type) or (f.type,) if a is not type(None)]
        kinds[name] = ("int64" if args == [int] else "float64" if args == [float]
                       else "bool_" if args == [bool] else "string")
    for k in BOX_KEYS:
        kinds[f"box_{k}"] = "float64"
    return [(c, kinds[c]) for c in CSV_FIELDS]


def schema():
    """The Arrow schema of every part file (explicit, so a part whose boxes are all empty
    still has the same column types as the others)."""
    pa = require("pyarrow", "scale")
    return pa.schema([(c, getattr(pa, t)()) for c, t in _columns()])


class PartitionPredictor:
    """A Ray Data actor: one Predictor per worker process; each call predicts whole partitions
    and writes each one's Parquet file."""

    def __init__(self, model: str, out: str, options: dict[str, Any], batch_size: int) -> None:
        from ..infer.predictor import Predictor

        self.predictor = Predictor(model, **options)
        self.out, self.batch_size = Path(out), batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        summary: dict[str, list] = {"partition": [], "images": [], "rows": [], "failed": [],
                                    "seconds": [], "pid": [], "rss_mb": []}
        for text in batch["partition"]:
            t0 = time.perf_counter()
            part = Partition.from_json(str(text))
            n, rows, failed = self._run(part)
            summary["partition"].append(part.index)
            summary["images"].append(n)
            summary["rows"].append(rows)
            summary["failed"].append(failed)
            summary["seconds"].append(time.perf_counter() - t0)
            summary["pid"].append(os.getpid())
            summary["rss_mb"].append(rss_mb())
        return summary

    def _run(self, part: Partition) -> tuple[int, int, int]:
        pq = require("pyarrow.parquet", "scale")
        pa = require("pyarrow", "scale")
        from ..infer.records import flatten

        data = part.source_data()
        rows: list[dict[str, Any]] = []
        failed = 0
        for res in self.predictor.iter_predict(data, batch_size=self.batch_size, workers=1):
            rows += [flatten(r) for r in res.records()]
            failed += res.error is not None and not res.ignored
        table = pa.Table.from_pylist(rows, schema=schema())
        final = self.out / part_name(part.index)
        tmp = self.out / f".{final.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)  # whole or absent: a killed job never leaves half a partition
        return len(data.samples) + len(data.skipped) + len(data.ignored), len(rows), failed


@dataclass
class RayPredictResult:
    out: Path
    partitions: int
    skipped_partitions: int
    images: int = 0
    rows: int = 0
    failed: int = 0
    seconds: float = 0.0
    workers: list[dict[str, Any]] = field(default_factory=list)  # one summary per partition done

    def faces_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def rows_on_ray(address: str | None, workers: int, threads: int,
                run: Callable[[Any], Iterable[dict]]) -> Iterator[dict]:
    """The rows `run(ray)` yields, in a Ray session: the running one, a cluster at `address`,
    or a new local one, which is shut down after (the engines of photos and of videos)."""
    ray = require("ray", "scale")
    started = not ray.is_initialized()
    if started:
        import logging

        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, workers * threads), **kwargs)
    try:
        yield from run(ray)
    finally:
        if started:
            ray.shutdown()


def predict_ray(source: Any, out: str | Path, model: str | Path | None = None, *,
                workers: int = 2, ray_address: str | None = None, batch_size: int = 64,
                partition_size: int = 1000, threads: int = 1, backend: str = "auto",
                tta: bool | None = None, detect: bool | None = None, largest: bool = False,
                min_face: int | None = None, score_threshold: float = 0.5,
                unsure_band: float | None = None, progress: bool = True,
                detector: str = "auto") -> RayPredictResult:
    """Predict every face of `source` (anything predict reads: folders, tars, manifests,
    shards, lists) on `workers` Ray actors of `threads` threads each, into OUT/part-*.parquet.
    Rerun on the same `out` to finish a killed job: only missing partitions are done."""
    from ..models import modelfile

    require("pyarrow", "scale")
    if workers < 1:
        raise FaceGenderError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    model_dir = str(modelfile.resolve_model_dir(model))
    options = {"backend": backend, "threads": threads, "tta": tta, "detect": detect,
               "largest": largest, "min_face": min_face, "score_threshold": score_threshold,
               "unsure_band": unsure_band, "detector": detector}
    parts = plan_partitions(source, partition_size)
    # What shapes the rows must match on a restart; threads only change the speed.
    todo = check_plan(out, parts, {"model": model_dir,
                                   **{k: v for k, v in options.items() if k != "threads"}})
    res = RayPredictResult(out, len(parts), len(parts) - len(todo))
    say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    say(f"{len(parts)} partitions, {res.skipped_partitions} already written in {out}; "
        f"{len(todo)} to do on {workers} Ray workers")
    for stale in out.glob(".part-*.tmp"):  # half-written by a killed job: never read
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if todo:
        for row in rows_on_ray(ray_address, workers, threads, lambda ray: _run(
                ray, todo, model_dir, out, options, workers, threads, batch_size, progress)):
            res.workers.append(row)
            res.images += row["images"]
            res.rows += row["rows"]
            res.failed += row["failed"]
    res.seconds = time.perf_counter() - t0
    missing = [p.index for p in parts if not (out / part_name(p.index)).exists()]
    if missing:
        raise FaceGenderError(f"{len(missing)} partitions were not written (e.g. "
                              f"{part_name(missing[0])}); run the same command again to finish")
    import json

    (out / DONE_NAME).write_text(json.dumps({"partitions": len(parts), "model": model_dir}))
    return res


def _run(ray, todo: list[Partition], model_dir: str, out: Path, options: dict[str, Any],
         workers: int, threads: int, batch_size: int, progress: bool) -> Iterator[dict]:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"partition": p.to_json()} for p in todo],
                             override_num_blocks=len(todo))
    # glibc gives each new thread of a Ray worker (and Ray starts many) its own malloc arena:
    # measured here, a worker's RSS then grew ~10 MB a partition without end; two arenas keep
    # it flat (benchmarks/scale.py prints it).
    arenas = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    ds = ds.map_batches(PartitionPredictor, batch_size=1, num_cpus=threads,
                        runtime_env={"env_vars": arenas},
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        fn_constructor_kwargs={"model": model_dir, "out": str(out),
                                               "options": options, "batch_size": batch_size})
    with progress_bar(len(todo), progress, "predict", unit="part") as bar:
        for row in ds.iter_rows():
            bar.update()
            yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def read_records(out: str | Path) -> Iterator[dict[str, Any]]:
    """The face records of a finished run, partition by partition (box back as a dict), for
    writing one CSV or JSON file as single-process predict does."""
    pq = require("pyarrow.parquet", "scale")
    from ..infer.records import BOX_KEYS, RECORD_FIELDS

    for f in sorted(Path(out).glob("part-*.parquet")):
        for row in pq.read_table(f).to_pylist():
            box = [row.pop(f"box_{k}") for k in BOX_KEYS]
            row["box"] = None if box[0] is None else dict(zip(BOX_KEYS, box, strict=True))
            yield {k: row[k] for k in RECORD_FIELDS}
