"""`facegender info`: what a model folder holds, without loading any engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import modelfile


def info(model: str | Path | None = None) -> dict[str, Any]:
    """Config, files and sizes of a model folder (default: the shipped model)."""
    folder = modelfile.resolve_model_dir(model)
    cfg = modelfile.load_config(folder)
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    return {"path": str(folder), "files": files, **cfg.to_dict()}
