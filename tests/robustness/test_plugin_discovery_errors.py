"""Why a component is missing (issue 13, item 8): a misspelt distribution in BLIP2_PLUGINS /
BLIP2_DISABLE_PLUGINS is a warning naming the closest installed one; an unknown component name
says which plugins those variables left out, and which plugin failed to import and why, instead
of only "Did you mean ...?"."""

from __future__ import annotations

import pytest

from blip2core.errors import PluginSelectionWarning, UnknownComponentError
from blip2core.plugins import Plugins
from cli_process import error_lines, run_blip2
from plugin_factory import TINY_VIT_PLUGIN, write_distribution

FAILING_IMPORT = "import acme_vendor_backend  # not installed\n"


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_misspelt_distribution_in_blip2_plugins_warns_with_the_closest_name(monkeypatch):
    monkeypatch.setenv("BLIP2_PLUGINS", "blip2-tim")
    monkeypatch.setenv("BLIP2_DISABLE_PLUGINS", "blip2-qaunt")
    with pytest.warns(PluginSelectionWarning) as caught:
        plugins = Plugins.from_environment()
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, PluginSelectionWarning))
    assert len(messages) == 2
    assert messages[0].startswith("BLIP2_DISABLE_PLUGINS names 'blip2-qaunt', which is not an installed")
    assert "did you mean 'blip2-quant'?" in messages[0]
    assert messages[1].startswith("BLIP2_PLUGINS names 'blip2-tim', which is not an installed")
    assert "did you mean 'blip2-timm'?" in messages[1]
    with pytest.raises(UnknownComponentError, match=r"unknown vision encoder 'timm'\. Not loaded \("
                                                    r"BLIP2_PLUGINS / BLIP2_DISABLE_PLUGINS\): .*blip2-timm"):
        plugins.registry.get("vision_encoder", "timm")


def test_unknown_component_names_the_plugin_that_failed_to_import(site):
    write_distribution(site, "acme-vit", FAILING_IMPORT)
    write_distribution(site, "acme-other", TINY_VIT_PLUGIN)
    registry = Plugins(include={"acme-vit", "acme-other"}).registry
    with pytest.raises(UnknownComponentError) as caught:
        registry.get("vision_encoder", "acme-vit", path="vision.name")
    message = str(caught.value)
    assert message.startswith(
        "vision.name: unknown vision encoder 'acme-vit'. Plugin 'acme-vit' failed to import: "
        "ModuleNotFoundError: No module named 'acme_vendor_backend'."
    )
    assert "tiny-vit" in message  # what is registered is still listed


def test_cli_warns_about_a_misspelt_distribution_and_says_what_was_left_out(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("vision: {name: timm, options: {model_name: vit_tiny_patch16_224}}\nbridge: {name: qformer}\n")
    result = run_blip2("spec", "validate", path, BLIP2_PLUGINS="blip2-tim")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "BLIP2_PLUGINS names 'blip2-tim'" in warnings[0], result.stderr
    assert "did you mean 'blip2-timm'?" in warnings[0]
    [error] = error_lines(result.stderr)
    assert "unknown vision encoder 'timm'" in error and "blip2-timm" in error


def test_cli_spec_validate_says_the_plugin_failed_to_import_and_why(tmp_path):
    site = tmp_path / "site"
    write_distribution(site, "acme-vit", FAILING_IMPORT)
    path = tmp_path / "spec.yaml"
    path.write_text("vision: {name: acme-vit}\nbridge: {name: qformer}\n")
    result = run_blip2("spec", "validate", path, site=site)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [error] = error_lines(result.stderr)
    assert error.startswith("Error: vision.name: unknown vision encoder 'acme-vit'. Plugin 'acme-vit' failed to "
                            "import: ModuleNotFoundError: No module named 'acme_vendor_backend'."), error
