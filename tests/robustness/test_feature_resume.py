"""``blip2 features`` resumes only with the pipeline that wrote the file: other weights, a
randomly initialised part (drawn anew on each load) or other preprocessing are refused, naming
both fingerprints and what differs; the file is left as it was; ``--overwrite`` starts afresh."""

from __future__ import annotations

import shutil

import pytest

import tiny_models as T
from blip2core import load_pipeline
from blip2core.inference.feature_store import FeatureStore, read_features, read_header
from blip2core.inference.fingerprint import Fingerprint, pipeline_fingerprint
from blip2core.loading import resolve_spec
from blip2core.spec import PipelineSpec
from cli_process import run_in_process as blip2

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """The same tiny retrieval architecture as ``hf_itm_folder``, other (seed 1) weights."""
    return T.saved_once(tmp_path_factory.mktemp("itm-seed1"), lambda folder: T.save_retrieval_folder(folder, seed=1))


def spec_file(folder, path, **changes):
    data = {**resolve_spec(folder).model_dump(), **changes}
    PipelineSpec.from_dict(data).to_file(path)
    return path


def stored_fingerprint(path) -> Fingerprint:
    return Fingerprint.from_json(read_header(path)[1])


def test_a_resume_with_other_weights_is_refused_naming_both_fingerprints(hf_itm_folder, other_weights, photo_folder,
                                                                         tmp_path, capsys):
    out = tmp_path / "features.safetensors"
    code, _, err = blip2(capsys, "features", photo_folder, "--out", out, "--model", hf_itm_folder, "--no-progress")
    assert code == 0, err
    before = out.read_bytes()
    code, stdout, err = blip2(capsys, "features", photo_folder, "--out", out, "--model", other_weights,
                              "--no-progress")
    assert code == 1 and "already there" not in stdout
    first = pipeline_fingerprint(load_pipeline(hf_itm_folder))
    second = pipeline_fingerprint(load_pipeline(other_weights))
    assert first.weights != second.weights and first.spec == second.spec  # a moved folder is the same spec
    line = err.strip()
    assert "\n" not in line and "Traceback" not in err
    assert line.startswith(f"Error: {out}: written by another pipeline (weights differ)")
    assert f"stored [{first}]" in line and f"this run [{second}]" in line
    assert "choose another --out, or pass --overwrite" in line
    assert out.read_bytes() == before and not (tmp_path / "features.safetensors.parts").exists()


def test_parts_a_stopped_run_of_another_model_left_are_refused(hf_itm_folder, other_weights, photos, photo_folder,
                                                               tmp_path, capsys):
    out = tmp_path / "features.parquet"
    first = load_pipeline(hf_itm_folder)
    store = FeatureStore(out, pipeline_fingerprint(first))  # a run that stopped after one batch
    store.write([photos[0].name], first.extract_features([photos[0]]).to_dict())
    part = sorted(store.parts_dir.iterdir())[0]
    code, _, err = blip2(capsys, "features", photo_folder, "--out", out, "--model", other_weights, "--no-progress")
    assert code == 1 and err.startswith(f"Error: {part}: written by another pipeline (weights differ)")
    assert [p.name for p in store.parts_dir.iterdir()] == [part.name] and not out.exists()


def test_a_spec_with_a_randomly_initialised_part_cannot_resume_its_own_file(hf_itm_folder, photos, tmp_path, capsys):
    spec = spec_file(hf_itm_folder, tmp_path / "untrained.yaml", weights=[])  # nothing loaded: drawn on each load
    out = tmp_path / "features.safetensors"
    code, _, err = blip2(capsys, "features", photos[0], "--out", out, "--spec", spec, "--no-progress")
    assert code == 0, err
    code, _, err = blip2(capsys, "features", *photos[:2], "--out", out, "--spec", spec, "--no-progress")
    assert code == 1 and "written by another pipeline (weights differ)" in err
    assert read_features(out)[0] == [photos[0].name]


def test_other_preprocessing_is_refused(hf_itm_folder, photos, tmp_path, capsys):
    out = tmp_path / "features.safetensors"
    code, _, err = blip2(capsys, "features", photos[0], "--out", out, "--model", hf_itm_folder, "--no-progress")
    assert code == 0, err
    fast = spec_file(hf_itm_folder, tmp_path / "fast.yaml", preprocessor={"name": "standard",
                                                                          "options": {"mode": "fast"}})
    code, _, err = blip2(capsys, "features", *photos[:2], "--out", out, "--spec", fast, "--no-progress")
    assert code == 1 and "written by another pipeline (spec and preprocessing differ)" in err


def test_the_same_model_resumes_and_overwrite_starts_afresh(hf_itm_folder, other_weights, photos, photo_folder,
                                                            tmp_path, capsys):
    out = tmp_path / "features.safetensors"
    copy = tmp_path / "moved-model"
    shutil.copytree(hf_itm_folder, copy)
    code, _, err = blip2(capsys, "features", *photos[:2], "--out", out, "--model", hf_itm_folder, "--json",
                         "--no-progress")
    assert code == 0, err
    code, stdout, err = blip2(capsys, "features", photo_folder, "--out", out, "--model", copy, "--no-progress")
    assert code == 0, err  # another load, from another folder, of the same weights
    assert stdout == f"{out}: 4 entries (2 new, 2 already there, 0 failed)\n"
    assert stored_fingerprint(out) == pipeline_fingerprint(load_pipeline(hf_itm_folder))

    tensors = read_features(out)[1]
    stopped = FeatureStore(out, stored_fingerprint(out))  # a stopped run's part
    stopped.write(["stale.png"], {field: tensor[:1] for field, tensor in tensors.items()})
    code, stdout, err = blip2(capsys, "features", photo_folder, "--out", out, "--model", other_weights,
                              "--overwrite", "--no-progress")
    assert code == 0, err
    assert stdout == f"{out}: 4 entries (4 new, 0 already there, 0 failed)\n"
    assert read_features(out)[0] == sorted(T.PHOTOS)  # neither the old entries nor the old part
    assert stored_fingerprint(out) == pipeline_fingerprint(load_pipeline(other_weights))


def test_a_file_without_a_fingerprint_is_not_resumed(hf_itm_folder, photos, tmp_path, capsys):
    out = tmp_path / "features.safetensors"
    pipe = load_pipeline(hf_itm_folder)
    legacy = FeatureStore(out)  # as written before fingerprints were stored
    legacy.write([photos[0].name], pipe.extract_features([photos[0]]).to_dict())
    legacy.finish()
    code, _, err = blip2(capsys, "features", *photos[:2], "--out", out, "--model", hf_itm_folder, "--no-progress")
    assert code == 1 and err.startswith(f"Error: {out}: records no pipeline fingerprint")
    assert read_features(out)[0] == [photos[0].name]
