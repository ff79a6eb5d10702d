"""Names a package imports on first use (PEP 562): `import facegender` or `facegender.faces`
then costs no numpy, ONNX Runtime or report modules until a name that needs them is used."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_names(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any],
                                                               Callable[[], list[str]]]:
    """A package's `__getattr__` and `__dir__` for `table` (name -> submodule, relative to
    `package`): the first use imports the submodule and keeps the name in the package."""

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(import_module(f".{table[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
