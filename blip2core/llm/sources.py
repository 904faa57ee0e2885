"""Where weights and tokenizers come from: local folders, hub ids (offline-aware), GGUF files.

What a hub id is and whether downloads are off follow ``blip2core.checkpoints.hub`` (a language
model or tokenizer may have a bare legacy id such as ``gpt2``). Every failure is a
``CheckpointError`` that names what the user wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

from blip2core.checkpoints.hub import hub_offline, looks_like_hub_id
from blip2core.errors import CheckpointError


def _offline_message(name: str, what: str) -> str:
    return (
        f"{name!r}: no local {what} folder of that name, and the Hugging Face hub id {name!r} is not "
        f"in the local cache while HF_HUB_OFFLINE=1 disables downloads; download it on a connected "
        f"machine (`hf download {name}`) or give a local folder"
    )


def resolve_folder(name: str, *, revision: str | None = None, probe: str = "config.json", what: str = "model") -> str:
    """A local folder (returned as an absolute path) or a hub id (returned unchanged).

    Offline, a hub id is accepted only when ``probe`` (a file every such repo has) is cached.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise CheckpointError(f"{name}: is a file; expected a {what} folder (or a hub id)")
    if not looks_like_hub_id(name, bare_names=True):
        raise CheckpointError(f"{name}: no such {what} folder")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, probe, revision=revision), str):
            raise CheckpointError(_offline_message(name, what))
    return name


def resolve_gguf(path: str | None, gguf_file: str, *, revision: str | None = None) -> Path:
    """The local ``.gguf`` file named by ``gguf_file`` (full path) or ``path`` + ``gguf_file``.

    ``path`` may be a local folder or a hub repo id (downloaded through the HF cache; offline,
    it must be cached already).
    """
    direct = Path(gguf_file).expanduser()
    if path is None or direct.is_absolute():
        if not direct.is_file():
            raise CheckpointError(f"{gguf_file}: no such GGUF file")
        return direct.resolve()
    folder = Path(path).expanduser()
    if folder.is_dir():
        file = folder / gguf_file
        if not file.is_file():
            raise CheckpointError(f"{path}: has no GGUF file {gguf_file!r}")
        return file.resolve()
    if folder.exists() or not looks_like_hub_id(path, bare_names=True):
        raise CheckpointError(f"{path}: no such folder (looking for the GGUF file {gguf_file!r})")
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    try:
        return Path(hf_hub_download(path, gguf_file, revision=revision, local_files_only=offline))
    except Exception as exc:  # the hub client raises many types: name the inputs instead
        if offline:
            raise CheckpointError(_offline_message(path, "GGUF") + f" (file {gguf_file!r})") from None
        raise CheckpointError(f"{path}: cannot fetch GGUF file {gguf_file!r} from the hub: {exc}") from None


def blip2_cache_root() -> Path:
    """``$BLIP2_CACHE``, else ``$XDG_CACHE_HOME/blip2core``, else ``~/.cache/blip2core``."""
    if os.environ.get("BLIP2_CACHE"):
        return Path(os.environ["BLIP2_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "blip2core"
