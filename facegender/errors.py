"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""

from __future__ import annotations


class FaceGenderError(Exception):
    """A user-facing error: bad input, bad configuration, missing dependency."""


class ImageError(FaceGenderError):
    """An image that cannot be used, with the file it came from and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class DataError(FaceGenderError):
    """A data source that cannot be turned into labelled samples."""


class MissingDependency(FaceGenderError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str = "train"):
    """Import an optional module or raise a MissingDependency naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in the torch-free venv test
        raise MissingDependency(
            f"'{module}' is not installed; install it with: pip install \"facegender[{extra}]\""
        ) from exc
