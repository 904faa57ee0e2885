"""Named models (presets): the ``register_presets`` hook, first-party presets, ``blip2 models``,
LAVIS names mapped onto presets, and YAML numbers as users write them."""

from __future__ import annotations

import json

import pytest

from blip2core import load_pipeline
from blip2core.cli.main import main
from blip2core.errors import DuplicateComponentError
from blip2core.lavis_names import MODELS
from blip2core.lavis_names import register as register_lavis
from blip2core.lavis_names import resolve as resolve_lavis
from blip2core.lavis_names import unregister as unregister_lavis
from blip2core.loading import resolve_spec
from blip2core.plugins import get_plugins, get_registry, reset_plugins
from blip2core.presets import get_presets
from blip2core.spec import PipelineSpec
from plugin_factory import write_distribution


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    reset_plugins()
    yield folder
    reset_plugins()


def spec_plugin(hf_folder) -> str:
    """A plugin registering a spec preset: the architecture as a spec, the weights beside it."""
    return f'''
        from blip2core import hookimpl
        from blip2core.plugin_api import resolve_spec


        def tiny_spec():
            spec = resolve_spec({str(hf_folder)!r}).model_dump()
            spec["weights"] = []
            return spec


        @hookimpl
        def register_presets(register):
            register("acme-tiny", spec=tiny_spec, weights=[{str(hf_folder)!r}], description="tiny random BLIP-2",
                     download_size="none", licence="MIT", tasks=("caption", "vqa"))
    '''


def test_first_party_presets_come_from_the_plugins_that_provide_their_parts():
    presets = {p.name: p for p in get_presets()}
    for name in ("blip2-opt-2.7b", "blip2-opt-6.7b", "blip2-opt-2.7b-coco"):
        assert presets[name].plugin == "blip2-opt" and presets[name].hub_id == f"Salesforce/{name}"
        assert presets[name].licence.startswith("MIT") and presets[name].download_size.startswith("~")
    for name in ("blip2-itm-vit-g", "blip2-feature-extractor"):
        assert presets[name].plugin == "blip2-eva-clip" and presets[name].hub_id == "Salesforce/blip2-itm-vit-g"
    assert presets["mini"].plugin == "blip2-mini" and presets["mini"].kind == "spec"
    assert "mini" not in get_registry().names("model")  # registered through register_presets only
    assert resolve_spec("mini").bridge.name == "minilm-qformer"


def test_lavis_names_map_onto_registered_presets():
    assert resolve_lavis("blip2_opt", "pretrain_opt2.7b") == ("blip2-opt-2.7b", "opt", "")
    assert resolve_lavis("blip2_opt", "caption_coco_opt2.7b") == ("blip2-opt-2.7b-coco", "opt", "a photo of")
    assert resolve_lavis("blip2_feature_extractor", "pretrain")[0] == "blip2-feature-extractor"
    names = get_presets().names()
    loadable = {model.preset for model in MODELS.values() if model.unsupported is None}
    assert loadable <= set(names), loadable - set(names)


def test_a_third_party_preset_is_listed_and_loads(site, hf_opt_folder, capsys):
    write_distribution(site, "acme-models", spec_plugin(hf_opt_folder))
    main(["models", "--json"])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows["acme-tiny"] == {
        "name": "acme-tiny", "plugin": "acme-models", "resolves_to": "spec + 1 weight file(s)",
        "download_size": "none", "licence": "MIT", "status": "included", "tasks": ["caption", "vqa"],
        "description": "tiny random BLIP-2",
    }
    main(["models"])
    table = capsys.readouterr().out
    assert table.startswith("NAME") and "acme-tiny" in table and "acme-models" in table
    pipe, reference = load_pipeline("acme-tiny"), load_pipeline(hf_opt_folder)
    assert all(v.equal(reference.trainable_state_dict()[k]) for k, v in pipe.trainable_state_dict().items())


def test_bad_registrations_and_clashes_are_reported_per_plugin(site, hf_opt_folder, capsys):
    write_distribution(site, "acme-models", spec_plugin(hf_opt_folder))
    write_distribution(site, "acme-copy", spec_plugin(hf_opt_folder))
    write_distribution(site, "acme-broken", '''
        from blip2core import hookimpl


        @hookimpl
        def register_presets(register):
            register("two-targets", hub_id="acme/x", lavis=("blip2_opt", "pretrain_opt2.7b"))
    ''')
    table = get_presets()
    with pytest.raises(DuplicateComponentError, match=r"preset 'acme-tiny' is registered by more than one plugin: "
                                                      r"'acme-(models|copy)' and 'acme-(models|copy)'"):
        table.get("acme-tiny")
    errors = {info.distribution: info.error for info in get_plugins().infos}
    assert "give exactly one of hub_id, lavis or spec (got hub_id, lavis)" in errors["acme-broken"]
    assert "blip2-opt-2.7b" in table.names()  # the others still work
    main(["models"])
    assert "acme-broken: register_presets raised SpecError" in capsys.readouterr().err


def test_a_preset_can_name_a_lavis_model(site, hf_opt_folder):
    write_distribution(site, "acme-lavis", '''
        from blip2core import hookimpl


        @hookimpl
        def register_presets(register):
            register("my-lavis-opt", lavis=("blip2_opt", "pretrain_opt6.7b"), description="as LAVIS names it")
    ''')
    register_lavis("blip2_opt", "pretrain_opt6.7b", hf_opt_folder)
    try:
        assert resolve_spec("my-lavis-opt").weights == [str(hf_opt_folder.resolve())]
    finally:
        unregister_lavis("blip2_opt", "pretrain_opt6.7b")


def test_yaml_numbers_without_a_dot_are_numbers_even_in_free_form_options(tmp_path, hf_opt_folder):
    spec = resolve_spec(hf_opt_folder).model_dump(mode="json")
    spec["weights"] = []
    text = json.dumps(spec)  # JSON is YAML; then write the numbers the way people type them
    text = text.replace('"init_std": 0.02', '"init_std": 2e-2').replace('"layer_norm_eps": 1e-06', '"layer_norm_eps": 1E-6')
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    loaded = PipelineSpec.from_file(path)
    assert loaded.llm.options["config"]["init_std"] == 0.02
    assert loaded.vision.options["layer_norm_eps"] == 1e-6
