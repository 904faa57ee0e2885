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


def resolve_hub_id(repo_id: str, revision: str | None = None) -> Path:
    """Download (or, offline, find in the local cache) a model repo; returns its folder.

    Only safetensors weights and text/JSON files are fetched: never pickles.
    """
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, local_files_only=offline)
        )
    except Exception as exc:
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the local cache"
            if offline
            else "the hub could not be reached or the repo does not exist"
        )
        raise CheckpointError(
            f"{repo_id}: no such local file or folder, and cannot resolve it as a hub id ({hint}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
