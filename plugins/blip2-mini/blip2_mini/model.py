"""The ``mini`` models: their specs, with the shipped weights referenced inside this package.

``weights/<name>.json`` holds the pipeline spec the weights were trained with (copied from the
recipe by ``python -m blip2_mini.export``), where they came from and their measured evaluation;
``weights/<name>.safetensors`` holds the trainable state (the Q-Former less its frozen MiniLM text
side), stored in float16. Two are shipped:

- ``mini``: stages 1-3 (recipes/mini-stage*.yaml); answers "Question: ... Answer:" (``pipe.answer``)
  and captions;
- ``mini-chat``: ``mini`` taught to answer through ``pipe.chat`` in SmolLM2's chat template, one or
  two turns (recipes/mini-chat.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip2core.plugin_api import CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights"
MODELS = ("mini", "mini-chat")


def weights_file(name: str = "mini") -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def card_file(name: str = "mini") -> Path:
    return WEIGHTS_DIR / f"{name}.json"


WEIGHTS_FILE = weights_file()
CARD_FILE = card_file()


def read_card(name: str = "mini") -> dict[str, Any]:
    """``weights/<name>.json``: {"pipeline": spec, "source": {...}, "eval": {...}}."""
    path = card_file(name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; reinstall blip2-mini") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from None


def model_spec(name: str = "mini") -> dict[str, Any]:
    """A shipped model's pipeline spec: EfficientNet-Lite0 -> instruction-aware MiniLM Q-Former
    (8 queries) -> SmolLM2-135M-Instruct, with its trained Q-Former weights."""
    path = weights_file(name)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; reinstall blip2-mini")
    spec = dict(read_card(name)["pipeline"])
    spec["weights"] = [str(path)]
    return spec


def mini_spec(options: Any = None) -> dict[str, Any]:
    """The ``mini`` pipeline spec."""
    return model_spec("mini")


def mini_chat_spec(options: Any = None) -> dict[str, Any]:
    """The ``mini-chat`` pipeline spec."""
    return model_spec("mini-chat")
