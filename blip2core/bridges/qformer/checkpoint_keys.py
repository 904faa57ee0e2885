"""How foreign Q-Former weight names map onto ``QFormerBridge``'s own parameter names.

Checked against transformers 5.24 ``state_dict()`` / ``save_pretrained`` and LAVIS ``Qformer.py`` /
``blip2*.py``. Top level (own name <- HF name <- LAVIS name)::

    query_tokens                         query_tokens                    query_tokens
    encoder.input_norm.*                 qformer.layernorm.*             Qformer.bert.embeddings.LayerNorm.*
                                         (InstructBLIP: qformer.embeddings.layernorm.*)
    encoder.layers.{i}.*                 qformer.encoder.layer.{i}.*     Qformer.bert.encoder.layer.{i}.*
    text_embeddings.word_embeddings.*    embeddings.word_embeddings.*    Qformer.bert.embeddings.word_embeddings.*
                                         (InstructBLIP: qformer.embeddings.word_embeddings.*, and
                                         likewise position_embeddings)
                                                                         (+ tied Qformer.cls.predictions.decoder.weight)
    text_embeddings.position_embeddings  embeddings.position_embeddings  Qformer.bert.embeddings.position_embeddings
    lm_head.transform.* / lm_head.norm.* (HF has no ITG head)            Qformer.cls.predictions.transform.dense.* /
                                                                         .transform.LayerNorm.*
    lm_head.bias                         -                               Qformer.cls.predictions.bias (= .decoder.bias)
    vision_projection.* / text_projection.*  (same names)                vision_proj.* / text_proj.*
    itm_head.*                           itm_head.*                      itm_head.*
    temp                                 (HF drops it)                   temp
    llm_projection.*                     language_projection.*           opt_proj.* / llm_proj.* / t5_proj.*

Within layer ``{i}`` (own <- HF <- LAVIS)::

    self_attention.{query,key,value}     attention.attention.*           attention.self.*
    self_attention.out_proj / .norm      attention.output.dense / .LayerNorm          (same in both)
    cross_attention.{query,key,value}    crossattention.attention.*      crossattention.self.*
    cross_attention.out_proj / .norm     crossattention.output.dense / .LayerNorm     (same in both)
    query_ffn.fc_in / .fc_out / .norm    intermediate_query.dense / output_query.dense / .LayerNorm
    text_ffn.fc_in / .fc_out / .norm     intermediate.dense / output.dense / output.LayerNorm

Ignored buffers: ``embeddings.position_ids`` / ``Qformer.bert.embeddings.position_ids``. A plain BERT
checkpoint (``init_from``, optionally prefixed ``bert.``) uses LAVIS' layer names without the query FFN and
cross-attention; its FFN maps onto both ``text_ffn`` and ``query_ffn``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: within-layer names shared by HF and LAVIS (after the ``...layer.{i}.`` prefix)
_FFN_PARTS: dict[str, tuple[str, ...]] = {
    "intermediate_query.dense.": ("query_ffn.fc_in.",),
    "output_query.dense.": ("query_ffn.fc_out.",),
    "output_query.LayerNorm.": ("query_ffn.norm.",),
    "intermediate.dense.": ("text_ffn.fc_in.",),
    "output.dense.": ("text_ffn.fc_out.",),
    "output.LayerNorm.": ("text_ffn.norm.",),
}
_ATTENTION_OUTPUT_PARTS: dict[str, tuple[str, ...]] = {
    "attention.output.dense.": ("self_attention.out_proj.",),
    "attention.output.LayerNorm.": ("self_attention.norm.",),
    "crossattention.output.dense.": ("cross_attention.out_proj.",),
    "crossattention.output.LayerNorm.": ("cross_attention.norm.",),
}


@dataclass(frozen=True)
class KeyScheme:
    """One foreign naming scheme.

    Attributes:
        name: "hf", "lavis" or "bert".
        top_level: foreign prefix (or exact name) -> own prefixes (or exact names).
        layer_prefix: foreign prefix before the layer index (``"qformer.encoder.layer."``).
        layer_parts: within-layer foreign prefix -> own prefixes (below ``encoder.layers.{i}.``).
        ignored: foreign names that carry no weights (e.g. ``position_ids`` buffers).
        strip_prefixes: optional leading prefixes removed first (``"bert."`` for BertFor* checkpoints).
        never_stored: own names (or prefixes ending in ".") this layout cannot hold at all (HF drops the ITG
            head and the temperature), so their absence is not "missing".
    """

    name: str
    top_level: dict[str, tuple[str, ...]]
    layer_prefix: str
    layer_parts: dict[str, tuple[str, ...]]
    ignored: frozenset[str] = field(default_factory=frozenset)
    strip_prefixes: tuple[str, ...] = ()
    never_stored: tuple[str, ...] = ()

    def own_names(self, foreign_name: str) -> list[str]:
        """Own parameter names that ``foreign_name`` fills ([] when the scheme does not know it)."""
        for prefix in self.strip_prefixes:
            if foreign_name.startswith(prefix):
                foreign_name = foreign_name[len(prefix) :]
                break
        if foreign_name.startswith(self.layer_prefix):
            index, _, rest = foreign_name[len(self.layer_prefix) :].partition(".")
            if not index.isdigit():
                return []
            return [f"encoder.layers.{index}.{own}" for own in _replace_prefix(rest, self.layer_parts)]
        return _replace_prefix(foreign_name, self.top_level)

    def cannot_store(self, own_name: str) -> bool:
        """Whether this layout has no place for ``own_name`` (it keeps its initial value on load)."""
        return any(own_name.startswith(p) if p.endswith(".") else own_name == p for p in self.never_stored)

    def is_ignored(self, foreign_name: str) -> bool:
        """Whether ``foreign_name`` is a known weightless entry to skip silently."""
        return foreign_name in self.ignored


def _replace_prefix(name: str, table: dict[str, tuple[str, ...]]) -> list[str]:
    for foreign, owns in table.items():
        if foreign.endswith("."):
            if name.startswith(foreign):
                return [own + name[len(foreign) :] for own in owns]
        elif name == foreign:
            return list(owns)
    return []


HF = KeyScheme(
    name="hf",
    top_level={
        "query_tokens": ("query_tokens",),
        "qformer.layernorm.": ("encoder.input_norm.",),
        # InstructBLIP keeps the text embeddings and their LayerNorm inside the Q-Former
        "qformer.embeddings.layernorm.": ("encoder.input_norm.",),
        "qformer.embeddings.word_embeddings.": ("text_embeddings.word_embeddings.",),
        "qformer.embeddings.position_embeddings.": ("text_embeddings.position_embeddings.",),
        "embeddings.word_embeddings.": ("text_embeddings.word_embeddings.",),
        "embeddings.position_embeddings.": ("text_embeddings.position_embeddings.",),
        "vision_projection.": ("vision_projection.",),
        "text_projection.": ("text_projection.",),
        "itm_head.": ("itm_head.",),
        "language_projection.": ("llm_projection.",),
    },
    layer_prefix="qformer.encoder.layer.",
    layer_parts={
        "attention.attention.": ("self_attention.",),
        "crossattention.attention.": ("cross_attention.",),
        **_ATTENTION_OUTPUT_PARTS,
        **_FFN_PARTS,
    },
    ignored=frozenset({"embeddings.position_ids", "qformer.embeddings.position_ids"}),
    never_stored=("lm_head.", "temp"),
)

LAVIS = KeyScheme(
    name="lavis",
    top_level={
        "query_tokens": ("query_tokens",),
        "temp": ("temp",),
        "Qformer.bert.embeddings.LayerNorm.": ("encoder.input_norm.",),
        "Qformer.bert.embeddings.word_embeddings.": ("text_embeddings.word_embeddings.",),
        "Qformer.bert.embeddings.position_embeddings.": ("text_embeddings.position_embeddings.",),
        "Qformer.cls.predictions.transform.dense.": ("lm_head.transform.",),
        "Qformer.cls.predictions.transform.LayerNorm.": ("lm_head.norm.",),
        "Qformer.cls.predictions.bias": ("lm_head.bias",),
        "Qformer.cls.predictions.decoder.bias": ("lm_head.bias",),
        "Qformer.cls.predictions.decoder.weight": ("text_embeddings.word_embeddings.weight",),
        "vision_proj.": ("vision_projection.",),
        "text_proj.": ("text_projection.",),
        "itm_head.": ("itm_head.",),
        "opt_proj.": ("llm_projection.",),
        "llm_proj.": ("llm_projection.",),
        "t5_proj.": ("llm_projection.",),
    },
    layer_prefix="Qformer.bert.encoder.layer.",
    layer_parts={
        "attention.self.": ("self_attention.",),
        "crossattention.self.": ("cross_attention.",),
        **_ATTENTION_OUTPUT_PARTS,
        **_FFN_PARTS,
    },
    ignored=frozenset({"Qformer.bert.embeddings.position_ids"}),
)

BERT = KeyScheme(
    name="bert",
    top_level={
        "embeddings.LayerNorm.": ("encoder.input_norm.",),
        "embeddings.word_embeddings.": ("text_embeddings.word_embeddings.",),
        "embeddings.position_embeddings.": ("text_embeddings.position_embeddings.",),
        "cls.predictions.transform.dense.": ("lm_head.transform.",),
        "cls.predictions.transform.LayerNorm.": ("lm_head.norm.",),
        "cls.predictions.bias": ("lm_head.bias",),
        "cls.predictions.decoder.bias": ("lm_head.bias",),
        "cls.predictions.decoder.weight": ("text_embeddings.word_embeddings.weight",),
    },
    layer_prefix="encoder.layer.",
    layer_parts={
        "attention.self.": ("self_attention.",),
        "attention.output.dense.": ("self_attention.out_proj.",),
        "attention.output.LayerNorm.": ("self_attention.norm.",),
        # BLIP-2 copies BERT's FFN into both the text FFN and the query FFN
        "intermediate.dense.": ("text_ffn.fc_in.", "query_ffn.fc_in."),
        "output.dense.": ("text_ffn.fc_out.", "query_ffn.fc_out."),
        "output.LayerNorm.": ("text_ffn.norm.", "query_ffn.norm."),
    },
    ignored=frozenset({"embeddings.position_ids"}),
    strip_prefixes=("bert.",),
)

LAYOUTS: dict[str, KeyScheme] = {"hf": HF, "lavis": LAVIS}
