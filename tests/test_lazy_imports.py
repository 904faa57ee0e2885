"""Embedding blip2core and starting ``blip2`` stay cheap: ``import blip2core`` imports no torch and no
plugin, ``blip2 --help`` imports no torch or transformers and still lists the plugins' commands, and
the lazy public names (PEP 562, ``blip2core.lazy_exports``) are exactly the eager ones type checkers see.

What is imported is asserted here, in fresh processes; how long it takes is measured by
``python -m benchmarks.run`` (docs/benchmarks.md, "Start-up").
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cli_process import run_blip2

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "torchvision", "timm", "open_clip")
#: the modules whose public names are imported on first use, and their source files
LAZY_MODULES = {
    "blip2core": ROOT / "blip2core" / "__init__.py",
    "blip2core.plugin_api": ROOT / "blip2core" / "plugin_api.py",
    "blip2core.llm": ROOT / "blip2core" / "llm" / "__init__.py",
}


def modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def imported_by_importtime(stderr: str) -> set[str]:
    """The modules ``-X importtime`` (PYTHONPROFILEIMPORTTIME) logged: ``import time: self | cumulative | name``."""
    return {
        line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:") and "|" in line
    }


def heavy_or_plugin(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith("blip2_"))


def test_import_blip2core_imports_no_torch_and_no_plugin():
    modules = modules_after("import blip2core")
    assert heavy_or_plugin(modules) == []
    assert "blip2core.plugins" not in modules  # no plugin discovery either


def test_light_public_names_import_no_torch():
    """What a plugin module needs at import (hooks, errors, preprocessing configs, the SDK module
    itself, option models), and what ``blip2 --help`` needs (the CLI), come without torch."""
    modules = modules_after(
        "from blip2core import hookimpl, PreprocessConfig, Blip2Error, SpecError\n"
        "from blip2core.plugin_api import hookimpl, text_config_reader, DTYPE_CHOICES, LanguageModelOptions\n"
        "import blip2core.hookspecs, blip2core.preprocess_config, blip2core.errors, blip2core.precision\n"
        "import blip2core.cli.main, blip2core.bridges.plugin, blip2core.preprocess.plugin"
    )
    assert heavy_or_plugin(modules) == []


def test_blip2_help_imports_no_torch_and_lists_every_plugin_command():
    done = run_blip2("--help", PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0, done.stderr
    imported = imported_by_importtime(done.stderr)
    assert "blip2core.plugins" in imported  # the plugins were discovered (their commands are listed) ...
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []  # ... without torch or transformers

    from blip2core.plugins import Plugins

    group = click.Group("blip2")
    assert Plugins().call_register_commands(group) == []
    plugin_commands = set(group.commands)
    assert {"train", "quantize-report"} <= plugin_commands  # blip2-runner's and blip2-quant's
    listed = {line.split()[0] for line in done.stdout.split("Commands:", 1)[1].splitlines() if line.strip()}
    assert plugin_commands <= listed
    assert {"caption", "ask", "features", "plugins", "spec"} <= listed


def eager_names_under_type_checking(path: Path) -> dict[str, str]:
    """name -> module of the ``from X import name`` statements under ``if TYPE_CHECKING:`` in ``path``."""
    tree = ast.parse(path.read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.dump(statement)
                for alias in statement.names:
                    names[alias.asname or alias.name] = statement.module
    return names


@pytest.mark.parametrize("module_name", sorted(LAZY_MODULES))
def test_lazy_names_match_the_type_checking_imports(module_name):
    module = importlib.import_module(module_name)
    eager = eager_names_under_type_checking(LAZY_MODULES[module_name])
    assert module._EXPORTS == eager
    assert sorted(module.__all__) == sorted(eager)
    assert set(module.__all__) <= set(dir(module))
    for name, source in eager.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), name), name


def test_unknown_names_and_submodules():
    import blip2core

    assert not hasattr(blip2core, "no_such_name")
    with pytest.raises(AttributeError, match="no_such_name"):
        blip2core.no_such_name  # noqa: B018
    assert blip2core.loading is importlib.import_module("blip2core.loading")  # a submodule, as before
    with pytest.raises(ImportError, match="no_such_name"):
        exec("from blip2core import no_such_name", {})
