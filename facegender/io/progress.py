"""One rule for progress bars and counts, for every verb (predict, evaluate, explain, train,
qat, calibrate, shard, the Ray engine): tqdm on stderr, drawn only while stderr is a terminal
(stdout stays clean for pipes, a log file gets no carriage-return noise) and never when the
caller turned it off (--quiet / --no-progress). Lives at the bottom layer (io) so every part
of the package can use it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(items: int | Iterable | None, enabled: bool, desc: str, unit: str = "img",
                 **options: Any) -> Any:
    """A tqdm bar over `items` (an iterable to wrap, or the total count to update by hand);
    `options` go to tqdm (leave=False, ...)."""
    # tqdm.auto imports asyncio (~50 ms of every CLI start) to offer its notebook widget; only a
    # notebook kernel needs that.
    if "ipykernel" in sys.modules:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm

    iterable, total = (None, items) if items is None or isinstance(items, int) else (items, None)
    # disable=None is tqdm's own "only on a TTY" test, made on the stream it writes to.
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled else True, **{"smoothing": 0.1, **options})


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '0 images', '2 faces': a number with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class FirstFew(list):
    """A list that keeps its first `keep` items and counts every one appended (`total`): a
    summary's listing of failed inputs takes flat memory however many there are."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep
        self.total = 0

    def append(self, item: Any) -> None:
        self.total += 1
        if len(self) < self.keep:
            super().append(item)
