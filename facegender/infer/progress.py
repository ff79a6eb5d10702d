"""One progress bar for predict, evaluate and explain: tqdm on stderr, drawn only on a terminal
(stdout stays clean for pipes) and never when the caller turned it off (--quiet)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(items: int | Iterable | None, enabled: bool, desc: str, unit: str = "img"
                 ) -> Any:
    """A tqdm bar over `items` (an iterable to wrap, or the total count to update by hand)."""
    # tqdm.auto imports asyncio (~50 ms of every CLI start) to offer its notebook widget; only a
    # notebook kernel needs that.
    if "ipykernel" in sys.modules:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm

    iterable, total = (None, items) if items is None or isinstance(items, int) else (items, None)
    # disable=None is tqdm's own "only on a TTY" test, made on the stream it writes to.
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled else True, smoothing=0.1)
