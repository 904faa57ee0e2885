"""Fetching a Hugging Face model repository into the standard cache, checking what arrived, and
telling what is missing from the cache without touching the network.

Everything goes through huggingface_hub (``snapshot_download``): its progress bars, its retries, the
standard cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) and ``HF_ENDPOINT``.
huggingface_hub (2.x) checks each file's *size* but not its content, so ``verify_snapshot`` hashes
every file against the hub's own metadata (``HfApi.list_repo_tree`` at the downloaded commit): the
sha256 of LFS files (weights) and the git blob id (sha1) of the others. A file that does not match is
deleted from the cache, so the next download fetches it again. (The cache's own tree listing,
``get_cached_repo_tree``, does not keep the LFS sha256, so it serves only to tell which files are
missing.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from blip2core.errors import CheckpointError

_CHUNK = 8 << 20


@dataclass(frozen=True)
class CacheState:
    """What the local cache holds of one repository revision.

    Attributes:
        folder: the snapshot folder, None when the revision is not in the cache at all.
        missing: files the hub lists (after the patterns) that the snapshot lacks; None when the
            cache holds no listing of the repository, so which files exist is unknown.
    """

    folder: Path | None
    missing: list[str] | None

    @property
    def complete(self) -> bool:
        """The snapshot exists and lacks nothing its listing names (or, without a listing, has a config.json)."""
        if self.folder is None:
            return False
        return not self.missing if self.missing is not None else (self.folder / "config.json").is_file()


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch(path, p) or fnmatch(name, p) for p in patterns)


def cache_state(repo_id: str, revision: str | None, patterns: Sequence[str]) -> CacheState:
    """Look in the local cache only (no network): the snapshot of ``revision`` and its missing files."""
    from huggingface_hub import constants, get_cached_repo_tree
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    commit = revision if revision and len(revision) == 40 else None
    if commit is None:
        ref = storage / "refs" / (revision or "main")
        commit = ref.read_text().strip() if ref.is_file() else None
    if commit is None:
        return CacheState(None, None)
    folder = storage / "snapshots" / commit
    try:
        tree = get_cached_repo_tree(repo_id, revision=commit)
    except Exception:  # no listing cached (a cache filled by an older huggingface_hub, or by hand)
        return CacheState(folder if folder.is_dir() else None, None)
    wanted = [f.path for f in tree if _matches(f.path, patterns)]
    missing = [path for path in wanted if not (folder / path).is_file()]
    return CacheState(folder if folder.is_dir() else None, missing)


def download_snapshot(repo_id: str, revision: str | None, patterns: Sequence[str], *, verify_all: bool) -> Path:
    """``snapshot_download`` (progress bars on stderr, retries that resume a dropped connection with an
    HTTP Range request), then ``verify_snapshot``: every file when ``verify_all``, else only those the
    cache did not hold complete before.

    Raises:
        CheckpointError: the hub cannot be reached, the repository or revision does not exist, or a
            file does not match the hub's checksum (it is removed from the cache).
    """
    from huggingface_hub import snapshot_download

    before = cache_state(repo_id, revision, patterns)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns)))
    except Exception as exc:
        raise CheckpointError(f"{repo_id}: download failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if verify_all or before.folder is None or before.missing is None:
        only = None
    else:
        only = set(before.missing)
    verify_snapshot(repo_id, folder, only=only)
    return folder


def verify_snapshot(repo_id: str, folder: Path, *, only: set[str] | None = None) -> int:
    """Hash the snapshot's files against the hub's file listing at its commit (one API call); returns
    how many files were checked.

    Args:
        repo_id: the repository.
        folder: its snapshot folder (``.../snapshots/<commit>``).
        only: check just these paths (default: every file of the listing present in ``folder``).

    Raises:
        CheckpointError: a file's sha256 (LFS) or git blob id differs from the hub's; that file is
            deleted from the cache first, and the message says how to fetch it again.
    """
    from huggingface_hub import HfApi, RepoFile

    try:
        tree = [entry for entry in HfApi().list_repo_tree(repo_id, revision=folder.name, recursive=True)
                if isinstance(entry, RepoFile)]
    except Exception as exc:
        raise CheckpointError(f"{repo_id}: cannot read the hub's checksums of commit {folder.name} to check the "
                              f"download ({type(exc).__name__}: {_first_line(exc)})") from None
    checked = 0
    for entry in tree:
        path = folder / entry.path
        if (only is not None and entry.path not in only) or not path.is_file():
            continue
        if entry.lfs is not None:
            expected, actual, kind = entry.lfs.sha256, _sha256(path), "sha256"
        else:
            expected, actual, kind = entry.blob_id, _git_blob_id(path), "git blob id"
        checked += 1
        if expected and actual != expected:
            _remove_from_cache(path)
            raise CheckpointError(
                f"{repo_id}: {entry.path}: checksum mismatch ({kind} {actual}, the hub says {expected}); "
                "the corrupt file was removed from the cache, download it again"
            )
    return checked


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_id(path: Path) -> str:
    """git's object id of a file: sha1 of ``b"blob <size>\\0" + content``."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_from_cache(path: Path) -> None:
    """Delete a snapshot file and the blob its link points to."""
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
