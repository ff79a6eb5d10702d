"""The service's Predictors: a fixed set, each used by one thread at a time, so the event loop
never does CPU work and no Predictor is shared between two requests at once (its options, e.g.
`tta` or the face detector, are set per request). Photos are predicted in batches, a video is
tracked whole by one Predictor."""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..infer.predictor import ImageResult, Predictor
from ..infer.video_tracks import VideoTracks, track_video


class PredictorPool:
    """A fixed set of Predictors, each used by one thread at a time.

    ONNX Runtime sessions may be shared, but the Predictor carries per-request options and the
    detector's thread safety is not promised, so each worker thread borrows a whole Predictor.
    """

    def __init__(self, model: str | Path | None, *, workers: int, backend: str,
                 threads: int | None, detect: bool | None, max_pixels: int, batch_size: int,
                 device: str | None = None, strict: bool = False, detector: str = "auto"):
        self.workers = max(1, int(workers))
        # Split the cores between workers instead of letting each engine grab all of them.
        threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.batch_size = batch_size
        self.predictors = [Predictor(model, backend=backend, threads=threads, detect=detect,
                                     max_pixels=max_pixels, device=device, strict=strict,
                                     detector=detector)
                           for _ in range(self.workers)]
        self._free: queue.SimpleQueue[Predictor] = queue.SimpleQueue()
        for p in self.predictors:
            self._free.put(p)
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="facegender-predict")

    @property
    def first(self) -> Predictor:
        return self.predictors[0]

    def warm_up(self) -> None:
        """One tiny prediction per Predictor, so the first real request is not the slow one."""
        from PIL import Image

        img = Image.new("RGB", (64, 64), (128, 128, 128))
        for p in self.predictors:
            p.predict([img], batch_size=1, workers=1)

    @contextmanager
    def _borrow(self, detector: str | None) -> Iterator[Predictor]:
        """A free Predictor, with the request's face detector while it is lent. Never blocks:
        the executor runs at most `workers` borrowers, one per Predictor."""
        p = self._free.get()
        own = p.detector_mode
        p.detector_mode = detector or own
        try:
            yield p
        finally:
            p.detector_mode = own
            self._free.put(p)

    def _predict(self, blobs: list[bytes], tta: bool | None, largest: bool,
                 detector: str | None = None) -> list[ImageResult]:
        with self._borrow(detector) as p:
            return p.predict(blobs, batch_size=self.batch_size,
                             workers=min(len(blobs), 4, os.cpu_count() or 1),
                             tta=tta, largest=largest)

    async def predict(self, blobs: list[bytes], tta: bool | None, largest: bool,
                      detector: str | None = None) -> list[ImageResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._predict, blobs, tta, largest,
                                          detector)

    def _track(self, name: str, data: bytes, every: float, detector: str | None
               ) -> VideoTracks:
        with self._borrow(detector) as p:
            return track_video(p, name, data=data, every=every, batch_size=self.batch_size,
                               workers=min(4, os.cpu_count() or 1))

    async def track(self, name: str, data: bytes, every: float, detector: str | None = None
                    ) -> VideoTracks:
        """One video's faces in tracks (infer.video_tracks.track_video), from its bytes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._track, name, data, every,
                                          detector)
