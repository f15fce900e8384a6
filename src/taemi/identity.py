"""What made an artifact: digests of file contents and of code, never of paths or times.

Every artifact's key is a digest of exactly what made it, so a project copied to another
folder or machine (new paths, new mtimes) finds its work current, and a changed input or
changed code is never mistaken for the old one.

File digests are quick-checked as rsync does: a digest recorded beside a file's size and
mtime (`DigestBook`) is trusted while both are unchanged, and the bytes are read again
when either differs. The first run after a copy reads every file once; later runs only
stat them.

Code digests hash the parsed source (`ast.dump`), so comments and formatting change no
key; a changed statement or docstring does.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

import taemi
from taemi.artifacts import read_json, write_json

KIT_VERSION = taemi.__version__
_CHUNK = 1 << 20

Stat = tuple[str, int, int]  # file name, size, mtime_ns


def file_digest(path: str | os.PathLike) -> str:
    """The digest of a file's bytes (BLAKE2b, 128 bits)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def quick_stat(path: Path) -> Stat:
    stat = path.stat()
    return path.name, stat.st_size, stat.st_mtime_ns


class DigestBook:
    """Content digests of files, each trusted while its (name, size, mtime) is the one it
    was recorded with (`known`: stat -> digest, from an earlier manifest)."""

    def __init__(self, known: dict[Stat, str] | None = None) -> None:
        self.known = dict(known or {})
        self.read = 0  # files whose bytes had to be read

    def digest(self, path: Path) -> tuple[Stat, str]:
        stat = quick_stat(path)
        found = self.known.get(stat)
        if found is None:
            found = self.known[stat] = file_digest(path)
            self.read += 1
        return stat, found


def read_manifest(manifest: Path) -> dict[Stat, str]:
    """The digests a manifest (name -> [file name, size, mtime_ns, digest]) recorded, by
    stat; a missing or damaged one records nothing (its files are only read again)."""
    try:
        return {(e[0], e[1], e[2]): e[3] for e in read_json(manifest).values()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}


def digest_files(files: dict[str, Path], manifest: Path) -> dict[str, str]:
    """Content digests of `files` (name -> path), quick-checked against the JSON `manifest`
    of an earlier call, which is rewritten when anything had to be read."""
    book = DigestBook(read_manifest(manifest))
    stats, digests = {}, {}
    for name, path in files.items():
        stats[name], digests[name] = book.digest(path)
    if book.read or not manifest.is_file():
        write_json(manifest, {n: [*stats[n], digests[n]] for n in sorted(files)})
    return digests


def folder_digest(folder: Path, manifest: Path) -> str:
    """One digest of every file under `folder` (a local model's weights, say)."""
    files = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return hashlib.blake2b(repr(sorted(digest_files(files, manifest).items())).encode(),
                           digest_size=16).hexdigest()


def table_digest(frame: pd.DataFrame) -> str:
    """The digest of a table's columns, names and values (not its index): what a CSV of it
    would say, computed from the arrays (a CSV of 17k rows takes a tenth of a second)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in frame.columns:
        values = frame[name]
        digest.update(f"\x01{name}\x02{values.dtype.kind}".encode())
        if values.dtype.kind in "biuf":
            digest.update(np.ascontiguousarray(values.to_numpy(np.float64)).tobytes())
        else:
            digest.update("\x00".join(map(str, values.tolist())).encode())
    return digest.hexdigest()


def source_files_digest(paths: Iterable[str | os.PathLike],
                        fixed: dict[str, str] | None = None) -> str:
    """One digest of several Python files' parsed source (order-independent); `fixed`:
    files whose part is a given constant instead of their code."""
    fixed = fixed or {}
    parts = (fixed.get(str(p)) or _ast_digest(str(p)) for p in paths)
    return hashlib.blake2b("".join(sorted(parts)).encode(), digest_size=8).hexdigest()


def _ast_digest(path: str) -> str:
    """The file's parsed code; read every time (a plugin may have been edited since), parsed
    once per content."""
    return _parsed_digest(Path(path).read_bytes())


@cache
def _parsed_digest(source: bytes) -> str:
    tree = ast.dump(ast.parse(source), include_attributes=False)
    return hashlib.blake2b(tree.encode(), digest_size=8).hexdigest()


def code_digest(fn: Callable, fixed: dict[str, str] | None = None) -> str:
    """The code a registered function runs: its own module's file, the kit's model modules
    it imports from (`taemi.models.*`) and the modules it imports from its own folder (a
    package's siblings, not what lies below it), so a team's model in its own file is
    keyed by that file and editing another file changes no key of it."""
    module = inspect.getmodule(fn)
    if module is None or not getattr(module, "__file__", None):
        return hashlib.blake2b(repr(fn).encode(), digest_size=8).hexdigest()
    folder = Path(module.__file__).resolve().parent
    files = {module.__file__}
    for value in vars(module).values():
        imported = value if inspect.ismodule(value) else inspect.getmodule(value)
        where = getattr(imported, "__file__", None)
        if not where or not where.endswith(".py"):
            continue
        if imported.__name__.startswith("taemi.models") or (
                Path(where).resolve().parent == folder and
                imported.__name__.split(".")[0] != "taemi"):  # a sibling of its own
            files.add(where)
    return source_files_digest(files, fixed)
