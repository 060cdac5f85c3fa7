"""File helpers every step shares: atomic writes, their stale temporary files, content hashes, the cache root.

No dependency on the rest of the package.

Temporary files are named ``.<target name>.<host>-<pid>.<random>.tmp`` beside their target. A process
killed with SIGKILL (or a machine that loses power) leaves such a file behind: nothing can remove it at
that moment. The next write of the same target removes it: a temporary file of that target is stale
when it names this host and a process that no longer runs, or, written by another host (a shared
filesystem) or by a version of cka-probe that did not record its process, when it was last modified
more than :data:`STALE_AFTER_S` seconds ago. A live writer's file is never removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputNameError

__all__ = [
    "STALE_AFTER_S",
    "atomic_path",
    "atomic_paths",
    "check_output_name",
    "cache_root",
    "remove_stale_temp_files",
    "sha256_bytes",
    "sha256_file",
    "sha256_file_checked",
    "temp_prefix",
]

#: Age after which a temporary file whose writer cannot be checked (another host, an older version) is stale.
STALE_AFTER_S = 3600.0

_HOST = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname()) or "host"


def cache_root() -> Path:
    """The folder under which cka-probe keeps what it stores between runs.

    Returns:
        ``$CKA_PROBE_CACHE`` if set, else ``$XDG_CACHE_HOME/cka-probe``, else ``~/.cache/cka-probe``.
        Feature files go to its ``features`` sub-folder, downloaded data sets to ``datasets``.
    """
    if os.environ.get("CKA_PROBE_CACHE"):
        return Path(os.environ["CKA_PROBE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "cka-probe"


def temp_prefix(target: str | os.PathLike) -> str:
    """File-name prefix of this process's temporary files for ``target``: ``.<name>.<host>-<pid>.``."""
    return f".{Path(target).name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to another user, or cannot be checked: keep its file
        return True
    return True


def _is_stale(path: Path, owner: str, now: float) -> bool:
    host, _, pid = owner.rpartition("-")
    if host == _HOST and pid.isdigit():
        return int(pid) != os.getpid() and not _pid_alive(int(pid))
    try:
        return now - path.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale_temp_files(target: str | os.PathLike) -> list[Path]:
    """Remove the stale temporary files (or directories) of ``target`` (see the module docstring); returns those
    removed."""
    target = Path(target)
    head = f".{target.name}."
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(".tmp")) or len(name) <= len(head) + 4:
            continue
        owner, _, _random = name[len(head) : -4].rpartition(".")
        path = target.parent / name
        if _is_stale(path, owner, now):
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                if entry.is_dir(follow_symlinks=False):  # a temporary directory (a spool of Grams)
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def _new_temp_file(target: Path) -> Path:
    remove_stale_temp_files(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target), suffix=".tmp")
    os.close(fd)
    return Path(tmp_name)


def _flush_to_disk(tmp: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is flushed to disk and renamed onto ``target``.

    An exception leaves ``target`` untouched and removes the temporary file, so a reader never sees a
    half-written file. A process killed while writing leaves ``target`` untouched too, but its
    temporary file stays until the next write of ``target`` removes it (see the module docstring).
    """
    with atomic_paths({"target": target}) as temps:
        yield temps["target"]


@contextlib.contextmanager
def atomic_paths(targets: dict[str, str | os.PathLike]) -> Iterator[dict[str, Path]]:
    """:func:`atomic_path` for a set of outputs written as one: a temporary path per target, all flushed, then
    renamed onto their targets in the mapping's order, one right after another, once every file is written.

    An exception while writing leaves every target untouched. A process killed before the renames leaves
    no target (and stale temporary files); one killed between two renames (a window of microseconds) leaves
    the first targets only: put the file that marks a set complete last.
    """
    paths = {key: Path(target) for key, target in targets.items()}
    temps: dict[str, Path] = {}
    try:
        for key, target in paths.items():
            temps[key] = _new_temp_file(target)
        yield dict(temps)
        for tmp in temps.values():
            _flush_to_disk(tmp)
        for key, tmp in temps.items():
            os.replace(tmp, paths[key])
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes held in memory: those about to be written, or those just read."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _sha256_of_version(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def sha256_file_checked(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, computed once per process for each version of a file.

    A version is the file's resolved path, size, modification time and inode; when any of them changes
    (the file was rewritten or replaced), the bytes are hashed again.
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    return _sha256_of_version(real, stat.st_size, stat.st_mtime_ns, stat.st_ino)


def check_output_name(name: str, option: str) -> str:
    """``name`` when it is a plain file name that stays in its output folder, else :class:`OutputNameError`.

    Args:
        name: the file stem asked for.
        option: how the user gave it (``output.name``), for the message.

    >>> check_output_name("figure_3", "output.name")
    'figure_3'
    """
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or name in (".", "..") or "\0" in name or any(sep in name for sep in separators):
        raise OutputNameError(
            f"{option} {name!r} is not a plain file name: outputs must stay in the output folder; "
            "give a name without '/' or '..' and choose the folder with output.dir / --out"
        )
    return name
