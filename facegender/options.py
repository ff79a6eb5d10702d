"""Options declared once: each verb's options are one dataclass whose fields carry their default,
range, choices, help and command-line spelling (field metadata). The argparse parser, the range
checks, the Python API's keyword defaults and the recipe saved in config.json are derived from it.

A base module (imports nothing from the package but errors): every part may declare its verbs'
options with it, and the CLI builds its parsers from those declarations.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import FaceGenderError


class Number:
    """An argparse type and API check: int or float within [lo, hi] (open ends with lo_open /
    hi_open)."""

    def __init__(self, kind: type, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False):
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.__name__ = kind.__name__  # argparse names the type in its messages

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return f"{what} {' and '.join(parts)}".strip()

    def accepts(self, v: float) -> bool:
        if self.kind is float and v != v:  # nan passes every comparison
            return False
        low = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        high = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        return not (low or high)

    def __call__(self, text: str) -> int | float:
        try:
            v = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if not self.accepts(v):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return v


COUNT = Number(int, 1)  # sizes, counts, epochs, threads
ZERO_OR_MORE = Number(int, 0)
PROBABILITY = Number(float, 0, 1)
POSITIVE = Number(float, 0, lo_open=True)

REQUIRED = dataclasses.MISSING  # a positional argument or a required option: no default


def opt(default: Any, help: str, *flags: str, type: Callable | None = None,
        recipe: str | bool | None = None, by_recipe: Mapping[str, Any] | None = None,
        cli: bool = True, group: str | None = None, deprecated: tuple[str, ...] = (),
        **argparse_kwargs: Any) -> Any:
    """Declare one option: its default, help, command-line spelling (`flags`: none gives
    ``--name-with-dashes``; a leading positional name gives a positional argument), argparse
    `type` (a Number is also checked on API values) and other argparse keywords (action, choices,
    nargs, metavar, const, required). `recipe`: saved in config.json's recipe (True: under the
    option's name; a string: under that key). `deprecated`: old spellings that keep working, their
    help saying so. `by_recipe`: the value None resolves to for each
    training recipe (see resolve_by_recipe). `cli=False`: API only."""
    meta = {"help": help, "flags": flags, "type": type, "recipe": recipe, "by_recipe": by_recipe,
            "cli": cli, "group": group, "deprecated": deprecated, "argparse": argparse_kwargs}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict, set)):  # a fresh copy for every options object
        return dataclasses.field(default_factory=default.copy, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields(options: type) -> Iterator[dataclasses.Field]:
    yield from dataclasses.fields(options)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def defaults(options: type) -> dict[str, Any]:
    """Every option's default (positional/required ones left out)."""
    return {f.name: d for f in fields(options) if (d := default_of(f)) is not REQUIRED}


def check(options: Any) -> None:
    """Range and choice checks on an options object built in Python (the parser checks text)."""
    for f in fields(type(options)):
        v, meta = getattr(options, f.name), f.metadata
        rule, choices = meta["type"], meta["argparse"].get("choices")
        if isinstance(rule, Number) and isinstance(v, (int, float)) and not isinstance(v, bool) \
                and not rule.accepts(v):
            raise FaceGenderError(f"{f.name} must be {rule.describe()}, got {v!r}")
        if choices is not None and v is not None and not isinstance(v, (bool, list, tuple)) \
                and v not in choices:
            raise FaceGenderError(f"{f.name} must be one of {', '.join(map(str, choices))}, "
                                  f"got {v!r}")


def build(options: type, values: Mapping[str, Any], what: str) -> Any:
    """An options object from keyword values (unknown names are an error), checked."""
    names = {f.name for f in fields(options)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"{what}() got unexpected keyword argument(s): {', '.join(unknown)}")
    obj = options(**values)
    check(obj)
    return obj


def resolve_by_recipe(options: Any, recipe: str) -> Any:
    """A copy where options left at None take their recipe's default (declared by by_recipe)."""
    changes = {f.name: f.metadata["by_recipe"][recipe] for f in fields(type(options))
               if f.metadata["by_recipe"] and getattr(options, f.name) is None
               and recipe in f.metadata["by_recipe"]}
    return dataclasses.replace(options, **changes)


def to_recipe(options: Any) -> dict[str, Any]:
    """The options config.json's recipe records, under their recipe keys."""
    out = {}
    for f in fields(type(options)):
        key = f.metadata["recipe"]
        if key:
            v = getattr(options, f.name)
            out[f.name if key is True else key] = list(v) if isinstance(v, tuple) else v
    return out


def signature(func: Callable, options: type, leading: tuple[str, ...] = (),
              trailing: Mapping[str, Any] | None = None) -> inspect.Signature:
    """`func`'s signature with the options as keyword parameters: `leading` options are
    positional (in that order), the rest keyword-only; `trailing` adds API-only keywords."""
    hints = {f.name: f.type for f in fields(options)}
    params = []
    for name in leading:
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        annotation=hints[name]))
    for f in fields(options):
        if f.name in leading:
            continue
        d = default_of(f)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=inspect.Parameter.empty if d is REQUIRED else d,
                                        annotation=f.type))
    for name, d in (trailing or {}).items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d))
    ret = inspect.signature(func).return_annotation
    return inspect.Signature(params, return_annotation=ret)


# -- the command line -------------------------------------------------------------------------
def flags_of(f: dataclasses.Field) -> tuple[str, ...]:
    flags = f.metadata["flags"]
    return flags or ("--" + f.name.replace("_", "-"),)


def help_of(f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    by = f.metadata["by_recipe"]
    if by and "default" not in text:
        first, *rest = by.items()
        text += f" (default: {first[1]}" + "".join(
            f", {v} with --recipe {k}" for k, v in rest) + ")"
    return text


def add_options(parser: argparse.ArgumentParser, options: type,
                groups: Mapping[str, argparse._ArgumentGroup] | None = None) -> None:
    """One argparse argument per declared option (in declaration order)."""
    groups = dict(groups or {})
    for f in fields(options):
        meta = f.metadata
        if not meta["cli"]:
            continue
        target = parser
        if meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        kwargs = dict(meta["argparse"])
        if meta["type"] is not None:
            kwargs["type"] = meta["type"]
        flags = flags_of(f)
        d = default_of(f)
        if flags[0].startswith("-"):
            kwargs["dest"] = f.name
            if d is not REQUIRED:
                kwargs.setdefault("default", d)
        elif d is not REQUIRED:
            kwargs["default"] = d
        target.add_argument(*flags, help=help_of(f), **kwargs)
        if meta["deprecated"]:
            kwargs.pop("default", None)
            target.add_argument(*meta["deprecated"], help=f"deprecated spelling of {flags[0]}",
                                **kwargs)


def from_namespace(ns: argparse.Namespace, options: type) -> dict[str, Any]:
    """The declared options' values from parsed arguments (keyword arguments for the API)."""
    return {f.name: getattr(ns, f.name) for f in fields(options) if hasattr(ns, f.name)}

