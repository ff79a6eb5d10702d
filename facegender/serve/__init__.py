"""The HTTP service (FastAPI) and its upload page: app.py builds and launches it; schemas,
request bodies, routes, the Predictor pool, pages and the guard each have a module.

Imports `io`, `models`, `infer`; never torch.
"""

from .app import PredictResponse, create_app, serve

__all__ = ["PredictResponse", "create_app", "serve"]
