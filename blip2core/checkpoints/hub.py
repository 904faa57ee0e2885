"""Hugging Face hub ids (``Salesforce/blip2-opt-2.7b``) resolved to local folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

from blip2core.errors import CheckpointError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def looks_like_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not Path(text).exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_hub_id(repo_id: str, revision: str | None = None) -> Path:
    """Download (or, offline, find in the local cache) a model repo; returns its folder.

    Only safetensors weights and text/JSON files are fetched: never pickles.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, local_files_only=offline()
            )
        )
    except Exception as exc:
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the local cache"
            if offline()
            else "the hub could not be reached or the repo does not exist"
        )
        raise CheckpointError(
            f"{repo_id}: no such local file or folder, and cannot resolve it as a hub id ({hint}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
