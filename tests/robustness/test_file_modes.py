"""Files blip2core writes get the permissions of a plain ``open(path, "w")`` (0666 less the umask),
like everything else a user writes: feature files, a saved pipeline's ``pipeline.yaml`` and
``trainable.safetensors``, checkpoint folders. safetensors' ``save_file`` alone gives 0600."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from blip2core import load_pipeline
from blip2core.atomic import atomic_file, atomic_folder
from blip2core.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UMASK = 0o027  # group may read, others nothing: neither the usual 0022 nor safetensors' 0600


@pytest.fixture
def umask():
    old = os.umask(UMASK)
    yield 0o666 & ~UMASK
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_feature_files_respect_the_umask(hf_itm_folder, photos, tmp_path, capsys, umask):
    out = tmp_path / "features.safetensors"
    try:
        main(["features", str(photos[0]), "--out", str(out), "--model", str(hf_itm_folder), "--no-progress"])
    except SystemExit as exc:
        pytest.fail(f"exit {exc.code}: {capsys.readouterr().err}")
    assert oct(mode(out)) == oct(umask)


def test_a_saved_pipeline_respects_the_umask(hf_itm_folder, tmp_path, umask):
    folder = load_pipeline(hf_itm_folder).save(tmp_path / "saved")
    assert {p.name: oct(mode(p)) for p in folder.iterdir()} == {
        "pipeline.yaml": oct(umask), "trainable.safetensors": oct(umask)}


def test_atomic_writes_give_what_a_plain_write_gives(tmp_path, umask):
    tensors = {"x": torch.zeros(2)}
    with atomic_file(tmp_path / "one.safetensors") as tmp:
        save_file(tensors, str(tmp))
    with atomic_folder(tmp_path / "checkpoint") as tmp:  # the runner's checkpoints are written this way
        save_file(tensors, str(tmp / "trainable.safetensors"))
        (tmp / "state.json").write_text("{}")
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o755)  # a writer's executable bits stay, less the umask
    (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "plain.txt") == umask
    assert oct(mode(tmp_path / "one.safetensors")) == oct(umask)
    modes = {p.name: oct(mode(p)) for p in (tmp_path / "checkpoint").iterdir()}
    assert modes == {"trainable.safetensors": oct(umask), "state.json": oct(umask), "run.sh": oct(0o777 & ~UMASK)}
