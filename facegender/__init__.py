"""facegender: male/female face classification with calibrated probabilities.

The public API maps 1:1 onto the CLI verbs: `train`, `evaluate`, `predict`, `explain`, `qat`,
`info` (`export`, `benchmark` and `serve` live in their modules). Nothing here imports torch:
`train` and `qat` load it on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .evaluate import evaluate  # noqa: E402
from .explainer import explain  # noqa: E402
from .info import info  # noqa: E402
from .predict import ImageResult, Predictor, load, predict  # noqa: E402

__all__ = ["train", "qat", "evaluate", "predict", "explain", "info", "load", "Predictor", "ImageResult",
           "__version__"]


def train(*args, **kwargs):
    """Train a classifier and write a model folder; see facegender.trainer.train."""
    from .trainer import train as _train

    return _train(*args, **kwargs)




def qat(*args, **kwargs):
    """Quantization-aware fine-tuning of a model folder; see facegender.quantaware.finetune."""
    from .quantaware import finetune

    return finetune(*args, **kwargs)
