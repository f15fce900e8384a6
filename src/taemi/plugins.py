"""A team's own models: the files and modules named in a config's `plugins:`, and the
`taemi.models` entry points of installed packages.

A plugin registers its models as the kit's own files do, and each is then built, keyed,
trained, measured for robustness, stacked and submitted like a built-in one:

    # my_model.py, beside the config (`plugins: [my_model.py]`)
    from taemi.models import register_model

    @register_model
    def my_model(dims, hidden=64): ...       # returns an nn.Module: batch -> (B, 6) in [0, 1]

Every process that builds a model imports the plugins first, because every such process
reads its config through `taemi.config.config_from_dict`, which calls `load_plugins`: the
command itself, each `workers` process, each tuning worker, and each Ray task, which gets
the plugin files' source with the task (`ship`, `unship`), so a cluster's nodes need not
have them. A model is keyed by its file's parsed code (`taemi.models.model_code_digest`):
editing a plugin retrains its jobs and no other. Whatever goes wrong while importing one
is a `PluginError`: one line that names the file, and the line in it where it went wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import re
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from taemi.artifacts import write_text
from taemi.models import ModelNameClash, forget_models, list_models

ENTRY_POINT_GROUP = "taemi.models"

# a loaded plugin file: its path -> (digest of the source it ran, its module's name)
_LOADED: dict[str, tuple[str, str]] = {}
_entry_points_loaded = False


class PluginError(ValueError):
    """A plugin that cannot be imported, or whose model cannot be registered."""


def is_plugin_file(entry: str) -> bool:
    """A `plugins:` entry names a file (a path ending in .py) rather than a module."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def resolve(entries: Sequence[str], folder: Path) -> list[str]:
    """The entries with each relative file path made absolute from `folder` (the config
    file's), so every process, in any working directory, finds the same file."""
    return [str((folder / Path(e).expanduser()).resolve()) if is_plugin_file(e) else e
            for e in entries]


def load_plugins(entries: Sequence[str]) -> None:
    """Import every plugin (a file path, or an importable module's name) that is not
    imported already; a file edited since it was imported is imported again, its old models
    replaced by the new ones. The plugin files of a config read before (in a notebook, say)
    are unloaded first: a process knows one config's plugins at a time."""
    for path in set(_LOADED) - {e for e in entries if is_plugin_file(e)}:
        _, module = _LOADED.pop(path)
        forget_models(module)
        sys.modules.pop(module, None)
    for entry in entries:
        if is_plugin_file(entry):
            _load_file(Path(entry))
        else:
            _load_module(entry)


def load_entry_points() -> None:
    """Import, once, the modules installed packages offer under the `taemi.models` group."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = getattr(point.dist, "name", "?")
        what = f"entry point {point.name!r} = {point.value!r} of package {package!r}"
        with _registering(what, point.module, None):
            point.load()


def _source_digest(source: str) -> str:
    return hashlib.blake2b(source.encode(), digest_size=16).hexdigest()


def _module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    return f"taemi_plugin_{stem}_{hashlib.blake2b(str(path).encode(), digest_size=4).hexdigest()}"


def _load_file(path: Path) -> None:
    if not path.is_file():
        raise PluginError(f"plugin file not found: {path} (the config's plugins: lists it; "
                          "a relative path is read from the config file's folder)")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PluginError(f"plugin {path}: cannot be read ({err})") from None
    digest = _source_digest(source)
    loaded = _LOADED.get(str(path))
    if loaded is not None and loaded[0] == digest:
        return
    name = _module_name(path)
    forget_models(name)  # an edited plugin's models are replaced, not registered twice
    _LOADED.pop(str(path), None)  # loaded again below, or not at all if it fails
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    with _registering(f"plugin {path}", name, path):
        # compiled from the text read here, never from a cached .pyc, so the code that runs
        # is the code its jobs are keyed by
        exec(compile(source, str(path), "exec"), module.__dict__)
    _LOADED[str(path)] = (digest, name)


def _load_module(name: str) -> None:
    if name in sys.modules:
        return
    with _registering(f"plugin module {name!r}", name, None):
        importlib.import_module(name)


@contextmanager
def _registering(what: str, module: str, path: Path | None) -> Iterator[None]:
    """Run a plugin's import; any failure becomes one `PluginError` line, and the models
    it registered before failing are unregistered (so a fixed plugin loads cleanly)."""
    before = set(list_models())
    try:
        yield
    except Exception as err:
        forget_models(module)
        if path is not None:
            sys.modules.pop(module, None)
        where = _where(err, path)
        said = " ".join(str(err).split())  # one line, whatever the exception's text
        if isinstance(err, ModelNameClash):
            raise PluginError(f"{what}{where}: {said}") from None
        if isinstance(err, ModuleNotFoundError) and err.name == module:
            raise PluginError(f"{what} cannot be imported: no module named {module!r} on "
                              "sys.path (a file is named by its path, ending in .py)") from None
        raise PluginError(f"{what}{where}: {type(err).__name__}: {said}") from None
    if path is not None and not set(list_models()) - before:
        forget_models(module)
        raise PluginError(f"{what} registers no model (decorate a function with "
                          "@register_model, from taemi.models)")


def _where(err: BaseException, path: Path | None) -> str:
    """", line N" of the plugin's own file where `err` arose (or the deepest line of it)."""
    if isinstance(err, SyntaxError) and err.filename == str(path):
        return f", line {err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    own = [f for f in frames if path is not None and f.filename == str(path)]
    if not own:  # a module plugin: its deepest frame outside the kit and importlib
        own = [f for f in frames if "importlib" not in f.filename
               and "/taemi/" not in f.filename.replace("\\", "/")]
        return f" ({own[-1].filename}, line {own[-1].lineno})" if own else ""
    return f", line {own[-1].lineno}"


# ----------------------------------------------------------------------------- Ray

def ship(entries: Sequence[str]) -> dict[str, str]:
    """The plugin files' sources (path -> text), to send with a task to another node."""
    return {entry: Path(entry).read_text() for entry in entries if is_plugin_file(entry)}


def unship(entries: Sequence[str], shipped: dict[str, str]) -> list[str]:
    """The plugin entries as this node can import them: each shipped file is written to
    this machine's temporary folder, under its content's digest, and imported from there
    (the same code, so the same key, whether or not the node has the file)."""
    local = []
    for entry in entries:
        source = shipped.get(entry)
        if source is None:
            local.append(entry)
            continue
        copy = Path(tempfile.gettempdir()) / "taemi-plugins" / _source_digest(source) / \
            Path(entry).name
        if not copy.is_file():
            write_text(copy, source)
        local.append(str(copy))
    return local
