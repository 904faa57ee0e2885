"""Atomic writes: a file or folder appears whole at its final path, or not at all.

The one way blip2core and its plugins replace a file or folder that readers (another process, a
resumed run) may look at while it is written:

- ``atomic_file(path)``: a context manager yielding a temporary path in the same folder; write
  to it, and on leaving the block it is fsynced and ``os.replace``-d onto ``path``. If the block
  raises, the temporary file is removed and ``path`` is untouched.
- ``atomic_write_text(path, text)``: the same for a text file in one call.
- ``atomic_folder(path)``: the same for a whole folder (a temporary folder beside it, every file
  in it fsynced, then renamed into place; a folder already there is moved aside first, or kept
  when ``keep_existing`` says it is complete).

Temporary names start with ``.tmp-`` and moved-aside folders with ``.trash-`` (``is_leftover``
recognises both), so a listing can skip them and a clean-up can remove what a killed process left.
They also carry the host and process id of the writer: the first atomic write into a folder in a
process removes the leftovers there whose writer, on this host, is no longer running (a process
killed mid-write), and never those of a live writer or of another host's.
A temporary file keeps the final suffix, for writers that pick the format from it (matplotlib,
YAML/JSON spec files).

Permissions: what appears gets the mode a plain ``open(path, "w")`` would give (0666 less the
umask), even when the writer replaced the temporary file with one of its own: safetensors'
``save_file`` writes through a private 0600 temporary file of its own and renames it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


def is_leftover(path: str | os.PathLike) -> bool:
    """True for a temporary file / folder of an atomic write (or a moved-aside folder) that a
    killed process may have left behind."""
    return Path(path).name.startswith((TEMP_PREFIX, TRASH_PREFIX))


@contextmanager
def atomic_file(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a normal exit it replaces ``path`` atomically.

    Args:
        path: the final file (its folder must exist).
        fsync: flush the file to disk before the rename and the folder after it, so that a power
            loss leaves the old or the new file, never an empty one. A cache whose reader treats
            an unreadable file as a miss may turn it off to save a disk flush per file.

    The temporary file exists (empty) when the block starts; the writer overwrites it.
    """
    target = Path(path)
    _remove_stale(target)
    tmp = _temp_name(target, target.suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for open()
    plain_mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        yield tmp
        _set_mode(tmp, plain_mode)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, target)
        if fsync:
            _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)  # no-op once replaced


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` through ``atomic_file``: readers never see half of it."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)


@contextmanager
def atomic_folder(
    path: str | os.PathLike, *, keep_existing: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; on a normal exit it becomes ``path`` in one rename.

    Every file written in it is fsynced first, and the parent folder after the rename.

    Args:
        path: the final folder (its parent is created when missing).
        keep_existing: called when ``path`` exists by the time the new folder is complete (e.g.
            another process finished the same cache entry first): True keeps it and drops the new
            folder; False (or no callback) moves it aside, renames the new folder into place, and
            removes the old one.

    If the block raises, the temporary folder is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = _temp_name(target)
    tmp.mkdir()  # the umask applies, as for any new folder
    try:
        yield tmp
        allowed = stat.S_IMODE(os.stat(tmp).st_mode)  # 0777 less the umask, as for mkdir
        for root, _, files in os.walk(tmp):
            for name in files:
                _set_mode(Path(root) / name, allowed)
                _fsync_file(Path(root) / name)
        _fsync_dir(tmp)
        _rename_folder(tmp, target, keep_existing)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:32] or "host"


def _temp_name(target: Path, suffix: str = "") -> Path:
    """A fresh name beside ``target``: ``.tmp-<name>-<host>.<pid>-<random><suffix>``."""
    return target.with_name(f"{TEMP_PREFIX}{target.name}-{_host()}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


#: folders this process has cleaned already (a listing per folder, not per write)
_CLEANED: set[str] = set()


def _remove_stale(target: Path) -> None:
    """Once per folder and process: remove the temporary files / folders (and moved-aside folders)
    in ``target``'s folder that a writer on this host left when it was killed (its process is
    gone); a live writer's, and other hosts', are left alone."""
    folder = os.path.abspath(target.parent)
    if folder in _CLEANED:
        return
    _CLEANED.add(folder)
    mine = re.compile(rf"^(?:{re.escape(TEMP_PREFIX)}|{re.escape(TRASH_PREFIX)}).*-{re.escape(_host())}\.(\d+)-[0-9a-f]{{8}}")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = mine.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's process
        return True
    return True


def _rename_folder(tmp: Path, target: Path, keep_existing: Callable[[Path], bool] | None) -> None:
    for _ in range(3):  # another process may create or remove ``target`` meanwhile
        if target.exists():
            if keep_existing is not None and keep_existing(target):
                return
            trash = target.with_name(f"{TRASH_PREFIX}{target.name}-{_host()}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(target, trash)
            except FileNotFoundError:
                continue
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
            return
        try:
            os.rename(tmp, target)
            return
        except OSError:
            if not target.exists():
                raise
    os.rename(tmp, target)  # still racing: let the OS error name the problem


def _set_mode(path: Path, allowed: int) -> None:
    """Give the file ``path`` the permissions of a plain write: ``allowed`` (0666 or 0777 less the
    umask) without the executable bits, unless the writer set some (a script keeps them)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return
    current = stat.S_IMODE(info.st_mode)
    wanted = allowed & (0o666 | (current & 0o111))
    if current != wanted:
        os.chmod(path, wanted)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """fsync a folder's entry list (where the OS allows opening a folder; a no-op elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
