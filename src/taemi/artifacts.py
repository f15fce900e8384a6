"""Atomic artifact writes and stable hashes.

Every file the kit produces goes through `atomic_path` (folders through `atomic_dir`): it is
written to a temporary file in the same folder and renamed into place, so an interrupted run
never leaves a half-written CSV, JSON or checkpoint behind. The renamed file or folder gets
the permissions the user's umask implies, as a plain `open` would give it (`mkstemp` and
`mkdtemp` alone would leave 0600 and 0700). Hashes of configs decide whether an artifact is
current.

A temporary folder is named `.<name>.<host>-<pid>-<random>.tmp`, so a later run can tell
one left behind by an interrupted run (its process is gone) from one still being written:
`remove_stale_temporaries` deletes the former.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

TEMP_SUFFIX = ".tmp"
# .<name>.<host>-<pid>-<random>[.<suffix>].tmp, tried first (a suffix such as .png let a
# pattern with the pid optional read a live plot's temporary as pid-less, so stale), then
# .<name>.<random>[.<suffix>].tmp from kits before pids were kept
_END = r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9]+)?" + re.escape(TEMP_SUFFIX) + "$"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-" + _END)
_LEGACY_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\." + _END)


def current_umask() -> int:
    """The process's umask, read from /proc where it can be (changing it to read it would
    race with other threads creating files); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_host_tag()}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix + TEMP_SUFFIX,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename and Path(err.filename) == tmp_path:  # name the file being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs. A zombie (exited, its parent not
    yet waiting on it: a spawned worker that died while its parent polls) does not; where
    it cannot be told, it does (its work is kept)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process (PermissionError), or cannot tell
        return True
    try:  # /proc/<pid>/stat: "pid (command) state ...", the command may hold spaces
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def stale_temporaries(folder: str | os.PathLike, name_glob: str = "*") -> list[Path]:
    """Temporary folders and files that `atomic_dir` and `atomic_path` left in `folder` for
    a final name matching `name_glob` and whose run is over: its process on this machine is
    gone, or it predates the pid in the name. Those of other machines (a shared disk) are
    never stale here."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for candidate in folder.glob(f".{name_glob}.*{TEMP_SUFFIX}"):
        if candidate.is_symlink():
            continue
        match = _TEMP_NAME.match(candidate.name)
        if match is None:
            if _LEGACY_TEMP_NAME.match(candidate.name) is None:
                continue
        elif match["host"] != _host_tag() or process_alive(int(match["pid"])):
            continue
        stale.append(candidate)
    return sorted(stale)


def remove_stale_temporaries(folder: str | os.PathLike, name_glob: str = "*") -> list[Path]:
    """Delete `stale_temporaries(folder, name_glob)`; return what was deleted."""
    removed = stale_temporaries(folder, name_glob)
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write atomically; a file that already holds exactly this text is left untouched, so
    re-running a finished step changes nothing on disk."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(text.encode()) and path.read_text() == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, **kwargs: Any) -> None:
    """Write a CSV atomically; ids stay strings and floats keep full precision."""
    kwargs.setdefault("index", False)
    write_text(path, frame.to_csv(lineterminator="\n", **kwargs))


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of any JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
