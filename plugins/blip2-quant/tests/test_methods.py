"""Each quantization method on each component kind of a tiny random pipeline: what it stores and
how closely the quantized pipeline follows the float32 one."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from blip2_quant import QuantizationWarning, parameter_bytes
from blip2_quant.int8 import DynamicInt8Linear
from blip2_quant.packed import QuantEmbedding, QuantLinear
from blip2_quant.targets import PLAIN_LINEARS, output_heads
from blip2core.precision import PrecisionWarning

METHODS = ["none", "bf16", "fp16", "int8-dynamic", "int8-weight-only", "int4-weight-only"]
#: method -> least logits cosine with the fp32 pipeline, any one component quantized
MIN_COSINE = {"none": 1.0 - 1e-12, "bf16": 0.999, "fp16": 0.9999, "int8-dynamic": 0.999, "int8-weight-only": 0.9999,
              "int4-weight-only": 0.99}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@pytest.mark.parametrize("target", ["vision", "bridge", "llm"])
@pytest.mark.parametrize("method", METHODS)
def test_method_on_component(build, inputs, reference, method, target):
    ref_pipe, ref_logits, _ = reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # bf16 / fp16 on a CPU without them: slow but exact enough
        pipe = build(quantize={target: method})
    pixels, ids = inputs
    with torch.no_grad():
        logits = pipe(pixels, ids).logits
    assert logits.shape == ref_logits.shape  # in the LLM's dtype (bf16 / fp16 when the LLM is cast)
    if method == "none":
        assert torch.equal(logits, ref_logits)
    assert cosine(logits, ref_logits) >= MIN_COSINE[method]

    part, ref_part = getattr(pipe, target), getattr(ref_pipe, target)
    before, after = parameter_bytes(ref_part), parameter_bytes(part)
    if method == "none":
        assert after == before
    elif method in ("bf16", "fp16"):
        assert after < 0.55 * before
    else:  # only Linear layers change (not a tied output head): 4x (int8) or ~6x (int4) smaller, scales included
        linears = [m for m in ref_part.modules() if type(m) in PLAIN_LINEARS and id(m) not in output_heads(ref_part)]
        quantized = sum(m.weight.numel() * m.weight.element_size() for m in linears)
        shrink = 0.25 if method != "int4-weight-only" else 0.16
        per_row = 16  # at most: a float64 scale and an int64 zero point per output channel (torch.ao)
        assert after <= before - quantized + shrink * quantized + per_row * sum(m.out_features for m in linears)
        assert after < before
    for parameter in part.parameters():  # frozen parts stay frozen; the bridge stays trainable only if untouched
        if target != "bridge":
            assert not parameter.requires_grad


def test_llm_embeddings_and_head_are_left_alone_when_asked(build):
    pipe = build(quantize={"llm": {"name": "int8-weight-only", "options": {"include_embeddings": False}}})
    model = pipe.llm.model
    assert type(model.get_input_embeddings()) is nn.Embedding
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.get_input_embeddings().weight
    assert type(model.lm_head.weight) is nn.Parameter  # float, not quantized
    assert type(model.model.layers[0].mlp.up_proj.weight) is not nn.Parameter  # torchao's int8 tensor


@pytest.mark.parametrize("method", ["int8-weight-only", "int4-weight-only"])
def test_weight_only_packs_an_llms_embeddings_by_default_and_nothing_elses(build, method):
    pipe = build(quantize={"llm": method, "bridge": method, "vision": method})
    assert isinstance(pipe.llm.model.get_input_embeddings(), QuantEmbedding)
    assert isinstance(pipe.llm.model.lm_head, QuantLinear)
    for part in (pipe.bridge, pipe.vision):
        assert not any(isinstance(m, QuantEmbedding) for m in part.modules())
    assert any(type(m) is nn.Embedding for m in pipe.bridge.modules())  # the Q-Former's text embeddings


def test_int8_dynamic_on_an_llm_warns_and_leaves_its_embeddings(build):
    with pytest.warns(QuantizationWarning, match="int8-weight-only"):
        pipe = build(quantize={"llm": "int8-dynamic"})
    assert type(pipe.llm.model.get_input_embeddings()) is nn.Embedding


@pytest.mark.parametrize("method,bits", [("int8-weight-only", 8), ("int4-weight-only", 4)])
def test_include_embeddings_packs_the_tied_table_once(build, inputs, reference, method, bits):
    _, ref_logits, _ = reference
    pipe = build(quantize={"llm": {"name": method, "options": {"include_embeddings": True}}})
    model = pipe.llm.model
    embedding, head = model.get_input_embeddings(), model.lm_head
    assert isinstance(embedding, QuantEmbedding) and isinstance(head, QuantLinear)
    assert embedding.weights is head.weights  # tied: one packed table
    table = embedding.weights
    stored = sum(b.numel() * b.element_size() for b in table.buffers())
    assert stored <= (0.27 if bits == 8 else 0.16) * 320 * 64 * 4
    with torch.no_grad():
        assert cosine(pipe(*inputs).logits, ref_logits) >= (0.999 if bits == 8 else 0.98)


def test_skip_leaves_matching_modules(build):
    pipe = build(quantize={"vision": {"name": "int8-dynamic", "options": {"skip": ["trunk.blocks.0.*"]}}})
    blocks = pipe.vision.trunk.blocks
    assert isinstance(blocks[0].mlp.fc1, nn.Linear) and type(blocks[0].mlp.fc1.weight) is nn.Parameter
    assert isinstance(blocks[1].mlp.fc1, DynamicInt8Linear)


def test_bf16_bridge_computes_in_bf16_and_returns_float32(build, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        pipe = build(quantize={"bridge": "bf16"})
    linears = [m for m in pipe.bridge.modules() if isinstance(m, nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    encoding = pipe.encode_images(inputs[0])
    assert encoding.query_output.dtype == torch.float32


def test_bf16_on_a_cpu_without_bf16_warns_with_the_slowdown(build, monkeypatch):
    from blip2core import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with pytest.warns(PrecisionWarning, match=r"bfloat16.*no native support.*165 GFLOP/s"):
        build(quantize={"llm": "bf16"})


@pytest.mark.parametrize("method", ["int8-weight-only", "int4-weight-only", "int8-dynamic"])
def test_eva_vit_whose_attention_reads_the_qkv_weight_directly(method):
    """timm's EVA attention calls F.linear(x, weight=self.qkv.weight): every method must survive that."""
    from blip2core.plugins import get_registry

    registry = get_registry()
    torch.manual_seed(0)
    encoder = registry.get("vision_encoder", "eva-vit").build({
        "image_size": 28, "patch_size": 14, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128}).eval()
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = encoder(pixels)
        quantized = registry.get("quantizer", method).build({}).quantize(encoder)
        assert cosine(quantized(pixels), expected) >= MIN_COSINE[method]


@pytest.mark.parametrize("method", ["int8-dynamic", "int4-weight-only"])
def test_a_quantizer_applied_to_a_composed_component_finds_its_small_batch_linears(build, method):
    """A composed pipeline's linears are ``SmallBatchLinear`` (blip2core.small_batch_linear); a
    quantizer called on one afterwards still replaces them."""
    from blip2_quant.methods import build_int4_weight_only, build_int8_dynamic
    from blip2_quant.options import Int4WeightOnlyOptions, Int8DynamicOptions
    from blip2core.plugin_api import SmallBatchLinear

    vision = build().vision
    assert any(type(m) is SmallBatchLinear for m in vision.modules())
    quantizer = (build_int8_dynamic(Int8DynamicOptions()) if method == "int8-dynamic"
                 else build_int4_weight_only(Int4WeightOnlyOptions()))
    quantized = quantizer.quantize(vision, dtype=torch.float32) if quantizer.quantizes_while_loading else \
        quantizer.quantize(vision)
    kinds = {type(m) for m in quantized.modules()}
    assert SmallBatchLinear not in kinds
    assert (DynamicInt8Linear if method == "int8-dynamic" else QuantLinear) in kinds
