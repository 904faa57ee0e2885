"""The written contract of the bridge's text side (``blip2core.protocols.TextBridge``) and the
"encode the image once" data path of match / retrieve / classify / extract_features.

Real modules only: the random-weight HF retrieval folder (tests/tiny_models.py) loaded as a
pipeline; third-party bridges are real ``nn.Module`` classes defined here and composed into a
``Pipeline`` with that pipeline's vision encoder and preprocessor.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blip2core import (
    Bridge,
    ComponentSpec,
    GenerationDefaults,
    MissingProtocolError,
    Pipeline,
    SupportsPrefixCache,
    TextBridge,
    load_pipeline,
)
from blip2core.bridges.mlp_projector import MLPProjector, MLPProjectorOptions
from blip2core.bridges.qformer.heads import query_text_similarity
from blip2core.protocols import BridgeOutput
import tiny_models as T

TEXTS = ["a cat lying on a blanket", "an astronaut", "a cup of coffee on a saucer", "a temple"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(hf_itm_folder):
    return load_pipeline(hf_itm_folder)


def with_bridge(pipe: Pipeline, bridge: nn.Module, name: str) -> Pipeline:
    """A pipeline with ``pipe``'s vision encoder and preprocessor and another bridge (named ``name`` in its spec)."""
    spec = pipe.spec.model_copy(update={"bridge": ComponentSpec(name=name), "llm": None})
    return Pipeline(spec, pipe.vision, bridge, None, pipe.preprocessor)


class AcmeTextBridge(nn.Module):
    """A third-party bridge that is no ``QFormerBridge``: it implements ``Bridge`` and ``TextBridge``
    by handing each call to a Q-Former it holds (so its numbers must equal the Q-Former's)."""

    def __init__(self, qformer: nn.Module) -> None:
        super().__init__()
        self.qformer = qformer
        self.hidden_size = qformer.hidden_size
        self.num_query_tokens = qformer.num_query_tokens
        self.has_text_heads = True
        self.tokenizer = qformer.tokenizer
        self.max_text_tokens = qformer.max_text_tokens

    @property
    def temp(self) -> torch.Tensor:
        return self.qformer.temp

    def forward(self, vision_tokens, vision_attention_mask=None) -> BridgeOutput:
        return self.qformer(vision_tokens, vision_attention_mask)

    def encode_queries(self, vision_tokens, vision_attention_mask=None):
        return self.qformer.encode_queries(vision_tokens, vision_attention_mask)

    def image_embeds_proj(self, query_output):
        return self.qformer.image_embeds_proj(query_output)

    def text_features(self, input_ids, attention_mask=None):
        return self.qformer.text_features(input_ids, attention_mask)

    def text_embeds_proj(self, text_hidden):
        return self.qformer.text_embeds_proj(text_hidden)

    def text_tokens_proj(self, text_hidden):
        return self.qformer.text_tokens_proj(text_hidden)

    def multimodal_features(self, vision_tokens, input_ids, attention_mask=None, vision_attention_mask=None):
        return self.qformer.multimodal_features(vision_tokens, input_ids, attention_mask, vision_attention_mask)

    def itm_logits(self, vision_tokens, input_ids, attention_mask=None, vision_attention_mask=None):
        return self.qformer.itm_logits(vision_tokens, input_ids, attention_mask, vision_attention_mask)

    def itg_logits(self, vision_tokens, input_ids, attention_mask=None, vision_attention_mask=None):
        return self.qformer.itg_logits(vision_tokens, input_ids, attention_mask, vision_attention_mask)


def test_the_built_in_components_implement_the_protocols_they_are_used_through(pipe, hf_opt_folder):
    assert isinstance(pipe.bridge, Bridge) and isinstance(pipe.bridge, TextBridge) and pipe.bridge.has_text_heads
    projector = MLPProjector(MLPProjectorOptions(), vision_width=48, llm_hidden_size=32)
    assert isinstance(projector, Bridge) and not isinstance(projector, TextBridge)
    generation = load_pipeline(hf_opt_folder)
    assert isinstance(generation.bridge, TextBridge) and not generation.bridge.has_text_heads
    assert isinstance(generation.llm, GenerationDefaults) and isinstance(generation.llm, SupportsPrefixCache)
    assert generation.llm.eos_token_ids == (T.OPT["eos_token_id"],)


