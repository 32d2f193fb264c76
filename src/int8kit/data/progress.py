"""Progress bars for long data passes: tqdm on stderr, only for a person watching a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from int8kit._deps import available

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when stderr is a terminal and INT8KIT_NO_PROGRESS is not set to 1."""
    if os.environ.get("INT8KIT_NO_PROGRESS", "") == "1":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """``iterable`` wrapped in a tqdm bar on stderr, or unchanged when bars are off or tqdm is
    missing (a bar is cosmetic, so its absence is never an error)."""
    if not progress_enabled() or not available("tqdm"):
        return iter(iterable)
    from tqdm import tqdm

    return iter(tqdm(iterable, total=total, desc=desc or None, file=sys.stderr, leave=False))
