"""Free-form transformers ``config:`` mappings in specs (issue 13, item 4): YAML's ``1e-6`` (a
string to PyYAML) becomes a number where the field is numeric; a key the config class does not
know is refused by name instead of silently ignored; every refusal is a SpecError naming its
field, reported by ``blip2 spec validate`` before anything loads, without a traceback."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

import tiny_models as T
from blip2core import load_pipeline
from blip2core.errors import SpecError
from blip2core.llm import LanguageModelOptions, load_language_model
from blip2core.loading import resolve_spec
from blip2core.plugins import get_registry
from blip2core.spec import PipelineSpec
from cli_process import error_lines, run_blip2

VISION = {"name": "eva-vit", "options": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
                                         "num_attention_heads": 4, "intermediate_size": 64}}
BRIDGE = {"name": "qformer", "options": {"num_query_tokens": 4, "hidden_size": 32, "num_hidden_layers": 1,
                                         "num_attention_heads": 4, "intermediate_size": 64}}

#: as a user types it: ``1e-6`` without a dot is a string to PyYAML
LLAMA_YAML = """\
vision: {vision}
bridge: {bridge}
llm:
  name: llama
  options:
    config:
      vocab_size: 320
      hidden_size: 32
      intermediate_size: 64
      num_hidden_layers: 1
      num_attention_heads: 4
      rms_norm_eps: 1e-6
{extra}"""


def llama_yaml(extra: str = "") -> str:
    return LLAMA_YAML.format(vision=json.dumps(VISION), bridge=json.dumps(BRIDGE), extra=extra)


def check(spec_data: dict) -> None:
    PipelineSpec.from_dict(spec_data).check_components(get_registry())


def spec_with_llm(name: str, config: dict) -> dict:
    return {"vision": VISION, "bridge": BRIDGE, "llm": {"name": name, "options": {"config": config}}}


def test_yaml_exponent_without_a_dot_loads_as_a_number(tmp_path):
    assert yaml.safe_load(llama_yaml())["llm"]["options"]["config"]["rms_norm_eps"] == "1e-6"  # the trap
    path = tmp_path / "spec.yaml"
    path.write_text(llama_yaml())
    pipe = load_pipeline(path)
    assert pipe.llm.config.rms_norm_eps == 1e-6
    assert isinstance(pipe.llm.config.rms_norm_eps, float)


@pytest.mark.parametrize(
    "name,config,expected",
    [
        ("llama", {**T.LLAMA, "layer_norm_eps": 1e-5},
         r"llm\.options\.config\.layer_norm_eps: not a field of LlamaConfig.*did you mean 'rms_norm_eps'"),
        ("llama", {**T.LLAMA, "vocab_size": "many"}, r"llm\.options\.config\.vocab_size: expected int, got str"),
        ("llama", {**T.LLAMA, "hidden_size": 30},
         r"llm\.options\.config: not a valid LlamaConfig: The hidden size \(30\) is not a multiple"),
        ("llama", {**T.LLAMA, "model_type": "opt"}, r"llm\.options\.config\.model_type: 'opt' is not 'llama'"),
        ("opt", {**T.OPT, "num_beams": 5}, r"llm\.options\.config\.num_beams: a generation setting, not a field of OPTConfig"),
        ("opt", {**T.OPT, "hiden_size": 16}, r"llm\.options\.config\.hiden_size: .*did you mean 'hidden_size'"),
    ],
)
def test_config_problems_are_spec_errors_naming_the_field(name, config, expected):
    with pytest.raises(SpecError, match=expected):
        check(spec_with_llm(name, config))


def test_hf_clip_vision_config_is_checked_the_same_way():
    spec = {"vision": {"name": "hf-clip-vision", "options": {"config": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
        "image_size": 32, "patch_size": 8, "layer_norm_eps": "1e-5", "hiden_act": "gelu"}}}, "bridge": BRIDGE}
    with pytest.raises(SpecError, match=r"vision\.options\.config\.hiden_act: not a field of CLIPVisionConfig"):
        check(spec)
    del spec["vision"]["options"]["config"]["hiden_act"]
    options = PipelineSpec.from_dict(spec).check_components(get_registry())["vision"]
    assert options.config["layer_norm_eps"] == 1e-5


def test_a_plugin_without_config_class_is_checked_when_built():
    """``LanguageModelOptions`` itself knows no config class: the loader refuses the same way."""
    options = LanguageModelOptions(config={**T.LLAMA, "layer_norm_eps": 1e-5})
    with pytest.raises(SpecError, match=r"config\.layer_norm_eps: not a field of LlamaConfig"):
        load_language_model(options, config_class=LlamaConfig, model_class=LlamaForCausalLM)


def test_hf_folder_text_config_keeps_loading_while_a_spec_may_not_carry_its_stale_keys(hf_opt_folder, tmp_path):
    """A ``config.json`` of an older transformers carries keys OPTConfig no longer has (``prefix``,
    ``num_beams``): its reader drops them, so the folder loads; typed into a spec they are refused."""
    folder = tmp_path / "old-transformers"
    shutil.copytree(hf_opt_folder, folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["text_config"].update(prefix="</s>", num_beams=5, tie_encoder_decoder=False)
    config_path.write_text(json.dumps(config))

    llm_config = resolve_spec(folder).llm.options["config"]
    assert "prefix" not in llm_config and "num_beams" not in llm_config
    assert llm_config["hidden_size"] == T.OPT["hidden_size"]
    assert load_pipeline(folder).llm.config.hidden_size == T.OPT["hidden_size"]

    with pytest.raises(SpecError, match=r"llm\.options\.config\.prefix: not a field of OPTConfig"):
        check(spec_with_llm("opt", {**T.OPT, "prefix": "</s>"}))


def test_spec_validate_names_the_unknown_key_without_a_traceback(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(llama_yaml("      layer_norm_eps: 1e-5\n"))
    result = run_blip2("spec", "validate", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        "Error: llm.options.config.layer_norm_eps: not a field of LlamaConfig, which would ignore it; "
        "did you mean 'rms_norm_eps'?"
    ]
