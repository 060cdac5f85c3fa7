"""Writing outputs and naming their files: atomically (temporary file, then rename) and never over an existing file unless asked.

The outputs of one result (a CSV, a JSON record and figures) are written as one set
(:func:`~cka_probe._files.atomic_paths`): every file to a temporary name, then all renamed, the JSON record
last. A set whose JSON record is missing was cut short by a kill between two renames; :func:`check_outputs`
lets a rerun complete it without ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .._files import atomic_path, atomic_paths, remove_stale_temp_files, temp_prefix
from ..errors import CKAProbeError, OutputExistsError

__all__ = [
    "OutputDirError",
    "OutputExistsError",
    "atomic_path",
    "atomic_paths",
    "check_outputs",
    "ensure_writable_dir",
    "new_output_dir",
    "safe_name",
]


class OutputDirError(CKAProbeError):
    """The output directory cannot be created or written."""


def ensure_writable_dir(
    directory: str | os.PathLike, what: str = "output directory", fix: str = "choose another with --out"
) -> Path:
    """Create ``directory`` if needed and check that files can be written there."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{what} {path} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        remove_stale_temp_files(probe)  # left by a process killed during this check
        with tempfile.NamedTemporaryFile(dir=path, prefix=temp_prefix(probe), suffix=".tmp"):
            pass
    except OSError as exc:
        raise OutputDirError(f"cannot write to {what} {path} ({exc.strerror or exc}); {fix}") from None
    return path


def check_outputs(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse to go on when any output exists already and ``overwrite`` is false.

    When the outputs are a set with a JSON record (written last, see the module docstring) and that record is
    missing, the files present are what a killed run left: they are not refused, the rerun replaces them.
    """
    if overwrite:
        return
    paths = [Path(p) for p in paths]
    records = [p for p in paths if p.suffix == ".json"]
    if len(records) == 1 and not records[0].exists():
        return  # an incomplete set: completed by this run
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more of its outputs)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0]} exists already{more}; pass --overwrite (overwrite=True) or choose another --out"
        )


@contextlib.contextmanager
def new_output_dir(
    directory: str | os.PathLike, what: str = "output directory", fix: str = "choose another with --out"
) -> Iterator[Path]:
    """:func:`ensure_writable_dir` for a job's outputs; folders it created are removed again when the
    job fails before writing anything into them, so a failed run leaves no empty folder behind."""
    path = Path(directory)
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    ensure_writable_dir(path, what, fix)
    try:
        yield path
    except BaseException:
        for folder in missing:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty
        raise


def safe_name(name: str) -> str:
    """``name`` with the characters that are unsafe in file names replaced.

    >>> safe_name("hf-hub:org/model")
    'hf-hub_org_model'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
