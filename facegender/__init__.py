"""facegender: male/female face classification with calibrated probabilities.

The public API maps 1:1 onto the CLI verbs: `train`, `evaluate`, `predict`, `explain`, `qat`,
`export`, `benchmark`, `info`, `shard`, `calibrate` (`serve` lives in `facegender.serve`; `predict --engine
ray` is `predict_ray`). Nothing here imports torch:
`train`, `qat` and `export` load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .infer.predictor import ImageResult, Predictor, load, predict
    from .models.info import info
    from .report.evaluate import evaluate
    from .report.explainer import explain

# Imported on first use (PEP 562): `from facegender import load` should not pay for the report
# and Grad-CAM modules, nor `import facegender` for numpy and ONNX Runtime.
_LAZY = {"ImageResult": "infer.predictor", "Predictor": "infer.predictor",
         "load": "infer.predictor", "predict": "infer.predictor", "info": "models.info",
         "evaluate": "report.evaluate", "explain": "report.explainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facegender' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = ["train", "qat", "evaluate", "predict", "explain", "info", "load", "Predictor", "ImageResult",
           "export", "benchmark", "shard", "calibrate", "predict_ray", "track", "summarize_tracks",
           "__version__"]


def train(*args, **kwargs):
    """Train a classifier and write a model folder; see facegender.training.trainer.train."""
    from .training.trainer import train as _train

    return _train(*args, **kwargs)


def qat(*args, **kwargs):
    """Quantization-aware fine-tuning of a model folder; see facegender.training.quantaware.finetune."""
    from .training.quantaware import finetune

    return finetune(*args, **kwargs)


def calibrate(*args, **kwargs):
    """Re-fit a model's temperature and unsure band on several views of validation faces; see
    facegender.training.calibrate.calibrate."""
    from .training.calibrate import calibrate as _calibrate

    return _calibrate(*args, **kwargs)


def export(*args, **kwargs):
    """Export a model folder to ONNX / INT8 / TorchScript; see facegender.infer.export.export."""
    from .infer.export import export as _export

    return _export(*args, **kwargs)


def benchmark(*args, **kwargs):
    """Latency, throughput and memory per backend; see facegender.infer.bench.benchmark."""
    from .infer.bench import benchmark as _benchmark

    return _benchmark(*args, **kwargs)


def shard(*args, **kwargs):
    """Write a source as WebDataset tar shards; see facegender.io.shards.write_shards."""
    from .io.shards import write_shards

    return write_shards(*args, **kwargs)


def predict_ray(*args, **kwargs):
    """Batch prediction on Ray into partitioned Parquet; see facegender.scale.ray_predict."""
    from .scale.ray_predict import predict_ray as _predict_ray

    return _predict_ray(*args, **kwargs)


def track(inputs, model=None, *, every=None, period=None, keyframes=False, min_frames=3,
          batch_size=64, **kwargs):
    """Faces of every video in `inputs` (files, folders, globs) linked into tracks, one label
    per track: a list of VideoTracks (`frame_rows`, `track_rows` in infer/video_tracks.py;
    `summarize_tracks` for screen time). Frames: every `every` seconds (default 1), every
    `period`-th frame (rows for all frames), or the keyframes. Other keywords go to Predictor."""
    from .infer.predictor import Predictor
    from .infer.video_tracks import track_videos

    pred = Predictor(model, **kwargs)
    return list(track_videos(pred, inputs, every=every, period=period, keyframes=keyframes,
                             min_frames=min_frames, batch_size=batch_size))


def summarize_tracks(videos, n_boot=1000, seed=0):
    """Screen time, person-seconds and tracks by label per video and in total, with bootstrap
    intervals; see facegender.infer.video_summary.summarize_videos."""
    from .infer.video_summary import summarize_videos

    return summarize_videos(videos, n_boot=n_boot, seed=seed)
