"""Speed, accuracy and memory of each inference backend of a model folder, measured in one run.

For every backend the folder supports (torch, ONNX fp32, ONNX INT8): latency at batch 1 on one
thread, throughput at batch 64 on all cores, accuracy on labelled faces, face-detection time and
end-to-end time for a one-face 640x480 photo (when facegender.faces is available), and the peak
RSS. Each backend lives in its own fresh process (spawned), so its peak RSS is its own and an ONNX
row shows what a torch-free process costs. Timing blocks alternate between the backends round by
round, so rows of one run share the machine's load and compare fairly with each other; compare
across runs only on an idle machine.
"""

from __future__ import annotations

import importlib.util
import io
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import FaceGenderError, ImageError
from ..io.images import decode_bytes
from ..io.sources import Sample, read_source, stratified_limit
from ..models import modelfile

BACKEND_FILES = {"torch": modelfile.WEIGHTS_NAME, "onnx": modelfile.ONNX_NAME,
                 "int8": modelfile.ONNX_INT8_NAME}
PHOTO_SIZE = (640, 480)


def available_backends(model_dir: str | Path | None) -> list[str]:
    """The backends this folder and this install can run, in the order they are compared."""
    folder = modelfile.resolve_model_dir(model_dir)
    out = []
    if importlib.util.find_spec("torch") is not None and (folder / modelfile.WEIGHTS_NAME).is_file():
        out.append("torch")
    out += [b for b in ("onnx", "int8") if (folder / BACKEND_FILES[b]).is_file()]
    return out


