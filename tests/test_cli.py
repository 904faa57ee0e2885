"""The ``blip2`` CLI as a user runs it: a real process, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_factory import TINY_VIT_PLUGIN, write_distribution


def run_blip2(*args: str, site: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "blip2core.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    write_distribution(folder, "acme-vision", TINY_VIT_PLUGIN, version="2.0")
    write_distribution(folder, "broken-import", "import does_not_exist_anywhere\n")
    return folder


def test_plugins_table_lists_plugins_components_and_errors(site):
    result = run_blip2("plugins", site=site)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "acme-vision" in out and "2.0" in out and "tiny-vit" in out and "a tiny ViT for tests" in out
    assert "broken-import" in out and "No module named 'does_not_exist_anywhere'" in out
    assert "qformer" in out and "bridge" in out


def test_plugins_json_is_machine_readable(site):
    result = run_blip2("plugins", "--json", site=site)
    assert result.returncode == 0, result.stderr
    data = {p["distribution"]: p for p in json.loads(result.stdout)}
    assert data["acme-vision"]["status"] == "ok"
    assert data["acme-vision"]["components"] == [
        {"kind": "vision_encoder", "name": "tiny-vit", "description": "a tiny ViT for tests"}
    ]
    assert data["broken-import"]["status"] == "error"


@pytest.mark.parametrize(
    "content,llm",
    [
        ("vision: {name: tiny-vit}\nbridge: {name: qformer}\nllm: {name: opt, options: {path: x}}\n", "llm=opt"),
        ("vision: {name: tiny-vit}\nbridge: {name: qformer}\n", "llm=none"),  # feature extraction only
    ],
)
def test_spec_validate_accepts_a_good_spec(site, tmp_path, content, llm):
    path = tmp_path / "ok.yaml"
    path.write_text(content)
    result = run_blip2("spec", "validate", str(path), site=site)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and llm in result.stdout


@pytest.mark.parametrize(
    "content,expected",
    [
        ("vision: {name: tiny-vit}\nbridge: {name: qformer, options: {num_query_tokens: lots}}\nllm: {name: opt}\n",
         "bridge.options.num_query_tokens: Input should be a valid integer"),
        ("vision: {name: tiny-vitt}\nbridge: {name: qformer}\nllm: {name: opt}\n", "Did you mean 'tiny-vit'?"),
        ("vision: [", "not valid YAML"),
    ],
)
def test_spec_validate_errors_exit_nonzero_without_traceback(site, tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run_blip2("spec", "validate", str(path), site=site)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_spec_validate_missing_file(tmp_path):
    result = run_blip2("spec", "validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "nope.yaml: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_spec_schema_is_json_with_component_options(site):
    result = run_blip2("spec", "schema", site=site)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    vision = {v["properties"]["name"]["const"]: v for v in schema["properties"]["vision"]["anyOf"]}
    assert vision["tiny-vit"]["properties"]["options"]["properties"]["width"]["default"] == 24
