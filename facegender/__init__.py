"""facegender: male/female face classification with calibrated probabilities.

The public API maps 1:1 onto the CLI verbs: `train`, `evaluate`, `predict`, `explain`, `qat`,
`export`, `benchmark`, `info`, `shard`, `calibrate` (`serve` lives in `facegender.serve`; `predict --engine
ray` is `predict_ray`, with `--track` `track_ray`). Nothing here imports torch: the verbs that
need torch or Ray import their module on first use, and `help()` / `inspect.signature` show
their real parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lazy import lazy_names
from .version import __version__

if TYPE_CHECKING:  # what editors and type checkers see: the real functions
    from .infer.bench import benchmark
    from .infer.export import export
    from .infer.predictor import ImageResult, Predictor, load, predict
    from .infer.video_summary import summarize_tracks
    from .infer.video_tracks import track
    from .io.shards import write_shards as shard
    from .models.info import info
    from .report.evaluate import evaluate
    from .report.explainer import explain
    from .scale.ray_predict import predict_ray
    from .scale.ray_tracks import track_ray
    from .training.calibrate import calibrate
    from .training.quantaware import finetune as qat
    from .training.trainer import train

# Imported on first use (PEP 562): `from facegender import load` should not pay for the report
# and Grad-CAM modules, nor `import facegender` for numpy and ONNX Runtime.
_LAZY = {"ImageResult": "infer.predictor", "Predictor": "infer.predictor",
         "load": "infer.predictor", "predict": "infer.predictor", "info": "models.info",
         "evaluate": "report.evaluate", "explain": "report.explainer",
         "track": "infer.video_tracks", "summarize_tracks": "infer.video_summary"}


class _Deferred:
    # A public function whose module (torch, Ray) is imported on its first call, or when its
    # signature or documentation is asked for: `import facegender` and `from facegender import *`
    # stay free of torch, while help() and inspect.signature show the real parameters.

    def __init__(self, name: str, module: str, attr: str) -> None:
        self.__name__ = self.__qualname__ = name
        self.__module__ = __name__
        self._where = (module, attr)
        self._function: Any = None

    def _target(self) -> Any:
        if self._function is None:
            from importlib import import_module

            module, attr = self._where
            self._function = getattr(import_module(f".{module}", __name__), attr)
        return self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.signature(self._target())

    @property
    def __wrapped__(self) -> Any:
        return self._target()

    __doc__ = property(lambda self: self._target().__doc__)  # type: ignore[assignment]

    def __get__(self, obj: Any, owner: Any = None) -> _Deferred:
        return self  # a descriptor without __set__: pydoc documents it as a function

    def __repr__(self) -> str:
        module, attr = self._where
        return f"<function facegender.{self.__name__} (facegender.{module}.{attr}, imported on first use)>"


# name -> (module, function): the verbs whose modules need torch or Ray.
_DEFERRED = {"train": ("training.trainer", "train"), "qat": ("training.quantaware", "finetune"),
             "calibrate": ("training.calibrate", "calibrate"), "export": ("infer.export", "export"),
             "benchmark": ("infer.bench", "benchmark"), "shard": ("io.shards", "write_shards"),
             "predict_ray": ("scale.ray_predict", "predict_ray"),
             "track_ray": ("scale.ray_tracks", "track_ray")}
globals().update({name: _Deferred(name, *where) for name, where in _DEFERRED.items()})


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = ["train", "qat", "evaluate", "predict", "explain", "info", "load", "Predictor", "ImageResult",
           "export", "benchmark", "shard", "calibrate", "predict_ray", "track", "summarize_tracks",
           "track_ray", "__version__"]
