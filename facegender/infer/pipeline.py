"""Many images through one Predictor: decode + detect in parallel, classify in batches, in order.

Threads (the default): a pool decodes and detects (PIL and ONNX Runtime release the GIL), the
calling thread classifies faces in batches across images while the pool works on the next
images. Processes (`processes` > 1): each worker process builds its own engines from the
Predictor's settings and runs chunks of images start to end. Both keep input order and bounded
memory: inputs are pulled from the iterator only as results are handed out, so at most a
window of images (a few per worker) is in flight, never the whole input.
"""

from __future__ import annotations

import os
import pickle
import signal
import statistics
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Protocol

from ..io.sources import Sample
from .backends import usable_cores

if TYPE_CHECKING:
    import multiprocessing.context


class Runner(Protocol):
    """What the pipeline needs of a Predictor (predictor.py imports this module, not back)."""

    threads: int | None

    def _prepare(self, item: tuple[str, Any], opts: Any = None) -> tuple[Any, list]: ...

    def _finish(self, prepared: list[tuple[Any, list]], batch_size: int, opts: Any = None
                ) -> list[Any]: ...

    def __getstate__(self) -> dict[str, Any]: ...

    def __setstate__(self, state: dict[str, Any]) -> None: ...


# Images in flight per worker thread: enough that the pool never waits while the calling
# thread classifies a batch (a batch of 64 faces takes ~14 ms, an image ~1-2 ms here).
_AHEAD_PER_WORKER = 16
# The default between threads and processes, by measurement (benchmarks/throughput.py, 2 cores,
# fast model): on 1,000 photos of 200x200 worker processes took 1.46 ms a photo against 1.64
# for threads, whose Python between engine calls holds the GIL for ~0.9 ms a photo; on 12-MP
# photos threads won (21.5 vs 23.2 ms: decoding releases the GIL) and so they do on short runs
# (each process builds its own engines). So: processes for many small image files.
AUTO_MIN_IMAGES = 200
AUTO_MAX_MEDIAN_BYTES = 1 << 20
# Images per task sent to a worker process, and tasks in flight per process.
_CHUNK = 8
_CHUNKS_PER_PROCESS = 2


def run_threads(predictor: Runner, items: Iterable[tuple[str, Any]], batch_size: int,
                workers: int | None = None, opts: Any = None) -> Iterator[Any]:
    """Yield ImageResults in input order; `workers` threads decode and detect (default: one per
    usable core), the calling thread classifies whenever `batch_size` faces are ready. `opts`
    (the Predictor's PredictOptions) goes to every call."""
    workers = max(1, workers or usable_cores())
    batch_size = max(1, int(batch_size))
    it = iter(items)
    if workers == 1:  # no pool: the calling thread does everything (also the serve path)
        return _batched(predictor, (predictor._prepare(item, opts) for item in it),
                        batch_size, opts)
    return _run_pool(predictor, it, batch_size, workers, opts)


def _run_pool(predictor: Runner, it: Iterator, batch_size: int, workers: int, opts: Any
              ) -> Iterator[Any]:
    ahead = workers * _AHEAD_PER_WORKER
    with ThreadPoolExecutor(workers, thread_name_prefix="facegender-prepare") as pool:
        window: deque[Future] = deque(pool.submit(predictor._prepare, item, opts)
                                      for item in islice(it, ahead))

        def prepared() -> Iterator:
            while window:
                done = window.popleft().result()
                for item in islice(it, 1):  # refill before handing the result on
                    window.append(pool.submit(predictor._prepare, item, opts))
                yield done

        try:
            yield from _batched(predictor, prepared(), batch_size, opts)
        finally:  # Ctrl-C or a consumer that stops early: queued images are dropped, not run
            for f in window:
                f.cancel()


