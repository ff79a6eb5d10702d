"""facegender: male/female face classification with calibrated probabilities.

The public API maps 1:1 onto the CLI verbs: `train`, `evaluate`, `predict`, `info`.
Heavy modules (torch) are imported only when a function that needs them is called.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["train", "evaluate", "predict", "info", "load", "Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy so `import facegender` stays cheap and torch-free.
    if name == "train":
        from .train import train

        return train
    if name == "evaluate":
        from .evaluate import evaluate

        return evaluate
    if name in ("predict", "load", "Predictor"):
        from . import predict as _p

        return {"predict": _p.predict, "load": _p.load, "Predictor": _p.Predictor}[name]
    if name == "info":
        from .info import info

        return info
    raise AttributeError(f"module 'facegender' has no attribute {name!r}")
