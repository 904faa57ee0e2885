"""The ``mini`` model: its spec, with the shipped weights referenced inside this package.

``weights/mini.json`` holds the pipeline spec the weights were trained with (copied from the
stage-2 recipe by ``python -m blip2_mini.export``) and where they came from; ``weights/mini.safetensors``
holds the trainable state (the Q-Former less its frozen MiniLM text side), stored in float16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip2core.plugin_api import CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "mini.safetensors"
CARD_FILE = WEIGHTS_DIR / "mini.json"


def read_card() -> dict[str, Any]:
    """``weights/mini.json``: {"pipeline": spec, "source": {...}, "eval": {...}}."""
    try:
        return json.loads(CARD_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{CARD_FILE}: missing; reinstall blip2-mini") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{CARD_FILE}: not valid JSON: {exc}") from None


def mini_spec(options: Any = None) -> dict[str, Any]:
    """The ``mini`` pipeline spec: EfficientNet-Lite0 -> instruction-aware MiniLM Q-Former (8 queries)
    -> SmolLM2-135M-Instruct, with the trained Q-Former weights."""
    if not WEIGHTS_FILE.is_file():
        raise CheckpointError(f"{WEIGHTS_FILE}: missing; reinstall blip2-mini")
    spec = dict(read_card()["pipeline"])
    spec["weights"] = [str(WEIGHTS_FILE)]
    return spec
