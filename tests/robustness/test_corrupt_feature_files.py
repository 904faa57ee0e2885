"""A corrupt or truncated ``--out`` file or part file is one ``Error:`` line that names the file
and says what to do (exit 1, no traceback), and the file is left as it was."""

from __future__ import annotations

import pytest

from blip2core import load_pipeline
from blip2core.inference.feature_store import FeatureFileError, FeatureStore, read_features
from blip2core.inference.fingerprint import pipeline_fingerprint
from cli_process import run_in_process as blip2

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path):
    path.write_bytes(b"\x00\x01 not a feature file at all" * 3)


@pytest.mark.parametrize("suffix", [".safetensors", ".parquet"])
@pytest.mark.parametrize("damage", [truncated, garbage])
def test_a_corrupt_output_file_is_named_in_one_line(hf_itm_folder, photos, tmp_path, capsys, suffix, damage):
    out = tmp_path / f"features{suffix}"
    code, _, err = blip2(capsys, "features", photos[0], "--out", out, "--model", hf_itm_folder, "--no-progress")
    assert code == 0, err
    damage(out)
    before = out.read_bytes()
    code, _, err = blip2(capsys, "features", *photos[:2], "--out", out, "--model", hf_itm_folder, "--no-progress")
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"Error: {out}: not a readable feature file, truncated or corrupt (")
    assert err.rstrip().endswith("remove it (or move it away) or choose another --out")
    assert out.read_bytes() == before


def test_a_corrupt_part_file_is_named_and_can_be_removed(hf_itm_folder, photos, tmp_path, capsys):
    out = tmp_path / "features.safetensors"
    pipe = load_pipeline(hf_itm_folder)
    store = FeatureStore(out, pipeline_fingerprint(pipe))  # a run that stopped after two batches
    for photo in photos[:2]:
        store.write([photo.name], pipe.extract_features([photo]).to_dict())
    good, bad = sorted(store.parts_dir.iterdir())
    garbage(bad)
    code, _, err = blip2(capsys, "features", *photos[:3], "--out", out, "--model", hf_itm_folder, "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"Error: {bad}: not a readable feature file")
    assert "remove this part file (its images are computed again on the next run)" in err
    bad.unlink()  # as the message says
    code, stdout, err = blip2(capsys, "features", *photos[:3], "--out", out, "--model", hf_itm_folder,
                              "--no-progress")
    assert code == 0 and stdout == f"{out}: 3 entries (2 new, 1 already there, 0 failed)\n", err


def test_read_features_names_the_file_it_cannot_read(tmp_path):
    path = tmp_path / "features.safetensors"
    garbage(path)
    with pytest.raises(FeatureFileError, match=rf"^{path}: not a readable feature file, truncated or corrupt"):
        read_features(path)
