"""LLM checkpoints saved already quantized (GPTQ, AWQ, bitsandbytes): a clear message when this
machine lacks what transformers needs to load them (checked before any weight is read)."""

from __future__ import annotations

import pytest

from blip2core.errors import CheckpointError
from blip2core.llm.prequantized import check_environment, missing_packages, quantization_method
from blip2core.plugins import Plugins

QUANTIZATION_CONFIGS = {
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True},
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
    "bitsandbytes": {"quant_method": "bitsandbytes", "load_in_8bit": True},
}


def quantized_llama_folder(folder, quantization_config):
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    config.quantization_config = quantization_config
    config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", sorted(QUANTIZATION_CONFIGS))
def test_missing_library_is_named(tmp_path, method):
    missing = missing_packages(method)
    if not missing:
        pytest.skip(f"{method}: its packages are installed here")
    folder = quantized_llama_folder(tmp_path / method, QUANTIZATION_CONFIGS[method])
    llama = Plugins().registry.get("language_model", "llama")
    with pytest.raises(CheckpointError) as error:
        llama.build({"path": str(folder)})
    message = str(error.value)
    assert message.startswith(f"{folder}: a {method}-quantized checkpoint; transformers loads it with ")
    assert f"missing: {', '.join(missing)}" in message


def test_ordinary_configs_pass():
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    assert quantization_method(config) is None
    check_environment(config, "plain")  # no error


def test_torchao_checkpoints_need_only_torchao():
    assert missing_packages("torchao") == []  # a dependency of this plugin
    assert quantization_method(type("C", (), {"quantization_config": {"quant_method": "gptq"}})()) == "gptq"
