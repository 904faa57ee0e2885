"""blip2 caption / ask / features / match / classify on real photos: exit codes, parseable JSON,
the same results as the Python API, bad images reported by path, resumable and sharded features."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from blip2core import load_pipeline
from blip2core.cli.main import cli
import tiny_models as T
from blip2core.inference.feature_store import FeatureStore, read_features
from blip2core.inference.fingerprint import pipeline_fingerprint
from blip2core.loading import resolve_spec


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(hf_opt_folder, hf_itm_folder, photo_folder):
    paths = [str(photo_folder / name) for name in sorted(T.PHOTOS)]
    names = sorted(T.PHOTOS)  # feature entries are named relative to the folder given
    return {"opt": hf_opt_folder, "itm": hf_itm_folder, "photos": photo_folder, "paths": paths, "names": names}


@pytest.fixture(scope="module")
def pipes(env):
    return load_pipeline(env["opt"]), load_pipeline(env["itm"])


def invoke(*args: str) -> tuple[int, dict | str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    out = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else result.stdout
    return result.exit_code, out, result.stderr


def test_caption_json_on_a_folder_of_photos_equals_the_api(env, pipes):
    code, out, _ = invoke("caption", env["photos"], "--model", env["opt"], "--json", "--max-new-tokens", "6")
    assert code == 0 and out["failures"] == [] and out["prompt"] == ""
    assert [r["image"] for r in out["results"]] == env["paths"]
    assert [r["caption"] for r in out["results"]] == pipes[0].caption(env["paths"], max_new_tokens=6)


def test_caption_style_and_prompt_and_plain_output(env, pipes):
    code, out, _ = invoke("caption", env["paths"][0], "--model", env["opt"], "--style", "detailed", "--json",
                          "--max-new-tokens", "4")
    assert code == 0 and out["prompt"] == "Question: Describe this image in detail. Answer:"
    code, text, _ = invoke("caption", env["paths"][0], "--model", env["opt"], "--prompt", "a photo of",
                           "--max-new-tokens", "4", "--num-beams", "2")
    expected = pipes[0].caption(env["paths"][0], prompt="a photo of", max_new_tokens=4, num_beams=2)[0]
    assert code == 0 and text == f"{env['paths'][0]}\t{expected}\n"
    code, _, err = invoke("caption", env["paths"][0], "--model", env["opt"], "--style", "poem")
    assert code == 2 and "unknown caption style 'poem'" in err
    code, _, err = invoke("caption", env["paths"][0])
    assert code == 2 and "give exactly one of --spec FILE or --model NAME_OR_PATH" in err


def test_ask_json_equals_the_api(env, pipes):
    questions = ["what is it?", "who is there"]
    code, out, _ = invoke("ask", env["paths"][1], *questions, "--model", env["opt"], "--json")
    assert code == 0
    assert out["results"] == [{"question": q, "answer": a}
                              for q, a in zip(questions, pipes[0].answer(env["paths"][1], questions))]


def test_match_and_classify_json_equal_the_api(env, pipes, tmp_path):
    spec = tmp_path / "itm.yaml"
    resolve_spec(env["itm"]).to_file(spec)
    texts = ["a cat", "an astronaut"]
    code, out, _ = invoke("match", env["paths"][1], *texts, "--spec", spec, "--method", "itc", "--json")
    assert code == 0 and out["method"] == "itc"
    expected = pipes[1].match(env["paths"][1], texts, method="itc").tolist()
    assert [r["text"] for r in out["results"]] == texts
    assert [r["score"] for r in out["results"]] == pytest.approx(expected, abs=1e-6)

    code, out, _ = invoke("classify", *env["paths"][:2], "--labels", "cat, astronaut,coffee", "--model", env["itm"],
                          "--json")
    assert code == 0 and out["labels"] == ["cat", "astronaut", "coffee"]
    expected = pipes[1].classify(env["paths"][:2], ["cat", "astronaut", "coffee"])
    assert [{k: v for k, v in r.items() if k != "image"} for r in out["results"]] == [
        {"label": e["label"], "scores": pytest.approx(e["scores"], abs=1e-6)} for e in expected
    ]


@pytest.mark.parametrize("suffix", [".safetensors", ".parquet"])
def test_features_are_written_read_back_and_resumed(env, pipes, tmp_path, suffix):
    out_file = tmp_path / f"features{suffix}"
    code, out, err = invoke("features", env["photos"], "--out", out_file, "--model", env["itm"], "--json",
                            "--batch-size", "3")
    assert code == 0 and out["entries"] == out["written"] == 4 and out["skipped"] == 0
    assert "features[0]" in err  # the progress bar, on stderr
    names, tensors = read_features(out_file)
    assert names == env["names"]
    expected = pipes[1].extract_features(env["paths"])
    torch.testing.assert_close(tensors["image_embeds"], expected.image_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(tensors["image_embeds_proj"], expected.image_embeds_proj, rtol=0, atol=1e-5)

    code, out, _ = invoke("features", env["photos"], "--out", out_file, "--model", env["itm"], "--json",
                          "--no-progress")
    assert code == 0 and out["written"] == 0 and out["skipped"] == out["entries"] == 4


def test_features_resume_from_the_parts_a_stopped_run_left(env, pipes, tmp_path):
    out_file = tmp_path / "features.safetensors"
    store = FeatureStore(out_file, pipeline_fingerprint(pipes[1]))  # a run that stopped after one batch of two
    store.write(env["names"][:2], pipes[1].extract_features(env["paths"][:2]).to_dict())
    assert not out_file.exists() and store.parts_dir.is_dir()
    code, out, _ = invoke("features", env["photos"], "--out", out_file, "--model", env["itm"], "--json",
                          "--no-progress")
    assert code == 0 and (out["written"], out["skipped"], out["entries"]) == (2, 2, 4)
    assert not store.parts_dir.exists()
    names, tensors = read_features(out_file)
    assert sorted(names) == env["names"] and tensors["image_embeds"].shape == (4, T.NUM_QUERY_TOKENS, 32)


def test_a_resumed_store_refuses_entries_of_another_shape(tmp_path):
    from blip2core import Blip2Error

    store = FeatureStore(tmp_path / "f.safetensors")
    store.write(["a.png"], {"image_embeds": torch.zeros(1, 6, 32)})
    store.finish()
    again = FeatureStore(tmp_path / "f.safetensors")
    assert again.done == {"a.png"}
    again.write(["b.png"], {"image_embeds": torch.zeros(1, 6, 48)})
    with pytest.raises(Blip2Error, match=r"f\.safetensors: image_embeds has per-entry shape \[6, 32\] in one part"):
        again.finish()
    with pytest.raises(Blip2Error, match=r"f\.csv: unsupported feature file type '\.csv'"):
        FeatureStore(tmp_path / "f.csv")


def run_blip2(*args, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "blip2core.cli", *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=120)


def test_a_bad_image_is_reported_by_path_and_the_rest_are_processed(env, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(env["photos"], folder, ignore=shutil.ignore_patterns(".complete"))
    broken = folder / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    result = run_blip2("caption", folder, tmp_path / "absent.png", "--model", env["opt"], "--json",
                       "--max-new-tokens", "3", "--num-beams", "1")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert len(out["results"]) == 4
    assert {f["image"] for f in out["failures"]} == {str(broken), str(tmp_path / "absent.png")}
    assert f"error: {broken}: not an image" in result.stderr and "Traceback" not in result.stderr


def test_features_under_torchrun_shard_the_images_over_two_gloo_ranks(env, tmp_path):
    out_file = tmp_path / "features.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "blip2core.cli", "features", str(env["photos"]), "--out", str(out_file),
               "--model", str(env["itm"]), "--json", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    shards = [tmp_path / f"features.rank{r}-of-2.safetensors" for r in (0, 1)]
    names = [read_features(shard)[0] for shard in shards]
    assert names == [env["names"][0::2], env["names"][1::2]]  # disjoint, together every image
    assert not out_file.exists()