def test_a_bridge_without_the_text_side_gets_one_error_naming_the_protocol(pipe, photos):
    projector = MLPProjector(MLPProjectorOptions(), vision_width=48, llm_hidden_size=32)
    plain = with_bridge(pipe, projector, "acme-projector")
    calls = {
        "match(method='itm')": lambda: plain.match(photos[0], TEXTS),
        "match(method='itc')": lambda: plain.match(photos[0], TEXTS, method="itc"),
        "retrieve": lambda: plain.retrieve(photos[:2], TEXTS),
        "classify": lambda: plain.classify(photos[0], ["cat", "dog"]),
        "extract_features(mode='text')": lambda: plain.extract_features(texts=TEXTS, mode="text"),
        "extract_features(mode='multimodal')": lambda: plain.extract_features(photos[:1], TEXTS[:1], mode="multimodal"),
    }
    for what, call in calls.items():
        with pytest.raises(MissingProtocolError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"{what} needs a bridge that implements blip2core.protocols.TextBridge (")
        assert "encode_queries" in message and "itm_logits" in message and "text_features" in message
        assert "this pipeline's bridge 'acme-projector' (blip2core.bridges.mlp_projector.MLPProjector) does not" in message
    # what needs no text side still works: image features without the ITC projection
    features = plain.extract_features(photos[:2])
    assert features.image_embeds.shape == (2, (T.IMAGE_SIZE // 8) ** 2 + 1, 32) and features.image_embeds_proj is None


def test_a_third_party_text_bridge_works_and_equals_the_q_former(pipe, photos):
    acme = with_bridge(pipe, AcmeTextBridge(pipe.bridge), "acme-text-bridge")
    assert isinstance(acme.bridge, TextBridge) and acme.bridge.__class__ is not pipe.bridge.__class__
    for method in ("itm", "itc"):
        torch.testing.assert_close(acme.match(photos, TEXTS, method=method), pipe.match(photos, TEXTS, method=method))
    assert acme.retrieve(photos, TEXTS, k=2) == pipe.retrieve(photos, TEXTS, k=2)
    assert acme.classify(photos[:2], ["cat", "astronaut"]) == pipe.classify(photos[:2], ["cat", "astronaut"])
    for mode, kwargs in (("image", {"images": photos[:2]}), ("text", {"texts": TEXTS}),
                         ("multimodal", {"images": photos, "texts": TEXTS})):
        got, expected = acme.extract_features(mode=mode, **kwargs), pipe.extract_features(mode=mode, **kwargs)
        assert got.keys() and list(got.keys()) == list(expected.keys())
        for key in got.keys():
            torch.testing.assert_close(got[key], expected[key])


class PassRecorder:
    """Forward hooks on the vision encoder, the whole bridge and the Q-Former's transformer stack:
    which passes a call ran. A Q-Former pass is "queries" (queries alone, reading the image),
    "text" (text alone) or "joint" (queries and text together)."""

    def __init__(self, pipe: Pipeline) -> None:
        self.passes: list[str] = []
        self.vision = self.bridge = 0
        self.handles = [
            pipe.vision.register_forward_hook(lambda *_: self._count("vision")),
            pipe.bridge.register_forward_hook(lambda *_: self._count("bridge")),
            pipe.bridge.encoder.register_forward_hook(self._encoder_pass),
        ]

    def _count(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)

    def _encoder_pass(self, module, args, output) -> None:
        embeddings, _, query_length = args[:3]
        if query_length == 0:
            self.passes.append("text")
        else:
            self.passes.append("queries" if embeddings.shape[1] == query_length else "joint")

    def __enter__(self) -> PassRecorder:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize(
    ("call", "vision", "passes"),
    [
        (lambda p, photos: p.match(photos, TEXTS, method="itc"), 1, ["queries", "text"]),
        (lambda p, photos: p.match(photos[0], TEXTS, method="itc"), 1, ["queries", "text"]),
        (lambda p, photos: p.match(photos, TEXTS), 1, ["joint"]),
        (lambda p, photos: p.retrieve(photos, TEXTS, k=2), 1, ["queries", "text", "joint"]),
        (lambda p, photos: p.classify(photos, ["cat", "astronaut"]), 1, ["queries", "text"]),
        (lambda p, photos: p.extract_features(photos, TEXTS, mode="multimodal"), 1, ["joint"]),
        (lambda p, photos: p.extract_features(photos), 1, ["queries"]),
        (lambda p, photos: p.extract_features(texts=TEXTS, mode="text"), 0, ["text"]),
    ],
    ids=["match-itc", "match-itc-one-image", "match-itm", "retrieve", "classify", "features-multimodal",
         "features-image", "features-text"],
)
def test_each_call_encodes_the_images_once_and_runs_each_q_former_pass_once(pipe, photos, call, vision, passes):
    with PassRecorder(pipe) as recorded:
        call(pipe, photos)
    assert recorded.vision == vision
    assert recorded.passes == passes
    # the whole bridge (query pass + LLM projection) runs only when its query output is the result
    assert recorded.bridge == (1 if passes == ["queries"] and vision else 0)


def test_one_itc_similarity_for_every_user():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(3, 5, 8), dim=-1)  # [I, Q, E]
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)  # [T, E]
    every = torch.stack([torch.stack([(image[i] @ text[t]).max() for t in range(3)]) for i in range(3)])
    torch.testing.assert_close(query_text_similarity(image, text), every)
    torch.testing.assert_close(query_text_similarity(image, text, 0.07), every / 0.07)
    torch.testing.assert_close(query_text_similarity(image, text, paired=True), every.diagonal())
    with pytest.raises(ValueError, match="paired similarity needs as many images as texts: 3 vs 2"):
        query_text_similarity(image, text[:2], paired=True)
