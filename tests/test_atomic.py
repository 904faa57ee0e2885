"""``blip2core.atomic``: the one atomic writer of files and folders (native saves, feature files,
the runner's checkpoints, metrics and plots, the feature cache, the GGUF cache)."""

from __future__ import annotations

import os
import stat

import pytest

from blip2core.atomic import atomic_file, atomic_folder, atomic_write_text, is_leftover
from blip2core.plugin_api import atomic_file as sdk_atomic_file


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_file_appears_whole_and_no_temp_file_stays(tmp_path):
    target = tmp_path / "spec.yaml"
    target.write_text("old\n")
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".yaml" and is_leftover(tmp)
        tmp.write_text("new\n")
        assert target.read_text() == "old\n"  # readers see the old file until the block ends
    assert target.read_text() == "new\n"
    assert listing(tmp_path) == ["spec.yaml"]
    assert sdk_atomic_file is atomic_file


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "features.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(target, fsync=False) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["features.safetensors"]


def test_new_files_get_the_permissions_of_a_plain_write(tmp_path):
    atomic_write_text(tmp_path / "run.yaml", "a: 1\n")
    (tmp_path / "plain.yaml").write_text("a: 1\n")
    mode = stat.S_IMODE(os.stat(tmp_path / "run.yaml").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.yaml").st_mode)
    assert (tmp_path / "run.yaml").read_text() == "a: 1\n"


def test_a_folder_appears_whole_and_replaces_an_older_one(tmp_path):
    final = tmp_path / "checkpoints" / "step-00000005"
    with atomic_folder(final) as tmp:
        assert tmp.is_dir() and is_leftover(tmp) and not final.exists()
        (tmp / "state.json").write_text("{}")
    assert listing(final) == ["state.json"]
    with atomic_folder(final) as tmp:  # re-reaching a step: the new folder wins
        (tmp / "trainable.safetensors").write_bytes(b"x")
    assert listing(final) == ["trainable.safetensors"]
    assert listing(final.parent) == ["step-00000005"]  # the old one moved aside and removed


def test_keep_existing_keeps_a_complete_folder_written_meanwhile(tmp_path):
    final = tmp_path / "gguf" / "m-0123"
    with atomic_folder(final, keep_existing=lambda folder: (folder / "done").exists()) as tmp:
        (tmp / "mine").write_text("")
        final.mkdir()  # another process finished first
        (final / "done").write_text("")
    assert listing(final) == ["done"]
    assert listing(final.parent) == ["m-0123"]


def test_a_failed_folder_write_leaves_nothing(tmp_path):
    final = tmp_path / "step-00000007"
    with pytest.raises(ValueError):
        with atomic_folder(final) as tmp:
            (tmp / "trainable.safetensors").write_bytes(b"x")
            raise ValueError("optimizer state")
    assert listing(tmp_path) == []


def test_leftovers_are_recognised_by_name(tmp_path):
    assert is_leftover(tmp_path / ".tmp-step-00000005-999")
    assert is_leftover(tmp_path / ".trash-step-00000005-999-abcd")
    assert not is_leftover(tmp_path / "step-00000005")
