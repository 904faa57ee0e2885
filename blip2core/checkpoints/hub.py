"""Hugging Face hub ids: the one rule for what names a hub repository, whether downloads are off,
and resolving a model repo (``Salesforce/blip2-opt-2.7b``) to a local folder.

``looks_like_hub_id`` and ``hub_offline`` are used by every place that accepts a hub id: whole
BLIP-2 models (``load_pipeline``, here) and language models / tokenizers / GGUF files
(``blip2core.llm.sources``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from blip2core.checkpoints.hub_download import CacheState, cache_state, download_snapshot
from blip2core.errors import CheckpointError

#: ``owner/name`` or a bare ``name``, as the hub spells repository ids: each part starts with a
#: letter or digit, then letters, digits, ``_``, ``.`` or ``-``
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
#: environment variables that turn hub downloads off (huggingface_hub's and transformers' own)
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def looks_like_hub_id(name: str, *, bare_names: bool = False) -> bool:
    """Whether ``name`` reads as a hub repository id rather than a local path.

    ``facebook/opt-2.7b`` yes; ``/data/opt``, ``./opt``, ``~/opt``, ``a/b/c``, ``../x`` and any
    path that exists no.

    Args:
        name: what the user wrote.
        bare_names: accept an id without an owner too (legacy repos such as ``gpt2``: language
            models and tokenizers). A whole BLIP-2 model always has an owner, and a bare name
            there is a registered model's name or a typo.
    """
    text = str(name)
    if not HUB_ID.match(text) or (not bare_names and "/" not in text):
        return False
    return not Path(text).exists()


def hub_offline() -> bool:
    """True when hub downloads are disabled (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set to
    1, on, yes or true, read now; or huggingface_hub's own setting)."""
    if any(os.environ.get(variable, "").strip().lower() in _TRUE for variable in OFFLINE_VARIABLES):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return False
    return bool(constants.HF_HUB_OFFLINE)


def resolve_hub_id(repo_id: str, revision: str | None = None, *, name: str | None = None) -> Path:
    """The local folder of a model repo: from the cache, downloading what is missing unless offline.

    Only safetensors weights and text/JSON files are fetched: never pickles. Downloads go through
    huggingface_hub (progress bars, resumed connections) and are checked against the hub's checksums
    (``blip2core.checkpoints.hub_download``).

    Args:
        repo_id: ``owner/name``.
        revision: branch, tag or commit (default: ``main``).
        name: the preset the repo belongs to, for the ``blip2 download NAME`` hint.

    Raises:
        CheckpointError: offline and not (completely) cached, naming the missing files and the
            command that fetches them; or the download failed.
    """
    state = cache_state(repo_id, revision, ALLOW_PATTERNS)
    if state.complete and state.folder is not None and (hub_offline() or state.missing is not None):
        return state.folder
    if hub_offline():
        raise CheckpointError(offline_message(repo_id, revision, state, name))
    return download_snapshot(repo_id, revision, ALLOW_PATTERNS, verify_all=False)


def download_command(repo_id: str, revision: str | None = None, name: str | None = None) -> str:
    """The ``blip2 download ...`` command line that fetches a preset or repo."""
    return f"blip2 download {name}" if name else f"blip2 download {repo_id}" + (
        f" --revision {revision}" if revision else "")


def offline_message(repo_id: str, revision: str | None, state: CacheState, name: str | None = None) -> str:
    """Why an offline load of ``repo_id`` cannot work: what is missing, and how to fetch it."""
    what = f"{name} ({repo_id})" if name else repo_id
    at = f" at revision {revision}" if revision else ""
    if state.missing:
        shown = ", ".join(state.missing[:6]) + (f", ... ({len(state.missing) - 6} more)" if len(state.missing) > 6 else "")
        gap = f"the cached copy{at} lacks {len(state.missing)} file(s): {shown}"
    elif state.folder is not None:
        gap = f"the cached copy{at} ({state.folder}) has no config.json"
    else:
        from huggingface_hub import constants

        gap = (f"nothing of it{at} is in the Hugging Face cache ({constants.HF_HUB_CACHE}); missing: every file "
               f"matching {', '.join(ALLOW_PATTERNS)}")
    return (f"{repo_id}: no such local file or folder, and cannot resolve it as a hub id (HF_HUB_OFFLINE is "
            f"set and {gap}). Fetch {what} with network access: {download_command(repo_id, revision, name)}")
