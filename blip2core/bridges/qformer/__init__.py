"""``qformer``: BLIP-2's Querying Transformer bridge.

Modules, one job each:

- ``config``: ``QFormerOptions`` (pydantic only; imported during plugin discovery).
- ``masks``: bi-directional and UniLM attention masks (pure functions).
- ``layers``: attention, feed-forward, Q-Former layer and encoder stack.
- ``heads``: text embeddings, the ITG LM head, the ITC query-text similarity.
- ``modeling``: ``QFormerBridge`` (forward, encode_queries, ITC / ITM / ITG, foreign checkpoints).
- ``checkpoint_keys`` / ``weight_loading``: HF / LAVIS / BERT names -> own names, shape-checked copies.
- ``bert_init``: ``init_from`` a BERT checkpoint; ``factory``: ``build_qformer``.

This file imports nothing heavy: ``from blip2core.bridges.qformer.config import QFormerOptions`` must
not pull in torch. ``QFormerBridge`` and ``build_qformer`` are importable from here lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QFormerOptions", "QFormerBridge", "build_qformer"]


def __getattr__(name: str) -> Any:
    if name == "QFormerOptions":
        from blip2core.bridges.qformer.config import QFormerOptions

        return QFormerOptions
    if name == "QFormerBridge":
        from blip2core.bridges.qformer.modeling import QFormerBridge

        return QFormerBridge
    if name == "build_qformer":
        from blip2core.bridges.qformer.factory import build_qformer

        return build_qformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