def _batched(predictor: Runner, prepared: Iterable, batch_size: int, opts: Any
             ) -> Iterator[Any]:
    """Group prepared images until `batch_size` faces (or images: photos without a face must
    not pile up unanswered) are waiting, classify them, yield."""
    buf: list = []
    faces = 0
    for res_faces in prepared:
        buf.append(res_faces)
        faces += len(res_faces[1])
        if faces >= batch_size or len(buf) >= batch_size:
            yield from predictor._finish(buf, batch_size, opts)
            buf, faces = [], 0
    if buf:
        yield from predictor._finish(buf, batch_size, opts)


# -- process mode
_worker: Runner | None = None


def choose_processes(items: Iterator[tuple[str, Any]], keep_images: bool = False
                     ) -> tuple[int, Iterator[tuple[str, Any]]]:
    """(processes, the same items): usable_cores() worker processes when the input holds at
    least AUTO_MIN_IMAGES images, all read from files or bytes (not URLs, not decoded images:
    those would be fetched or pickled), whose first 32 have a median size of at most
    AUTO_MAX_MEDIAN_BYTES, on 2 cores or more, and results need not carry the pixels back;
    else 1 (threads). Reads at most AUTO_MIN_IMAGES items ahead, and hands them all on."""
    head = list(islice(items, AUTO_MIN_IMAGES))
    rest = chain(head, items)
    cores = usable_cores()
    if keep_images or cores < 2 or len(head) < AUTO_MIN_IMAGES:
        return 1, rest
    if any(not isinstance(src, Sample) or (src.path is None and src.data is None)
           for _, src in head[:32]):
        return 1, rest
    sizes = [n for n in (_encoded_size(src) for _, src in head[:32]) if n is not None]
    if not sizes or statistics.median(sizes) > AUTO_MAX_MEDIAN_BYTES:
        return 1, rest
    return cores, rest


def _encoded_size(src: Sample) -> int | None:
    """Bytes of a file- or bytes-backed Sample; None when its file cannot be read (its row will
    say why, whichever mode runs it)."""
    if src.data is not None:
        return len(src.data)
    if src.size is not None:  # a tar member
        return src.size
    try:
        return os.stat(src.path).st_size
    except OSError:
        return None


def _init_worker(blob: bytes) -> None:
    global _worker
    # Ctrl-C reaches the whole foreground process group: the parent stops the pool and marks
    # the output partial; a worker that raised too would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cls, state = pickle.loads(blob)
    _worker = cls.__new__(cls)
    _worker.__setstate__(state)  # builds this process's own engines


def _run_chunk(chunk: list[tuple[str, Any]], batch_size: int, opts: Any) -> list[Any]:
    assert _worker is not None
    return list(_batched(_worker, (_worker._prepare(item, opts) for item in chunk),
                         batch_size, opts))


def _context() -> multiprocessing.context.BaseContext:
    import multiprocessing  # here, not on top: threads (the default) never need its ~7 ms import

    # fork starts a worker in milliseconds (spawn re-imports numpy, PIL and ONNX Runtime: ~1 s
    # each); the worker still builds fresh engines, so no ONNX Runtime state crosses the fork.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_processes(predictor: Runner, items: Iterable[tuple[str, Any]], batch_size: int,
                  processes: int, opts: Any = None) -> Iterator[Any]:
    """Yield ImageResults in input order from `processes` worker processes, each running
    chunks of images through its own copy of the Predictor (engines built in the worker)."""
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: imported when needed

    state = predictor.__getstate__()
    # One engine thread per process unless asked: the processes already fill the cores.
    state["threads"] = predictor.threads or 1
    blob = pickle.dumps((type(predictor), state))
    it = iter(items)
    with ProcessPoolExecutor(processes, mp_context=_context(), initializer=_init_worker,
                             initargs=(blob,)) as pool:
        window: deque[Future] = deque()

        def submit() -> bool:
            chunk = list(islice(it, _CHUNK))
            if chunk:
                window.append(pool.submit(_run_chunk, chunk, batch_size, opts))
            return bool(chunk)

        for _ in range(processes * _CHUNKS_PER_PROCESS):
            if not submit():
                break
        try:
            while window:
                results = window.popleft().result()
                submit()
                yield from results
        finally:
            for f in window:
                f.cancel()
