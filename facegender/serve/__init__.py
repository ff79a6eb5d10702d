"""The HTTP service (FastAPI) and its upload page.

Imports `io`, `models`, `infer`; never torch.
"""

from .app import PredictResponse, create_app, serve

__all__ = ["PredictResponse", "create_app", "serve"]
