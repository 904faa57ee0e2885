"""Hugging Face BLIP-2 folders: the core asks the plugins (hook ``register_hf_configs``) which
components rebuild their vision_config and text_config, so a new LLM plugin needs no core change."""

from __future__ import annotations

import json

import pytest
import torch

from blip2core import CheckpointError, load_pipeline
from blip2core.checkpoints.hf_blip2 import read_hf_config, spec_from_hf_config
from blip2core.errors import DuplicateComponentError
from blip2core.plugins import Plugins, reset_plugins
from blip2core.testing import TINY_IMAGE_SIZE, TINY_NUM_QUERY_TOKENS, save_hf_blip2_folder
from plugin_factory import QWEN2_PLUGIN, forget_modules, write_distribution

QWEN2 = dict(
    model_type="qwen2", vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.02,
    bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder on sys.path; the process-wide plugins are rediscovered with it, and after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("BLIP2_PLUGINS", raising=False)
    monkeypatch.delenv("BLIP2_DISABLE_PLUGINS", raising=False)
    reset_plugins()
    yield folder
    reset_plugins()
    forget_modules("acme_")


def config_only_folder(folder, text_config=QWEN2, **vision):
    """A BLIP-2 config.json alone: enough for everything that happens before weights are read."""
    from transformers import Blip2Config

    from blip2core.testing import TINY_QFORMER_CONFIG, TINY_VISION_CONFIG

    Blip2Config(
        vision_config={**TINY_VISION_CONFIG, **vision}, qformer_config=TINY_QFORMER_CONFIG, text_config=text_config,
        num_query_tokens=TINY_NUM_QUERY_TOKENS,
    ).save_pretrained(folder)
    return folder


def test_first_party_plugins_claim_the_sub_configs_of_transformers_blip2():
    plugins = Plugins()
    assert plugins.registry.hf_config_types("vision") == ["blip_2_vision_model"]
    assert {"opt", "llama"} <= set(plugins.registry.hf_config_types("text"))
    assert plugins.registry.hf_config("text", "opt").plugin == "blip2-opt"
    assert plugins.registry.hf_config("text", "llama").plugin == "blip2-llama"
    eva = next(i for i in plugins.infos if i.distribution == "blip2-eva-clip")
    assert eva.to_dict()["hf_configs"] == [{"part": "vision", "model_type": "blip_2_vision_model"}]


def test_third_party_llm_plugin_makes_hf_folders_with_its_text_model_load(site, tmp_path):
    write_distribution(site, "acme-qwen2", QWEN2_PLUGIN)
    folder = tmp_path / "blip2-qwen2"
    hf = save_hf_blip2_folder(folder, QWEN2)

    ours = load_pipeline(folder)

    assert (ours.spec.vision.name, ours.spec.bridge.name, ours.spec.llm.name) == ("eva-vit", "qformer", "qwen2")
    assert ours.load_report.loaded_slots == {"vision", "bridge", "llm"}
    assert not any(ours.load_report.missing.values()) and not ours.load_report.unexpected
    pixel_values = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    text = torch.randint(3, 100, (2, 5), generator=torch.Generator().manual_seed(2))
    image = torch.full((2, TINY_NUM_QUERY_TOKENS), hf.config.image_token_index)
    input_ids = torch.cat([image, torch.full((2, 1), QWEN2["bos_token_id"]), text], dim=1)
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values, input_ids=input_ids).logits
        got = ours(pixel_values, input_ids).logits
    assert got.shape == expected.shape == (2, TINY_NUM_QUERY_TOKENS + 6, QWEN2["vocab_size"])
    assert (got - expected).abs().max() <= 1e-4


def test_text_model_nobody_claims_names_the_claimed_ones(site, tmp_path):
    folder = config_only_folder(tmp_path / "blip2-qwen2")
    with pytest.raises(CheckpointError) as excinfo:
        load_pipeline(folder)
    message = str(excinfo.value)
    assert message.startswith(f"{folder / 'config.json'}: text_config.model_type 'qwen2' has no language-model component (supported: ")
    assert "llama" in message and "opt" in message


def test_eva_plugin_refuses_a_vision_activation_other_than_gelu(tmp_path):
    folder = config_only_folder(tmp_path / "relu", text_config={"model_type": "opt"}, hidden_act="relu")
    with pytest.raises(CheckpointError) as excinfo:
        load_pipeline(folder)
    assert str(excinfo.value) == (
        f"{folder / 'config.json'}: vision_config.hidden_act 'relu' is not supported (EVA ViT uses 'gelu')"
    )


def test_vision_model_nobody_claims_is_named(tmp_path):
    folder = config_only_folder(tmp_path / "other-vision", text_config={"model_type": "opt"})
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["model_type"] = "siglip_vision_model"
    with pytest.raises(CheckpointError, match=r"vision_config.model_type 'siglip_vision_model' has no "
                                              r"vision-encoder component \(supported: blip_2_vision_model\)"):
        spec_from_hf_config(folder, config)


def test_two_plugins_claiming_one_model_type_clash_and_name_both(site, tmp_path):
    write_distribution(site, "acme-qwen2", QWEN2_PLUGIN)
    other = QWEN2_PLUGIN.replace('register("qwen2", build_qwen2', 'register("qwen2-other", build_qwen2')
    write_distribution(site, "acme-qwen2-fork", other)
    plugins = Plugins()
    folder = config_only_folder(tmp_path / "blip2-qwen2")
    with pytest.raises(DuplicateComponentError) as excinfo:
        spec_from_hf_config(folder, read_hf_config(folder), plugins.registry)
    message = str(excinfo.value)
    assert message.startswith("text_config.model_type 'qwen2' is claimed by more than one plugin: ")
    assert "'acme-qwen2'" in message and "'acme-qwen2-fork'" in message
    for name in ("acme-qwen2", "acme-qwen2-fork"):
        info = next(i for i in plugins.infos if i.distribution == name)
        assert info.status == "error" and "claimed by more than one plugin" in info.error
    # the clash costs only the claim: their language models stay registered
    assert {"qwen2", "qwen2-other"} <= set(plugins.registry.names("language_model"))


def test_reader_that_fails_is_reported_with_its_plugin(site, tmp_path):
    failing = QWEN2_PLUGIN.replace('text_config_reader("qwen2")', 'lambda sub_config, source: sub_config["no_such_field"]')
    write_distribution(site, "acme-qwen2", failing)
    folder = config_only_folder(tmp_path / "blip2-qwen2")
    with pytest.raises(CheckpointError) as excinfo:
        load_pipeline(folder)
    assert str(excinfo.value) == (
        f"{folder / 'config.json'}: text_config (qwen2): the reader of plugin 'acme-qwen2' raised "
        f"KeyError: 'no_such_field'"
    )


def test_claim_of_an_unknown_part_is_a_plugin_error(site):
    source = """
        from blip2core import hookimpl

        @hookimpl
        def register_hf_configs(register):
            register("qformer", "blip_2_qformer", lambda sub_config, source: {})
    """
    write_distribution(site, "acme-parts", source)
    info = next(i for i in Plugins().infos if i.distribution == "acme-parts")
    assert info.error == "register_hf_configs: unknown Hugging Face config part 'qformer' (known: vision, text)"
    assert info.hf_configs == []
