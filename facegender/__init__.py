"""facegender: male/female face classification with calibrated probabilities.

The public API maps 1:1 onto the CLI verbs: `train`, `evaluate`, `predict`, `explain`, `qat`,
`export`, `benchmark`, `info` (`serve` lives in `facegender.serve`). Nothing here imports torch:
`train`, `qat` and `export` load it on first use.
"""

from __future__ import annotations

from .infer.predictor import ImageResult, Predictor, load, predict
from .models.info import info
from .report.evaluate import evaluate
from .report.explainer import explain
from .version import __version__

__all__ = ["train", "qat", "evaluate", "predict", "explain", "info", "load", "Predictor", "ImageResult",
           "export", "benchmark", "__version__"]


def train(*args, **kwargs):
    """Train a classifier and write a model folder; see facegender.training.trainer.train."""
    from .training.trainer import train as _train

    return _train(*args, **kwargs)


def qat(*args, **kwargs):
    """Quantization-aware fine-tuning of a model folder; see facegender.training.quantaware.finetune."""
    from .training.quantaware import finetune

    return finetune(*args, **kwargs)


def export(*args, **kwargs):
    """Export a model folder to ONNX / INT8 / TorchScript; see facegender.infer.export.export."""
    from .infer.export import export as _export

    return _export(*args, **kwargs)


def benchmark(*args, **kwargs):
    """Latency, throughput and memory per backend; see facegender.infer.bench.benchmark."""
    from .infer.bench import benchmark as _benchmark

    return _benchmark(*args, **kwargs)
