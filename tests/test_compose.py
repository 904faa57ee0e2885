"""Composing a Pipeline from a spec naming a third-party component, and freezing rules."""

from __future__ import annotations

import warnings

import pytest
import torch

from blip2core import Blip2Error, PipelineSpec, load_pipeline
from blip2core.plugins import Plugins
from plugin_factory import TINY_VIT_PLUGIN, write_distribution

TINY_OPT = {
    "model_type": "opt",
    "vocab_size": 99,
    "hidden_size": 16,
    "word_embed_proj_dim": 16,
    "ffn_dim": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "init_std": 0.02,
}


def tiny_spec(bridge: dict) -> dict:
    return {
        "vision": {"name": "tiny-vit", "options": {"width": 24, "image_size": 32}},
        "bridge": bridge,
        "llm": {"name": "opt", "options": {"config": TINY_OPT}},
    }


@pytest.fixture
def registry(tmp_path, monkeypatch):
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    return Plugins().registry


@pytest.mark.parametrize(
    "bridge,queries",
    [
        ({"name": "qformer", "options": {"num_query_tokens": 4, "hidden_size": 32, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "intermediate_size": 64}}, 4),
        ({"name": "mlp-projector", "options": {"hidden_size": 20}}, 16),
    ],
)
def test_third_party_encoder_composes_with_builtin_bridges(registry, bridge, queries):
    pipe = load_pipeline(tiny_spec(bridge), registry=registry)
    pixel_values = torch.randn(2, 3, 32, 32)
    encoding = pipe.encode_images(pixel_values)
    assert encoding.vision_tokens.shape == (2, 16, 24)  # (32 / 8)^2 patches
    assert encoding.llm_inputs.shape == (2, queries, 16)
    input_ids = torch.randint(3, 99, (2, 5))
    out = pipe(pixel_values, input_ids)
    assert out.logits.shape == (2, queries + 5, 99)


def test_frozen_parts_are_frozen_and_stay_in_eval_mode(registry):
    pipe = load_pipeline(tiny_spec({"name": "mlp-projector"}), registry=registry)
    pipe.train()
    assert not pipe.vision.training and not pipe.llm.training and pipe.bridge.training
    assert not any(p.requires_grad for p in pipe.vision.parameters())
    assert not any(p.requires_grad for p in pipe.llm.parameters())
    assert all(p.requires_grad for p in pipe.bridge.parameters())
    assert set(pipe.trainable_state_dict()) == {f"bridge.{k}" for k in pipe.bridge.state_dict()}


def test_spec_dtype_applies_to_frozen_parts_and_the_bridge_stays_float32(registry):
    pipe = load_pipeline(tiny_spec({"name": "mlp-projector"}), dtype="bfloat16", registry=registry)
    assert pipe.vision_dtype == torch.bfloat16 and pipe.llm_dtype == torch.bfloat16
    assert next(pipe.bridge.parameters()).dtype == torch.float32
    assert pipe.spec.dtype == "bfloat16"
    encoding = pipe.encode_images(torch.randn(1, 3, 32, 32))
    assert encoding.llm_inputs.dtype == torch.bfloat16


def test_load_pipeline_reads_a_spec_file(registry, tmp_path):
    path = tmp_path / "pipe.yaml"
    PipelineSpec.from_dict(tiny_spec({"name": "mlp-projector"})).to_file(path)
    pipe = load_pipeline(path, registry=registry)
    assert pipe.spec.vision.name == "tiny-vit"


def test_component_that_breaks_its_protocol_is_named(tmp_path, monkeypatch):
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    source = """
        from torch import nn
        from blip2core import hookimpl

        @hookimpl
        def register_vision_encoders(register):
            register("no-width", lambda options: nn.Linear(2, 2))
    """
    write_distribution(site, "sloppy-vision", source)
    spec = tiny_spec({"name": "mlp-projector"})
    spec["vision"] = {"name": "no-width"}
    with pytest.raises(Blip2Error, match=r"vision encoder 'no-width' from plugin 'sloppy-vision' .* does not implement VisionEncoder \(missing: preprocess_config, width\)"):
        load_pipeline(spec, registry=Plugins().registry)


QUANTIZER_PLUGIN = '''
    """Two third-party quantizers that only record the dtypes they were handed."""
    import torch

    from blip2core import hookimpl


    class CastFirst:
        def quantize(self, module):
            module.seen_dtypes = {p.dtype for p in module.parameters()}
            return module


    class WhileLoading:
        quantizes_while_loading = True

        def quantize(self, module, dtype=None):
            module.seen_dtypes = {p.dtype for p in module.parameters()}
            return module.to(dtype=dtype)


    class OwnDtypeKeyword:  # torch.ao's convention: dtype is the quantized dtype, not the pipeline's
        def quantize(self, module, dtype=torch.qint8):
            module.seen_dtypes = {p.dtype for p in module.parameters()}
            return module


    @hookimpl
    def register_quantizers(register):
        register("cast-first", lambda options: CastFirst())
        register("while-loading", lambda options: WhileLoading())
        register("own-dtype-keyword", lambda options: OwnDtypeKeyword())
'''


@pytest.mark.parametrize("method,handed", [("cast-first", torch.bfloat16), ("while-loading", torch.float32),
                                           ("own-dtype-keyword", torch.bfloat16)])
def test_only_a_quantizer_that_opts_in_gets_the_llm_as_built_and_casts_it_itself(tmp_path, monkeypatch, method, handed):
    """``Quantizer``: one that sets ``quantizes_while_loading`` gets the frozen LLM uncast (here
    float32, as its factory built it) and ``dtype``, and casts; any other (a ``dtype`` parameter of
    its own is not an opt-in) gets it cast to the pipeline's dtype first. The pipeline ends in its dtype."""
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    write_distribution(site, "acme-quant", QUANTIZER_PLUGIN)
    registry = Plugins().registry
    spec = {**tiny_spec({"name": "mlp-projector", "options": {"hidden_size": 20}}), "dtype": "bfloat16",
            "quantize": {"llm": method}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native support warns (not on an AMX one)
        pipe = load_pipeline(spec, registry=registry)
    assert pipe.llm.seen_dtypes == {handed}
    assert pipe.llm_dtype == torch.bfloat16


def test_composed_components_get_small_batch_linears_and_quantized_layers_stay(registry):
    """``build_pipeline`` ends by making every plain ``nn.Linear`` a ``SmallBatchLinear``
    (blip2core.small_batch_linear); a quantizer's own layers are left as it made them."""
    from torch import nn

    from blip2core.small_batch_linear import SmallBatchLinear

    bridge = {"name": "qformer", "options": {"num_query_tokens": 4, "hidden_size": 32, "num_hidden_layers": 2,
                                             "num_attention_heads": 4, "intermediate_size": 64}}
    plain = load_pipeline(tiny_spec(bridge), registry=registry)
    for part in (plain.vision, plain.bridge, plain.llm):
        kinds = {type(m) for m in part.modules() if isinstance(m, nn.Linear)}
        assert SmallBatchLinear in kinds and nn.Linear not in kinds, kinds
    quantized = load_pipeline({**tiny_spec(bridge), "quantize": {"llm": "int8-weight-only"}}, registry=registry)
    held = [m for m in quantized.llm.modules() if isinstance(m, nn.Linear) and type(m.weight) is not nn.Parameter]
    assert held and all(type(m) is nn.Linear for m in held)  # torchao's int8 weights keep their own F.linear
