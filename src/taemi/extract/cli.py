"""Command-line entry points for feature extraction (`taemi extract ...`, `taemi transcribe`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_commands(command: Callable[..., argparse.ArgumentParser],
                 with_config: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the extraction subcommands on the `taemi` parser (none yet)."""
