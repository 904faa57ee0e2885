"""Quantizing while loading: a frozen component from a bf16 checkpoint, in a float32 pipeline, is
quantized one layer at a time (``blip2_quant.streaming``) instead of being cast whole first.

The result must be exactly what casting the whole component and then quantizing it gave (the old
order, forced here by making ``blip2core.compose`` believe the quantizer cannot stream), and the
peak memory of loading must be lower by about the float32 copy that is no longer made.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import blip2_quant.streaming
from blip2core import load_pipeline
from blip2core.compose import quantizes_while_loading
from blip2core.testing import save_hf_blip2_folder, save_tiny_tokenizer

METHODS = ["int8-weight-only", "int4-weight-only", "int8-dynamic", "bf16", "none"]


def save_bf16_llama(folder, config: dict) -> None:
    """A random Llama written by ``save_pretrained`` in bfloat16, with a tokenizer."""
    config = {**config, "initializer_range": 0.02}
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**config)).to(torch.bfloat16).save_pretrained(folder)
    save_tiny_tokenizer(folder, vocab_size=config["vocab_size"], bos="<s>")


@pytest.fixture(scope="module")
def llm_config(make_spec) -> dict:
    """The tiny spec's Llama config (tied embeddings)."""
    return make_spec()["llm"]["options"]["config"]


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory, llm_config):
    folder = tmp_path_factory.mktemp("bf16-llama")
    save_bf16_llama(folder, llm_config)
    return folder


def load(spec_or_folder, method: str, *, stream: bool, monkeypatch, **kwargs):
    """The pipeline quantized by ``method``; ``stream=False``: the old order (cast whole, then quantize)
    even for a quantizer that opts in to quantizing while loading."""
    monkeypatch.setattr("blip2core.compose.quantizes_while_loading",
                        quantizes_while_loading if stream else (lambda quantizer: False))
    torch.manual_seed(0)  # the random vision encoder and bridge: the same in every load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8-dynamic on an LLM, bf16 on this CPU: warned elsewhere
        return load_pipeline(spec_or_folder, quantize={"llm": method}, **kwargs)


def cast_dtypes(monkeypatch) -> list[torch.dtype]:
    """Records the dtype each layer had when the quantizer cast it (the streaming path's input)."""
    seen: list[torch.dtype] = []
    original = blip2_quant.streaming.cast_layer

    def spy(module, dtype):
        seen.extend(p.dtype for p in module.parameters())
        return original(module, dtype)

    monkeypatch.setattr("blip2_quant.streaming.cast_layer", spy)  # LayerRewrite.cast calls it
    return seen


def float_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {t.dtype for t in module.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()}


@pytest.mark.parametrize("method", METHODS)
def test_a_bf16_llm_folder_is_quantized_layer_by_layer_with_the_same_outputs(
    method, bf16_llama, inputs, make_spec, monkeypatch
):
    spec = make_spec(llm={"name": "llama", "options": {"path": str(bf16_llama)}}, dtype="float32")
    pixels, ids = inputs
    before = load(spec, method, stream=False, monkeypatch=monkeypatch)
    seen = cast_dtypes(monkeypatch)
    after = load(spec, method, stream=True, monkeypatch=monkeypatch)
    with torch.no_grad():
        expected, got = before(pixels, ids).logits, after(pixels, ids).logits
    assert torch.equal(got, expected)
    assert after.llm_dtype == before.llm_dtype == (torch.bfloat16 if method == "bf16" else torch.float32)
    assert float_dtypes(after.llm) == float_dtypes(before.llm)
    if method in ("bf16", "none"):  # they do not opt in: the component is cast whole first, as before
        assert not seen
    else:
        assert torch.bfloat16 in seen, "the quantizer got layers already cast to float32"


def test_a_bf16_blip2_checkpoint_streams_its_llm_through_the_deferred_load(tmp_path, llm_config, monkeypatch):
    """A whole BLIP-2 folder (spec weights, components built on meta): the LLM's tensors are
    assigned in bf16, not cast, and each layer is cast as it is quantized."""
    model = save_hf_blip2_folder(tmp_path, {"model_type": "llama", **llm_config, "initializer_range": 0.02})
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    save_tiny_tokenizer(tmp_path, vocab_size=320, bos="<s>")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    generator = torch.Generator().manual_seed(3)
    size = config["vision_config"]["image_size"]
    pixels, ids = torch.randn(2, 3, size, size, generator=generator), torch.randint(3, 300, (2, 5), generator=generator)

    before = load(tmp_path, "int8-weight-only", stream=False, monkeypatch=monkeypatch, dtype="float32")
    seen = cast_dtypes(monkeypatch)
    after = load(tmp_path, "int8-weight-only", stream=True, monkeypatch=monkeypatch, dtype="float32")
    with torch.no_grad():
        assert torch.equal(after(pixels, ids).logits, before(pixels, ids).logits)
    assert torch.bfloat16 in seen
    assert float_dtypes(after.llm) == {torch.float32}
    assert float_dtypes(after.vision) == {torch.float32}  # the unquantized encoder is cast as before


PEAK_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import blip2core.compose
    from blip2core import load_pipeline

    def peak_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    spec, big_folder, stream = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "stream"
    warnings.simplefilter("ignore")
    load_pipeline(spec, quantize={"llm": "int4-weight-only"})  # imports and a small load first
    start = peak_mib()
    blip2core.compose.quantizes_while_loading = lambda quantizer: stream
    spec["llm"]["options"]["path"] = big_folder
    pipe = load_pipeline(spec, quantize={"llm": "int4-weight-only"})
    print(json.dumps({"growth_mib": peak_mib() - start, "llm_dtype": str(pipe.llm_dtype)}))
""")


def test_quantizing_while_loading_saves_the_float32_copy(tmp_path, bf16_llama, llm_config, make_spec):
    """Peak RSS of loading a 67M-parameter bf16 Llama (16 layers) into a float32 pipeline with int4,
    in fresh processes: streamed vs cast whole first. The float32 copy (~256 MiB) is what streaming
    saves; what streaming holds is the bf16 file's pages, the int4 codes and one layer's float copy."""
    sizes = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=16, num_attention_heads=8,
                 num_key_value_heads=8)
    save_bf16_llama(tmp_path, {**llm_config, **sizes})
    with torch.device("meta"):
        params = LlamaForCausalLM(LlamaConfig(**{**llm_config, **sizes})).num_parameters()
    float32_mib = params * 4 / 2**20
    spec = make_spec(llm={"name": "llama", "options": {"path": str(bf16_llama)}}, dtype="float32")

    def growth(mode: str) -> float:
        done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, json.dumps(spec), str(tmp_path), mode],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["llm_dtype"] == "torch.float32"
        return result["growth_mib"]

    streamed, whole_first = growth("stream"), growth("whole")
    print(f"peak growth while loading: streamed {streamed:.0f} MiB, cast whole first {whole_first:.0f} MiB, "
          f"float32 copy {float32_mib:.0f} MiB")
    assert streamed < whole_first - 0.5 * float32_mib, (streamed, whole_first, float32_mib)
    assert streamed < float32_mib, (streamed, float32_mib)
