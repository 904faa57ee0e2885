"""Plugin discovery: entry points, built-ins, broken plugins, clashes, include / exclude."""

from __future__ import annotations

import pytest

from blip2core.errors import Blip2Error, DuplicateComponentError, UnknownComponentError
from blip2core.plugins import Plugins, normalize_name
from plugin_factory import TINY_VIT_PLUGIN, write_distribution

FIRST_PARTY = {"blip2-eva-clip", "blip2-clip-vit", "blip2-timm", "blip2-opt", "blip2-llama"}


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def info_for(plugins: Plugins, distribution: str):
    matches = [i for i in plugins.infos if i.distribution == distribution]
    assert matches, f"{distribution} not discovered: {[i.distribution for i in plugins.infos]}"
    return matches[0]


def test_builtins_and_first_party_plugins_load_without_errors():
    plugins = Plugins()
    errors = {i.distribution + ":" + i.module: i.error for i in plugins.infos if i.error}
    assert errors == {}
    assert {"qformer", "mlp-projector"} <= set(plugins.registry.names("bridge"))
    assert "standard" in plugins.registry.names("preprocessor")
    assert FIRST_PARTY <= {i.distribution for i in plugins.infos}


def test_third_party_distribution_is_discovered_through_its_entry_point(site):
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN, version="1.2.3")
    plugins = Plugins()
    info = info_for(plugins, "acme-vision")
    assert info.status == "ok" and info.version == "1.2.3"
    component = plugins.registry.get("vision_encoder", "tiny-vit")
    assert component.plugin == "acme-vision" and component.description == "a tiny ViT for tests"
    encoder = component.build({"width": 16})
    assert encoder.width == 16


def test_plugin_that_fails_to_import_is_listed_with_its_error_and_others_still_work(site):
    write_distribution(site, "broken-import", "raise RuntimeError('missing CUDA toolkit')\n")
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    plugins = Plugins()
    broken = info_for(plugins, "broken-import")
    assert broken.status == "error"
    assert "import failed" in broken.error and "missing CUDA toolkit" in broken.error
    assert "tiny-vit" in plugins.registry.names("vision_encoder")


def test_plugin_that_raises_in_its_hook_is_listed_with_the_hook_name(site):
    source = """
        from blip2core import hookimpl

        @hookimpl
        def register_language_models(register):
            register("half-registered", lambda options: None)
            raise ValueError("no weights configured")
    """
    write_distribution(site, "raising-hook", source)
    plugins = Plugins()
    info = info_for(plugins, "raising-hook")
    assert info.error == "register_language_models raised ValueError: no weights configured"
    # what the hook registered before it raised is not half-available
    assert "half-registered" not in plugins.registry.names("language_model")
    assert info.components == []


def test_misspelled_hook_is_reported(site):
    source = """
        from blip2core import hookimpl

        @hookimpl
        def register_vision_encoder(register):
            pass
    """
    write_distribution(site, "typo-hook", source)
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    plugins = Plugins()
    info = info_for(plugins, "typo-hook")
    assert info.status == "error"
    assert info.error.startswith("invalid plugin: 'register_vision_encoder' is not a blip2core hook (known: ")
    assert "register_vision_encoders" in info.error and "register_hf_configs" in info.error
    # pluggy's check_pending looks at every plugin: the typo must not fail the plugins loaded after it
    assert info_for(plugins, "acme-vision").status == "ok"
    assert "tiny-vit" in plugins.registry.names("vision_encoder")


def test_hook_with_an_argument_its_spec_lacks_is_refused_by_pluggy(site):
    source = """
        from blip2core import hookimpl

        @hookimpl
        def register_bridges(registrar):
            registrar("never", lambda options: None)
    """
    write_distribution(site, "wrong-argument", source)
    plugins = Plugins()
    info = info_for(plugins, "wrong-argument")
    assert info.error.startswith("invalid plugin: ") and "registrar" in info.error
    assert "never" not in plugins.registry.names("bridge")


def test_register_commands_errors_name_the_plugin_and_others_still_add_theirs(site):
    import click

    raising = """
        from blip2core import hookimpl

        @hookimpl
        def register_commands(cli):
            raise RuntimeError("no display")
    """
    adding = """
        import click
        from blip2core import hookimpl

        @hookimpl
        def register_commands(cli):
            cli.add_command(click.Command("acme-hello", callback=lambda: None))
    """
    raising_module = write_distribution(site, "raising-cli", raising)
    write_distribution(site, "adding-cli", adding)
    plugins = Plugins()
    cli = click.Group("blip2")
    errors = plugins.call_register_commands(cli)
    assert errors == [f"raising-cli:{raising_module}: register_commands raised RuntimeError: no display"]
    assert "acme-hello" in cli.commands


def test_duplicate_component_names_both_distributions(site):
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    write_distribution(site, "other-vision", TINY_VIT_PLUGIN)
    plugins = Plugins()
    with pytest.raises(DuplicateComponentError) as excinfo:
        plugins.registry.get("vision_encoder", "tiny-vit")
    message = str(excinfo.value)
    assert "'acme-vision'" in message and "'other-vision'" in message
    # both owners show the clash: neither can serve the name any more
    assert info_for(plugins, "acme-vision").status == info_for(plugins, "other-vision").status == "error"
    # unrelated components are unaffected
    assert plugins.registry.get("bridge", "qformer").plugin == "blip2core"


def test_unknown_component_lists_registered_names_and_the_closest(site):
    registry = Plugins().registry
    with pytest.raises(UnknownComponentError) as excinfo:
        registry.get("bridge", "qfromer", path="bridge.name")
    message = str(excinfo.value)
    assert message.startswith("bridge.name: unknown bridge 'qfromer'.")
    assert "Did you mean 'qformer'?" in message
    assert "mlp-projector" in message


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(Blip2Error, match=r"unknown component kind 'vision' \(known: vision_encoder, bridge"):
        Plugins().registry.get("vision", "eva-vit")


def test_include_and_exclude_filter_distributions(site):
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    only = Plugins(include={"acme-vision"})
    assert {i.distribution for i in only.infos} == {"blip2core", "acme-vision"}
    skipped = Plugins(exclude={normalize_name("Acme_Vision")})
    assert "acme-vision" not in {i.distribution for i in skipped.infos}


def test_environment_variables_select_plugins(site, monkeypatch):
    write_distribution(site, "acme-vision", TINY_VIT_PLUGIN)
    monkeypatch.setenv("BLIP2_PLUGINS", "acme-vision, blip2-opt")
    names = {i.distribution for i in Plugins.from_environment().infos}
    assert names == {"blip2core", "acme-vision", "blip2-opt"}
    monkeypatch.delenv("BLIP2_PLUGINS")
    monkeypatch.setenv("BLIP2_DISABLE_PLUGINS", "blip2-opt")
    names = {i.distribution for i in Plugins.from_environment().infos}
    assert "blip2-opt" not in names and "acme-vision" in names
