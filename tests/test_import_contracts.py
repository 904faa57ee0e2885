"""The import contracts `make test` checks with lint-imports ([tool.importlinter] in pyproject.toml):
they cover every first-party plugin, and they catch a plugin that reaches into the core."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def importlinter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def contract(config: dict, contract_id: str) -> dict:
    return next(c for c in config["contracts"] if c.get("id") == contract_id)


def first_party_plugin_packages() -> set[str]:
    """The import packages of the plugins in the repository (plugins/blip2-opt/blip2_opt/ -> blip2_opt);
    from git's file list when it is a checkout, so a plugin still being written is not required yet."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "plugins/*/*/__init__.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        inits = [ROOT / path for path in listed]
    except (OSError, subprocess.CalledProcessError):
        inits = list(ROOT.glob("plugins/*/*/__init__.py"))
    return {init.parent.name for init in inits if init.parent.name != "tests"}


def test_every_first_party_plugin_is_under_the_contracts():
    config = importlinter_config()
    plugins = first_party_plugin_packages()
    assert {"blip2_opt", "blip2_llama", "blip2_eva_clip", "blip2_clip_vit", "blip2_timm", "blip2_runner"} <= plugins
    missing = {
        "root_packages": plugins - set(config["root_packages"]),
        "plugins-use-the-sdk source_modules": plugins - set(contract(config, "plugins-use-the-sdk")["source_modules"]),
        "core-knows-no-plugin forbidden_modules": plugins
        - set(contract(config, "core-knows-no-plugin")["forbidden_modules"]),
    }
    assert {where: names for where, names in missing.items() if names} == {}, (
        "add the new plugin package to pyproject.toml [tool.importlinter]"
    )


def run_sdk_contract_on(tmp_path: Path, modules: dict[str, str]) -> subprocess.CompletedProcess:
    """lint-imports with the repository's SDK contract, applied to packages written into tmp_path."""
    sdk = dict(contract(importlinter_config(), "plugins-use-the-sdk"))
    sdk["source_modules"] = sorted(modules)
    sdk["ignore_imports"] = ["** -> blip2core.plugin_api"]  # the rule itself, without the listed exceptions
    for name, source in modules.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(textwrap.dedent(source))
    lines = ["[importlinter]", f"root_packages =\n    blip2core\n    " + "\n    ".join(sorted(modules)), "",
             "[importlinter:contract:sdk]"]
    for key, value in sdk.items():
        if key == "id":
            continue
        if isinstance(value, list):
            value = "\n    " + "\n    ".join(value)
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    config = tmp_path / "importlinter.ini"
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_sdk_contract_refuses_an_internal_import_and_allows_the_sdk(tmp_path):
    result = run_sdk_contract_on(tmp_path, {
        "acme_clean": """
            from blip2core import hookimpl
            from blip2core.plugin_api import copy_into, read_state_dict
        """,
        "acme_leaky": """
            from blip2core.checkpoints.files import read_state_dict
        """,
    })
    assert result.returncode == 1, result.stdout + result.stderr
    assert "acme_leaky is not allowed to import blip2core.checkpoints" in result.stdout
    assert "acme_leaky -> blip2core.checkpoints.files" in result.stdout
    assert "acme_clean is not allowed" not in result.stdout


def test_sdk_contract_keeps_a_plugin_that_imports_only_the_sdk(tmp_path):
    result = run_sdk_contract_on(tmp_path, {
        "acme_clean": """
            import blip2core
            from blip2core.plugin_api import LanguageModelOptions, text_config_reader
        """,
    })
    assert result.returncode == 0, result.stdout + result.stderr


def run_acyclic_contract_on(tmp_path: Path, modules: dict[str, str]) -> subprocess.CompletedProcess:
    """lint-imports with the repository's acyclic contract (and its session options), applied to
    one package ``acme`` whose modules are written into tmp_path."""
    config = importlinter_config()
    acyclic = contract(config, "core-is-acyclic")
    package = tmp_path / "acme"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, source in modules.items():
        (package / f"{name}.py").write_text(textwrap.dedent(source))
    lines = ["[importlinter]", "root_packages =\n    acme",
             f"exclude_type_checking_imports = {str(config['exclude_type_checking_imports']).lower()}", "",
             "[importlinter:contract:acyclic]", f"name = {acyclic['name']}", f"type = {acyclic['type']}",
             "ancestors =\n    acme"]
    (tmp_path / "importlinter.ini").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tmp_path / "importlinter.ini"), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_the_core_is_held_acyclic_and_type_checking_imports_do_not_count():
    config = importlinter_config()
    acyclic = contract(config, "core-is-acyclic")
    assert acyclic["type"] == "acyclic_siblings" and acyclic["ancestors"] == ["blip2core"]
    assert config["exclude_type_checking_imports"] is True


def test_acyclic_contract_refuses_a_cycle_and_allows_an_annotation_only_back_import(tmp_path):
    pipeline = """
        def caption(pipe):
            from acme.inference import caption

            return caption(pipe)
    """
    cyclic = run_acyclic_contract_on(tmp_path / "cyclic", {
        "pipeline": pipeline,
        "inference": "from acme.pipeline import caption as _\n\ndef caption(pipe):\n    return ''\n",
    })
    assert cyclic.returncode == 1, cyclic.stdout + cyclic.stderr
    assert "No cycles are allowed in acme" in cyclic.stdout
    annotated = run_acyclic_contract_on(tmp_path / "annotated", {
        "pipeline": pipeline,
        "inference": """
            from __future__ import annotations
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from acme.pipeline import caption as _

            def caption(pipe) -> str:
                return ""
        """,
    })
    assert annotated.returncode == 0, annotated.stdout + annotated.stderr
