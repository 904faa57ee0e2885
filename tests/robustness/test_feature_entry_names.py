"""``blip2 features`` names entries by their path relative to the folder given (a file given alone:
by its name), so the same folder typed relative, absolute or with ``./`` and a trailing slash
resumes instead of storing every image twice; two files that would share a name are refused."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from blip2core.inference.feature_store import read_features
from cli_process import run_in_process as blip2

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture
def images(photos, tmp_path, monkeypatch):
    """tmp_path/images: two photos at the top, one in sub/; the working directory is tmp_path."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(photos[0], folder / photos[0].name)
    shutil.copy(photos[1], folder / photos[1].name)
    shutil.copy(photos[2], folder / "sub" / photos[2].name)
    monkeypatch.chdir(tmp_path)
    return folder


def test_the_same_folder_typed_three_ways_is_one_set_of_entries(hf_itm_folder, images, photos, capsys):
    expected = sorted([photos[0].name, photos[1].name, f"sub/{photos[2].name}"])
    for typed, new in (("images", 3), (str(images.resolve()), 0), ("./images/", 0)):
        code, stdout, err = blip2(capsys, "features", typed, "--out", "f.safetensors", "--model", hf_itm_folder,
                                  "--no-progress")
        assert code == 0, err
        assert stdout == f"f.safetensors: 3 entries ({new} new, {3 - new} already there, 0 failed)\n", typed
    names, tensors = read_features("f.safetensors")
    assert sorted(names) == expected and tensors["image_embeds"].shape[0] == 3


def test_a_file_given_alone_is_the_entry_its_folder_gives_it(hf_itm_folder, images, photos, capsys):
    code, _, err = blip2(capsys, "features", images.resolve() / photos[0].name, "--out", "f.parquet",
                         "--model", hf_itm_folder, "--no-progress")
    assert code == 0, err
    code, stdout, err = blip2(capsys, "features", "images", "--out", "f.parquet", "--model", hf_itm_folder,
                              "--no-progress")
    assert code == 0 and stdout == "f.parquet: 3 entries (2 new, 1 already there, 0 failed)\n", err
    assert len(read_features("f.parquet")[0]) == 3


def test_two_files_that_would_share_an_entry_name_are_refused(hf_itm_folder, images, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (8, 8), "red").save(other / "chelsea.jpg")  # an image of the same name, other pixels
    code, _, err = blip2(capsys, "features", "images", "other", "--out", "f.safetensors", "--model", hf_itm_folder)
    assert code == 2 and "Traceback" not in err
    assert "images/chelsea.jpg and other/chelsea.jpg would both be stored as entry 'chelsea.jpg'" in err
    assert not (tmp_path / "f.safetensors").exists()
    code, _, err = blip2(capsys, "features", "images", "images/chelsea.jpg", "--out", "f.safetensors",
                         "--model", hf_itm_folder, "--no-progress")  # the same file twice is one entry
    assert code == 0 and len(read_features("f.safetensors")[0]) == 3, err
    (tmp_path / "empty").mkdir()
    code, _, err = blip2(capsys, "features", "empty", "--out", "e.safetensors", "--model", hf_itm_folder)
    assert code == 1 and err.startswith("Error: empty: no image files in this folder or below it")
