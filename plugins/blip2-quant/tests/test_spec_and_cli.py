"""The three ways to ask for quantization (spec, load_pipeline, CLI) and their errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage import data

from blip2core import load_pipeline
from blip2core.cli.inference_commands import parse_quantize
from blip2core.cli.main import cli
from blip2core.errors import SpecError, UnknownComponentError
from blip2core.plugins import get_plugins
from blip2core.plugin_api import SmallBatchLinear
from blip2core.spec import PipelineSpec
from blip2_quant.int8 import DynamicInt8Linear
from blip2_quant.packed import QuantLinear

get_plugins().call_register_commands(cli)  # quantize-report, as `blip2` does at start-up


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_bare_string_is_shorthand_for_name(make_spec):
    spec = PipelineSpec.from_dict(make_spec(quantize={"vision": "int8-dynamic", "bridge": "none",
                                                      "llm": {"name": "int4-weight-only", "options": {"group_size": 32}}}))
    assert spec.quantize["vision"].name == "int8-dynamic" and spec.quantize["vision"].options == {}
    assert spec.quantize["llm"].options == {"group_size": 32}


def test_spec_quantize_builds_each_component(make_spec):
    torch.manual_seed(0)
    pipe = load_pipeline(make_spec(quantize={"vision": "int8-dynamic", "bridge": "none", "llm": "int4-weight-only"}))
    assert isinstance(pipe.vision.trunk.blocks[0].mlp.fc1, DynamicInt8Linear)
    assert isinstance(pipe.llm.model.model.layers[0].mlp.up_proj, QuantLinear)
    bridge_linears = [m for m in pipe.bridge.modules() if isinstance(m, torch.nn.Linear)]
    assert bridge_linears and all(type(m) is SmallBatchLinear and type(m.weight) is torch.nn.Parameter
                                  for m in bridge_linears)  # none: untouched, float32


def test_unknown_method_lists_the_registered_ones(make_spec):
    with pytest.raises(UnknownComponentError, match=r"quantize\.llm\.name: unknown quantizer 'int3'.*Registered: "
                                                    r"bf16, fp16, int4-weight-only, int8-dynamic, int8-weight-only, none"):
        load_pipeline(make_spec(), quantize={"llm": "int3"})


def test_unknown_component_lists_the_known_ones(make_spec):
    with pytest.raises(SpecError, match=r"unknown component 'visoin' to quantize; known: vision, bridge, llm"):
        PipelineSpec.from_dict(make_spec(quantize={"visoin": "int8-dynamic"}))
    with pytest.raises(SpecError, match=r"'text'.*known: vision, bridge, llm"):
        load_pipeline(make_spec(), quantize={"text": "int8-dynamic"})


def test_bad_options_are_reported_by_path(make_spec):
    with pytest.raises(SpecError, match=r"quantize\.llm\.options.*group_size"):
        load_pipeline(make_spec(quantize={"llm": {"name": "int4-weight-only", "options": {"group_size": 3}}}))


def test_quantize_without_that_component_is_an_error(make_spec):
    spec = make_spec(quantize={"llm": "int8-weight-only"})
    del spec["llm"]
    with pytest.raises(Exception, match=r"quantize\.llm: this pipeline has no llm component"):
        load_pipeline(spec)


def test_parse_quantize():
    assert parse_quantize(("llm=int8-weight-only", " vision = int8-dynamic ")) == {
        "llm": "int8-weight-only", "vision": "int8-dynamic"}
    import click

    with pytest.raises(click.BadParameter, match=r"'llm': expected COMPONENT=METHOD"):
        parse_quantize(("llm",))


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, make_spec):
    folder = tmp_path_factory.mktemp("cli")
    PipelineSpec.from_dict(make_spec()).to_file(folder / "tiny.yaml")
    Image.fromarray(data.chelsea()).save(folder / "cat.png")
    return folder


def test_cli_quantize_option_on_features(cli_files):
    out = cli_files / "feats.safetensors"
    code, stdout, stderr = invoke("features", cli_files / "cat.png", "--spec", cli_files / "tiny.yaml", "--out", out,
                                  "--quantize", "vision=int8-dynamic", "--quantize", "bridge=int8-weight-only",
                                  "--no-progress", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["entries"] == 1 and out.is_file()


def test_cli_errors(cli_files):
    code, _, err = invoke("features", cli_files / "cat.png", "--spec", cli_files / "tiny.yaml", "--out",
                          cli_files / "x.safetensors", "--quantize", "llm")
    assert code == 2 and "expected COMPONENT=METHOD" in err
    with pytest.raises(UnknownComponentError, match=r"unknown quantizer 'int2'.*Registered:"):
        invoke("features", cli_files / "cat.png", "--spec", cli_files / "tiny.yaml", "--out",
               cli_files / "y.safetensors", "--quantize", "llm=int2")


def test_env_and_plugins_show_what_auto_resolves_to():
    code, stdout, _ = invoke("env", "--json")
    info = json.loads(stdout)
    assert code == 0 and "cpu" in info["dtype_auto"] and "int8-dynamic" in info["quantizers"]
    assert info["dtype_auto"]["cpu"].startswith("auto -> ")
    code, stdout, _ = invoke("plugins")
    assert code == 0 and "dtype auto: auto -> " in stdout and "int4-weight-only" in stdout
