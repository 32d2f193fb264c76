"""Outputs: written to a temporary file beside the target and renamed, never onto an input, and an
OS error names the path and what to do."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from int8kit.errors import OutputError

PathLike = str | os.PathLike


def write_error(target: PathLike, exc: OSError, folder: bool = False) -> OutputError:
    """An OutputError for ``exc`` raised while writing ``target`` (a file, or with ``folder`` a
    folder to create): the path, and what to do."""
    target = Path(target)
    ancestors = [target, *target.parents] if folder else [target.parent, *target.parent.parents]
    existing = next((p for p in ancestors if p.exists()), None)
    if existing is not None and not existing.is_dir():
        hint = f"{existing} is a file, not a folder: choose an output path inside a folder"
    elif target.is_dir() and not folder:
        hint = f"{target} is a folder: give a file name"
    elif exc.errno == errno.ENOSPC:
        hint = "the disk is full: free some space or write elsewhere"
    elif exc.errno == errno.EROFS:
        hint = "the file system is read-only: write elsewhere"
    elif isinstance(exc, PermissionError):
        hint = f"the folder {existing or target.parent} is not writable: choose another output "
        hint += "folder or make it writable"
    else:
        hint = "check that the output folder exists and is writable"
    return OutputError(f"cannot write {target}: {exc.strerror or exc}; {hint}")


@contextlib.contextmanager
def writing(target: PathLike, folder: bool = False) -> Iterator[None]:
    """Turn an OSError raised while writing ``target`` into an OutputError naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise write_error(target, exc, folder) from exc


def output_folder(folder: PathLike) -> Path:
    """Create ``folder`` (and its parents) for outputs; a clear error when that is impossible."""
    folder = Path(folder)
    with writing(folder, folder=True):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On any exception (Ctrl-C and SIGTERM included: the CLI turns SIGTERM into KeyboardInterrupt)
    the temporary file is removed and ``target`` is left as it was."""
    target = Path(target)
    output_folder(target.parent)
    with writing(target):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(target):
            yield tmp_path
            os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(target: PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file (through links and relative paths too)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return os.path.abspath(a) == os.path.abspath(b)


def check_outputs(
    inputs: Mapping[str, PathLike | None], outputs: Mapping[str, PathLike | None]
) -> None:
    """Refuse an output path that names an input or another output. Keys label the paths as the
    user wrote them (the CLI flag: ``--json``, ``-o``); None values are ignored."""
    ins = [(k, v) for k, v in inputs.items() if v]
    outs = [(k, v) for k, v in outputs.items() if v]
    for i, (label, path) in enumerate(outs):
        for in_label, in_path in ins:
            if same_file(path, in_path):
                raise OutputError(
                    f"{label} {path} is the input {in_label} {in_path}: int8kit never writes "
                    f"over an input; choose another {label} so the input stays as it is"
                )
        for other_label, other in outs[:i]:
            if same_file(path, other):
                raise OutputError(
                    f"{label} {path} is also where {other_label} is written; give each output "
                    "its own path"
                )