def benchmark(model_dir: str | Path | None = None, data: str | Path | None = None,
              n_eval: int = 2000, *, backends: Sequence[str] | None = None,
              photo: str | Path | bytes | None = None, latency_runs: int = 300,
              throughput_batches: int = 20, batch_size: int = 64, threads: int | None = None,
              isolate: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """One row per backend (see module docstring); see `format_table`.

    data: labelled faces for the accuracy column (default: the validation source recorded in
        config.json, when it exists); `n_eval` of them are drawn, stratified and seeded. Images
        are treated as face crops (no detection), as celeba crops are.
    photo: a photo with one face for the detection and end-to-end columns (default: the first
        eval face, enlarged and pasted on a plain 640x480 canvas).
    threads: cores for the throughput column (default: all).
    isolate: run each backend in a fresh process (honest peak RSS per backend); False runs all
        in this process, where the RSS column is the cumulative peak.
    """
    folder = modelfile.resolve_model_dir(model_dir)
    cfg = modelfile.load_config(folder)
    usable = available_backends(folder)
    if backends is None:
        backends = usable
    for b in backends:
        if b not in BACKEND_FILES:
            raise FaceGenderError(f"unknown backend '{b}'; choose from {', '.join(BACKEND_FILES)}")
        if b not in usable:
            why = ("torch is not installed" if b == "torch" and (folder / BACKEND_FILES[b]).is_file()
                   else f"{folder} has no {BACKEND_FILES[b]}")
            raise FaceGenderError(f"cannot benchmark backend '{b}': {why}")
    if not backends:
        raise FaceGenderError(f"{folder}: nothing to benchmark (no ONNX files and no torch)")

    if data is None:
        rec = cfg.data.get("val", {}).get("source") if isinstance(cfg.data.get("val"), dict) else None
        data = rec if rec and Path(rec).exists() else None
    elif not str(data).startswith("hf:") and not Path(data).exists():
        raise FaceGenderError(f"benchmark data not found: {data}")
    samples = stratified_limit(read_source(data).samples, n_eval, seed) if data else []
    if isinstance(photo, (str, os.PathLike)):
        if not Path(photo).is_file():
            raise FaceGenderError(f"benchmark photo not found: {photo}")
        photo = Path(photo).read_bytes()
    if photo is None:
        photo = _default_photo(samples, cfg.input_size)

    kw = dict(model_dir=str(folder), samples=samples[:batch_size], batch_size=batch_size,
              threads=threads or os.cpu_count() or 1)
    pools: list = []
    try:
        if isolate:
            import multiprocessing as mp

            # spawn, not fork: a forked child would inherit torch and this process's memory.
            ctx = mp.get_context("spawn")
            for b in backends:
                pools.append(ctx.Pool(1))
                # A task, not a Pool initializer: a failing initializer respawns forever.
                pools[-1].apply(_init_worker, ({**kw, "backend": b},))
            runners = [lambda name, *args, _p=p: _p.apply(_call, (name, *args)) for p in pools]
        else:
            local = [_Runner(**kw, backend=b) for b in backends]
            runners = [lambda name, *args, _r=r: getattr(_r, name)(*args) for r in local]
        return _measure(backends, runners, samples, photo, latency_runs, throughput_batches,
                        batch_size)
    finally:
        for p in pools:
            p.close()
            p.join()


def _measure(backends: Sequence[str], runners: list, samples: list[Sample], photo: bytes,
             latency_runs: int, throughput_batches: int, batch_size: int,
             rounds: int = 5) -> list[dict[str, Any]]:
    """Timing blocks interleaved across backends, round by round, so a load change on a shared
    machine hits every backend alike; medians over all blocks."""
    lat: list[list[float]] = [[] for _ in backends]
    thr: list[list[float]] = [[] for _ in backends]
    det: list[list[float]] = [[] for _ in backends]
    e2e: list[list[float]] = [[] for _ in backends]
    rows: list[dict[str, Any]] = [runner("info") for runner in runners]
    photo_ok = [True] * len(backends)
    for r in range(rounds):
        for i, runner in enumerate(runners):
            lat[i] += runner("latency", -(-latency_runs // rounds), 20 if r == 0 else 3)
            thr[i] += runner("throughput", -(-throughput_batches // rounds), 3 if r == 0 else 1)
            if photo_ok[i]:
                got = runner("photo", photo, 10, 3 if r == 0 else 1)
                if isinstance(got, str):
                    rows[i]["detect_note"] = got
                    photo_ok[i] = False
                else:
                    rows[i]["detect_note"] = got[2]
                    det[i] += got[0]
                    e2e[i] += got[1]
    for i, runner in enumerate(runners):
        row = rows[i]
        row["latency_p50_ms"] = float(np.percentile(lat[i], 50))
        row["latency_p95_ms"] = float(np.percentile(lat[i], 95))
        row["throughput_fps"] = batch_size * 1000.0 / float(np.median(thr[i]))
        row["detect_ms"] = float(np.median(det[i])) if det[i] else None
        row["e2e_ms"] = float(np.median(e2e[i])) if e2e[i] else None
        # Read before the eval set is decoded: what serving with this backend costs.
        row.update(runner("memory"))
        row["accuracy"], row["n_eval"] = runner("accuracy", samples)
    return rows


COLUMNS = [("backend", "backend", "{}"), ("size_mb", "file MB", "{:.1f}"),
           ("latency_p50_ms", "b1 p50 ms", "{:.2f}"), ("latency_p95_ms", "b1 p95 ms", "{:.2f}"),
           ("throughput_fps", "b64 faces/s", "{:.0f}"), ("accuracy", "accuracy", "{:.2%}"),
           ("n_eval", "n", "{}"), ("detect_ms", "detect ms", "{:.1f}"),
           ("e2e_ms", "photo e2e ms", "{:.1f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
           ("torch_loaded", "torch loaded", "{}")]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of benchmark rows; missing figures print as n/a."""
    def cell(row: dict, key: str, fmt: str) -> str:
        v = row.get(key)
        return "n/a" if v is None else fmt.format(v)

    head = [h for _, h, _ in COLUMNS]
    body = [[cell(r, k, f) for k, _, f in COLUMNS] for r in rows]
    width = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, width, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in width) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                                for i, (c, w) in enumerate(zip(b, width, strict=True))) + " |"
              for b in body]
    notes = sorted({r["detect_note"] for r in rows if r.get("detect_note")})
    return "\n".join(lines + [f"detection: {n}" for n in notes])


def make_photo(face: Image.Image, size: tuple[int, int] = PHOTO_SIZE, face_height: float = 0.5
               ) -> bytes:
    """A one-face test photo: `face` scaled to `face_height` of the height, centred on a plain
    canvas of `size` in the face's own mean border colour, JPEG-encoded."""
    w, h = size
    fh = max(1, round(h * face_height))
    fw = max(1, round(face.width * fh / face.height))
    face = face.convert("RGB").resize((fw, fh), Image.Resampling.BILINEAR)
    arr = np.asarray(face)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(axis=0)
    canvas = Image.new("RGB", size, tuple(int(c) for c in border))
    canvas.paste(face, ((w - fw) // 2, (h - fh) // 2))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# -- one backend (runs in its own process when isolated)


def _default_photo(samples: list[Sample], input_size: int) -> bytes:
    for s in samples:
        try:
            return make_photo(decode_bytes(s.read_bytes(), s.ref))
        except (ImageError, OSError):
            continue
    # No faces at hand: a grey photo still times the detector (it finds nothing).
    return make_photo(Image.new("RGB", (input_size, input_size), (128, 128, 128)))


def timed(fn: Callable[[], Any], runs: int, warmup: int) -> np.ndarray:
    """Milliseconds of each of `runs` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out * 1000.0


def _eval_arrays(samples: list[Sample], cfg, chunk: int = 256):
    """(arrays, labels) chunks, decoded and preprocessed as the Predictor does, a chunk at a time
    so the decoded eval set does not dominate the peak RSS."""
    from .preprocess import to_array

    for i in range(0, len(samples), chunk):
        xs, ys = [], []
        for s in samples[i:i + chunk]:
            try:
                xs.append(to_array(decode_bytes(s.read_bytes(), s.ref), cfg))
                ys.append(s.label == "male")
            except (ImageError, OSError):
                continue
        if xs:
            yield np.stack(xs), np.array(ys)


class _Runner:
    """One backend's Predictors and inputs; lives in its own process when isolated."""

    def __init__(self, model_dir: str, backend: str, samples: list[Sample], batch_size: int,
                 threads: int):
        from .predictor import Predictor

        self.folder = Path(model_dir)
        self.backend = backend
        self.threads = threads
        self.one = Predictor(self.folder, backend=backend, threads=1, detect=False)
        self.many = Predictor(self.folder, backend=backend, threads=threads, detect=False)
        self.cfg = self.one.config
        faces = next(_eval_arrays(samples, self.cfg), (None, None))[0]
        if faces is None or len(faces) < batch_size:  # no eval data: timing needs inputs only
            faces = np.random.default_rng(0).standard_normal(
                (batch_size, 3, self.cfg.input_size, self.cfg.input_size)).astype(np.float32)
        self.x1 = np.ascontiguousarray(faces[:1])
        self.xb = np.ascontiguousarray(faces[:batch_size])
        self._photo: tuple | None = None

    def _threads(self, n: int) -> None:
        # torch's thread count is process-wide: set it for each block, as the backend would.
        if self.backend == "torch":
            import torch

            torch.set_num_threads(n)

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend,
                "size_mb": (self.folder / BACKEND_FILES[self.backend]).stat().st_size / 1e6,
                "threads": self.threads}

    def latency(self, runs: int, warmup: int) -> list[float]:
        self._threads(1)
        return timed(lambda: self.one.classify_arrays(self.x1), runs, warmup).tolist()

    def throughput(self, runs: int, warmup: int) -> list[float]:
        self._threads(self.threads)
        return timed(lambda: self.many.classify_arrays(self.xb), runs, warmup).tolist()

    def photo(self, photo: bytes, runs: int, warmup: int) -> tuple[list, list, str] | str:
        """Detection and end-to-end (decode, detect, crop, classify) times, one thread; or why
        they cannot be measured."""
        self._threads(1)
        try:
            if self._photo is None:
                from ..faces import FaceDetector
                from .predictor import Predictor

                det = FaceDetector(threads=1)
                img = decode_bytes(photo, "<photo>")
                pred = Predictor(self.folder, backend=self.backend, threads=1, detect=True)
                note = (f"{img.width}x{img.height} photo, {len(det.detect(img))} face(s) found, "
                        "one thread")
                self._photo = (det, img, pred, note)
            det, img, pred, note = self._photo
            d = timed(lambda: det.detect(img), runs, warmup).tolist()
            e = timed(lambda: pred.predict(photo, workers=1), runs, warmup).tolist()
        except (ImportError, FaceGenderError) as exc:
            return f"n/a ({type(exc).__name__}: {str(exc)[:120]})"
        return d, e, note

    def memory(self) -> dict[str, Any]:
        return {"peak_rss_mb": peak_rss_mb(), "torch_loaded": "torch" in sys.modules}

    def accuracy(self, samples: list[Sample]) -> tuple[float | None, int]:
        correct = n = 0
        for x, y in _eval_arrays(samples, self.cfg):
            p = self.many.classify_arrays(x)
            correct += int(np.sum((p >= self.cfg.threshold) == y))
            n += len(y)
        return (correct / n if n else None), n


def peak_rss_mb() -> float:
    """This process's own peak RSS. VmHWM belongs to the address space, which exec replaces;
    ru_maxrss survives exec, so a spawned child would report its parent's peak instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


_WORKER: _Runner | None = None


def _init_worker(kw: dict[str, Any]) -> None:
    global _WORKER
    _WORKER = _Runner(**kw)


def _call(name: str, *args: Any) -> Any:
    if _WORKER is None:
        raise RuntimeError("benchmark worker lost its state (the process was restarted)")
    return getattr(_WORKER, name)(*args)
