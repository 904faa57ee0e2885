"""PipelineSpec: file formats, error messages that name the path, JSON schema."""

from __future__ import annotations

import json

import pytest

from blip2core import PipelineSpec
from blip2core.errors import SpecError, UnknownComponentError
from blip2core.plugins import Plugins
from blip2core.spec import spec_json_schema

SPEC = {
    "vision": {"name": "eva-vit", "options": {"num_hidden_layers": 2}},
    "bridge": {"name": "qformer", "options": {"num_query_tokens": 8}},
    "llm": {"name": "opt", "options": {"path": "facebook/opt-125m"}},
    "dtype": "bfloat16",
}

YAML = """\
vision: {name: eva-vit, options: {num_hidden_layers: 2}}
bridge:
  name: qformer
  options: {num_query_tokens: 8}
llm: {name: opt, options: {path: facebook/opt-125m}}
dtype: bfloat16
"""

TOML = """\
dtype = "bfloat16"
[vision]
name = "eva-vit"
options = { num_hidden_layers = 2 }
[bridge]
name = "qformer"
options = { num_query_tokens = 8 }
[llm]
name = "opt"
options = { path = "facebook/opt-125m" }
"""


@pytest.fixture(scope="module")
def registry():
    return Plugins().registry


@pytest.mark.parametrize("suffix,text", [(".yaml", YAML), (".yml", YAML), (".toml", TOML), (".json", json.dumps(SPEC))])
def test_yaml_json_and_toml_give_the_same_spec(tmp_path, suffix, text):
    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    assert PipelineSpec.from_file(path).model_dump() == PipelineSpec.from_dict(SPEC).model_dump()


def test_round_trip_through_a_file(tmp_path):
    spec = PipelineSpec.from_dict(SPEC)
    for name in ("out.yaml", "out.json"):
        spec.to_file(tmp_path / name)
        assert PipelineSpec.from_file(tmp_path / name).model_dump() == spec.model_dump()


def test_structure_errors_name_the_field_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(YAML.replace("dtype: bfloat16", "dtype: float8\ncolour: red"))
    with pytest.raises(SpecError) as excinfo:
        PipelineSpec.from_file(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: invalid pipeline spec")
    assert "dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'" in message
    assert "colour: Extra inputs are not permitted" in message


def test_wrong_option_type_names_the_option_path(registry):
    spec = PipelineSpec.from_dict({**SPEC, "bridge": {"name": "qformer", "options": {"num_query_tokens": "many"}}})
    with pytest.raises(SpecError) as excinfo:
        spec.check_components(registry)
    assert "bridge.options.num_query_tokens: Input should be a valid integer" in str(excinfo.value)


def test_unknown_option_is_rejected(registry):
    spec = PipelineSpec.from_dict({**SPEC, "bridge": {"name": "qformer", "options": {"num_querys": 4}}})
    with pytest.raises(SpecError, match=r"bridge\.options\.num_querys: Extra inputs are not permitted"):
        spec.check_components(registry)


def test_unknown_component_name_suggests_the_closest(registry):
    spec = PipelineSpec.from_dict({**SPEC, "llm": {"name": "opt2"}})
    with pytest.raises(UnknownComponentError, match=r"llm\.name: unknown language model 'opt2'\. Did you mean 'opt'\?"):
        spec.check_components(registry)


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("missing.yaml", None, "no such file"),
        ("broken.yaml", "vision: [unclosed", "not valid YAML"),
        ("broken.json", "{", "not valid JSON"),
        ("broken.toml", "x = ", "not valid TOML"),
        ("binary.yaml", b"\xff\xfe\x00garbage", "cannot read"),
        ("spec.ini", "[vision]", "unsupported spec format '.ini'"),
        ("list.yaml", "- a\n- b\n", "expected a mapping at the top level, got list"),
    ],
)
def test_unreadable_spec_files_give_one_clear_message(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SpecError) as excinfo:
        PipelineSpec.from_file(path)
    assert str(excinfo.value).startswith(str(path)) and expected in str(excinfo.value)


def test_json_schema_lists_components_with_their_options(registry):
    schema = spec_json_schema(registry)
    bridges = {v["properties"]["name"]["const"]: v for v in schema["properties"]["bridge"]["anyOf"]}
    assert {"qformer", "mlp-projector"} <= set(bridges)
    qformer_options = bridges["qformer"]["properties"]["options"]["properties"]
    assert qformer_options["num_query_tokens"]["type"] == "integer"
    assert qformer_options["num_query_tokens"]["default"] == 32
    visions = {v["properties"]["name"]["const"] for v in schema["properties"]["vision"]["anyOf"]}
    assert "eva-vit" in visions
    json.dumps(schema)  # serialisable


def test_dump_yaml_keeps_number_like_strings_strings(tmp_path):
    """What the runner writes as run.yaml (``dump_yaml``) reads back equal: "1e-6" stays a string."""
    from blip2core.spec import dump_yaml, read_structured_file

    data = {"name": "1e-6", "lr": 1e-6, "styles": {"0E0": "+2e-4"}, "steps": 3}
    (tmp_path / "run.yaml").write_text(dump_yaml(data))
    assert read_structured_file(tmp_path / "run.yaml") == data
