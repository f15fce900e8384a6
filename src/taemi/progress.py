"""One switch for every progress bar in the kit.

Long steps wrap their loops in `progress(...)`; `--quiet` on the command line or
`TAEMI_QUIET=1` in the environment silences all of them at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_quiet = os.environ.get("TAEMI_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """tqdm, silenced when the kit is quiet."""
    kwargs.setdefault("disable", _quiet)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def echo(message: str) -> None:
    """Print a status line unless quiet (errors never go through here)."""
    if not _quiet:
        tqdm.write(message)
