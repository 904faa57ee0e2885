"""Downloading named models through huggingface_hub from a real HTTP hub on 127.0.0.1 (``fake_hub``):
progress, a dropped connection resumed, an interrupted download completed later, a corrupt file
refused, and offline resolution of cached and uncached presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hub_constants
import pytest

from blip2core import load_pipeline
from blip2core.checkpoints.hub import resolve_hub_id
from blip2core.cli.main import main
from blip2core.errors import CheckpointError
from blip2core.plugins import reset_plugins
from fake_hub import COMMIT, FakeHub
from plugin_factory import write_distribution

REPO = "acme/tiny-blip2"
PRESETS_PLUGIN = '''
    from blip2core import hookimpl


    @hookimpl
    def register_presets(register):
        register("acme-tiny", hub_id="acme/tiny-blip2", description="a tiny random BLIP-2", download_size="0.5 MB",
                 licence="MIT", tasks=("caption",))
        register("acme-absent", hub_id="acme/absent", description="never downloaded")
'''


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache for this test, downloads off (as in the rest of the suite)."""
    folder = tmp_path / "hf-cache"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return folder


@pytest.fixture
def hub(hf_opt_folder, cache, monkeypatch):
    """The fake hub serving ``acme/tiny-blip2``, with this process's huggingface_hub pointed at it
    and downloads on. Chunks of 64 KiB, so a connection dropped inside the 0.4 MB weights file leaves
    whole chunks on disk to resume from (huggingface_hub writes 10 MB chunks by default)."""
    with FakeHub({REPO: hf_opt_folder}) as server:
        monkeypatch.setattr(hub_constants, "ENDPOINT", server.url)
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        yield server


@pytest.fixture
def presets_site(tmp_path, monkeypatch):
    """A third-party plugin registering the presets ``acme-tiny`` and ``acme-absent``, installed."""
    site = tmp_path / "site"
    write_distribution(site, "acme-presets", PRESETS_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    reset_plugins()
    yield site
    reset_plugins()


def go_offline(monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_blip2(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blip2core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def snapshot(cache: Path, repo: str = REPO) -> Path:
    return cache / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT


def test_cli_download_shows_progress_and_verifies_then_the_preset_loads_offline(
        hub, cache, hf_opt_folder, presets_site, monkeypatch):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(presets_site), os.environ.get("PYTHONPATH")]))}
    result = run_blip2("download", "acme-tiny", env=env)
    assert result.returncode == 0, result.stderr
    assert "Fetching 5 files" in result.stderr and "100%" in result.stderr  # huggingface_hub's tqdm bars
    assert "every file matches the hub's checksums" in result.stdout
    for source in (p for p in hf_opt_folder.iterdir() if not p.name.startswith(".")):
        assert (snapshot(cache) / source.name).read_bytes() == source.read_bytes(), source.name

    offline = {**env, "HF_HUB_OFFLINE": "1"}
    listing = json.loads(run_blip2("models", "--json", env=offline).stdout)
    rows = {row["name"]: row for row in listing["models"]}
    assert rows["acme-tiny"]["status"] == "cached" and rows["acme-tiny"]["plugin"] == "acme-presets"
    assert rows["acme-tiny"]["download_size"] == "0.5 MB" and rows["acme-tiny"]["licence"] == "MIT"
    assert rows["acme-absent"]["status"] == "not cached"

    go_offline(monkeypatch)
    served = len(hub.requests)
    pipe = load_pipeline("acme-tiny")
    reference = load_pipeline(hf_opt_folder)
    assert pipe.trainable_state_dict().keys() == reference.trainable_state_dict().keys()
    assert all(v.equal(reference.trainable_state_dict()[k]) for k, v in pipe.trainable_state_dict().items())
    assert len(hub.requests) == served  # offline: not one request


def test_a_dropped_connection_resumes_with_a_range_request(hub, cache, hf_opt_folder):
    hub.drop_after["model.safetensors"] = 200_000
    folder = resolve_hub_id(REPO)
    ranges = hub.gets("model.safetensors")
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1].startswith("bytes=") and int(ranges[1][6:].rstrip("-")) >= 64 * 1024  # whole chunks kept
    assert (folder / "model.safetensors").read_bytes() == (hf_opt_folder / "model.safetensors").read_bytes()


def test_an_interrupted_download_keeps_finished_files_and_completes_later(hub, cache, hf_opt_folder):
    hub.fail["model.safetensors"] = 1_000
    with pytest.raises(CheckpointError, match=r"acme/tiny-blip2: download failed: .*500"):
        resolve_hub_id(REPO)
    assert (snapshot(cache) / "config.json").is_file() and not (snapshot(cache) / "model.safetensors").exists()
    hub.fail.clear()
    folder = resolve_hub_id(REPO)
    assert len(hub.gets("config.json")) == 1  # not fetched again
    assert (folder / "model.safetensors").read_bytes() == (hf_opt_folder / "model.safetensors").read_bytes()


def test_a_corrupt_file_is_refused_and_removed_and_offline_names_what_is_missing(hub, cache, monkeypatch, capsys):
    hub.corrupt.add("model.safetensors")
    with pytest.raises(CheckpointError, match=r"acme/tiny-blip2: model\.safetensors: checksum mismatch \(sha256 "):
        resolve_hub_id(REPO)
    assert not (snapshot(cache) / "model.safetensors").exists()
    blobs = cache / "models--acme--tiny-blip2" / "blobs"
    assert len(list(blobs.iterdir())) == 4  # the corrupt blob is gone, the 4 good files stay

    go_offline(monkeypatch)
    with pytest.raises(CheckpointError) as error:
        load_pipeline(REPO)
    message = str(error.value)
    assert "lacks 1 file(s): model.safetensors" in message and "blip2 download acme/tiny-blip2" in message

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(SystemExit) as exit_code:
        main(["download", REPO])
    err = capsys.readouterr().err
    assert exit_code.value.code == 1 and "Traceback" not in err
    assert "Error: acme/tiny-blip2: model.safetensors: checksum mismatch" in err


def test_offline_an_uncached_preset_fails_at_once_with_the_files_and_the_command(cache, presets_site):
    with pytest.raises(CheckpointError) as error:
        load_pipeline("acme-absent")  # no server runs: any network attempt would fail differently
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set and nothing of it is in the Hugging Face cache" in message
    assert "missing: every file matching *.json, *.safetensors" in message
    assert message.endswith("Fetch acme-absent (acme/absent) with network access: blip2 download acme-absent")


def test_download_refuses_when_offline_and_names_unknown_models(cache, presets_site, capsys):
    for name, expected in (("acme-tiny", "acme/tiny-blip2: downloads are off"), ("acme-tiyn", "did you mean 'acme-tiny'?")):
        with pytest.raises(SystemExit) as exit_code:
            main(["download", name])
        err = capsys.readouterr().err
        assert exit_code.value.code == 1 and expected in err and "Traceback" not in err
